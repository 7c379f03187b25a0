#!/usr/bin/env bash
# keel-engine-start (seed 000 §5): enable the engine's unit, (re)start it only when something it
# runs from changed, and confirm it stays up. Installed as /usr/local/sbin/keel-engine-start.
#
# Usage: keel-engine-start unit=NAME.service unit-file=PATH unit-sha256=HEX config=PATH
#          config-sha256=HEX app-dir=DIR commit=SHA venv=DIR requirements=REL python=X.Y
#          stamp=PATH settle=SECONDS
#        keel-engine-start secrets-changed unit=NAME.service settle=SECONDS
#
# Deploy (the engine-start step): first it checks that the earlier steps converged: the unit file
# and config have the planned sha256, the checkout is at COMMIT, and the venv was built with python
# X.Y from that commit's lock file. The stamp file records what the running engine was started
# from (commit, venv, config, unit); when that changed, or the unit is not active, the unit is
# (re)started, otherwise it is left alone.
#
# secrets-changed (the secrets step's on-change command; secrets are not in the stamp): restarts
# the unit if it is enabled, a failed one included (e.g. stopped by its startup gate for want of
# the secret just added); before the first deploy enabled it, does nothing.
#
# Either way, a unit that was (re)started must then stay active, with the same main PID and no
# automatic restart, for SETTLE seconds.
#
# Exit: 0 active and steady (says what it did, or that nothing changed); 1 not active or
#       restarting after the (re)start (what to read on stderr, never the journal itself); 2 usage; 3 an
#       input is not as planned (an earlier step must run first).
set -euo pipefail

PROG=keel-engine-start
DEPLOY_KEYS=(unit unit-file unit-sha256 config config-sha256 app-dir commit venv requirements python stamp settle)
SECRETS_KEYS=(unit settle)
usage() {
  echo "usage: $PROG ${DEPLOY_KEYS[*]/%/=…}" >&2
  echo "       $PROG secrets-changed ${SECRETS_KEYS[*]/%/=…}" >&2
  exit 2
}
fail() {
  local code=$1
  shift
  echo "$PROG: $*" >&2
  exit "$code"
}

mode=deploy
keys=("${DEPLOY_KEYS[@]}")
if [[ ${1:-} == secrets-changed ]]; then
  mode=secrets-changed
  keys=("${SECRETS_KEYS[@]}")
  shift
fi
declare -A arg=()
for a in "$@"; do
  key=${a%%=*}
  [[ $a == *=* && " ${keys[*]} " == *" $key "* ]] || usage
  arg[$key]=${a#*=}
done
for key in "${keys[@]}"; do [[ -n ${arg[$key]:-} ]] || usage; done
unit=${arg[unit]}
[[ $unit =~ ^[a-z][a-z0-9-]*\.service$ && ${arg[settle]} =~ ^[0-9]+$ ]] || usage
[[ $mode == secrets-changed || ${arg[commit]} =~ ^[0-9a-f]{40}$ ]] || usage
[[ $(id -u) -eq 0 ]] || fail 2 "run as root (sudo $PROG ...)"

show() { systemctl show --property="$1" --value -- "$unit"; }

# Restarts the unit (out of a failed state too) and records why.
restart() {
  local state verb=started
  state=$(show ActiveState)
  [[ $state != active ]] || verb=restarted
  # A failed unit (or one that hit its start limit) starts again only after reset-failed.
  [[ $state != failed ]] || systemctl reset-failed -- "$unit"
  systemctl restart -- "$unit"
  actions+=("$verb $unit ($1)")
}

# Steady: still active and running, same main PID, no automatic restart meanwhile.
steady_or_fail() {
  local pid restarts state sub status
  pid=$(show MainPID)
  restarts=$(show NRestarts)
  sleep "${arg[settle]}"
  state=$(show ActiveState)
  sub=$(show SubState)
  if [[ $state == active && $sub == running && $(show MainPID) == "$pid" && $(show NRestarts) == "$restarts" && $pid != 0 ]]; then
    return 0
  fi
  status=$(show ExecMainStatus)
  echo "$PROG: $unit is not steady ${arg[settle]}s after start: $state/$sub, result $(show Result), last exit status $status, restarts $restarts -> $(show NRestarts)." >&2
  # No journal lines here: on failure the provider returns this step's whole output in its error
  # (pulumi-command v1.2.1, whatever `logging` says), and that lands in the unencrypted state, the
  # CI log and the PR comment, while the engine may log anything. The journal stays on the host.
  if [[ $status == 78 ]]; then
    echo "$PROG: exit status 78 is the engine's failed startup gate (it stays stopped on purpose); its journal says which gate: scripts/runbook/logs.sh -n 50 (docs/RUNBOOK.md \"Logs\"). Fix that (a missing secret: pulumi config set --secret --path 'keel:secretEnv.NAME' ...), then run pulumi up again." >&2
  else
    echo "$PROG: read its journal: scripts/runbook/logs.sh -n 50 (docs/RUNBOOK.md \"Logs\"; on the host: journalctl -u $unit), fix the engine or its config, then run pulumi up again." >&2
  fi
  exit 1
}

report() {
  local since
  since=$(show ActiveEnterTimestamp)
  if ((${#actions[@]})); then
    printf 'start: %s\n' "${actions[@]}"
    echo "start: $unit active and steady (pid $(show MainPID), since $since)"
  else
    echo "start: $unit already active (pid $(show MainPID), since $since), nothing changed"
  fi
}

actions=()
if [[ $mode == secrets-changed ]]; then
  if [[ $(systemctl is-enabled -- "$unit" 2>/dev/null || true) != enabled ]]; then
    echo "start: $unit is not deployed yet; the engine-start step starts it with these secrets"
    exit 0
  fi
  restart "its secrets changed"
  steady_or_fail
  report
  exit 0
fi

sha() { sha256sum -- "$1" 2>/dev/null | cut -d' ' -f1 || true; }
not_planned() { fail 3 "$1; the $2 step must run first (run pulumi up again). If someone edited it by hand, keel-place --drift shows what"; }

[[ $(sha "${arg[unit-file]}") == "${arg[unit-sha256]}" ]] || not_planned "${arg[unit-file]} is not the planned unit" engine-unit
[[ $(sha "${arg[config]}") == "${arg[config-sha256]}" ]] || not_planned "${arg[config]} is not the planned config" engine-config
head=$(cat -- "${arg[app-dir]}/.git/HEAD" 2>/dev/null || true)
[[ $head == "${arg[commit]}" ]] || not_planned "${arg[app-dir]} is at ${head:-no commit}, not ${arg[commit]}" engine-source
venv=${arg[venv]}
lock_sha=$(sha "${arg[app-dir]}/${arg[requirements]}")
if ! grep -qxF -- "requirements ${arg[requirements]} sha256 $lock_sha" "$venv/keel-venv.txt" 2>/dev/null ||
  ! grep -qxF -- "python ${arg[python]}" "$venv/keel-venv.txt"; then
  not_planned "$venv was not built with python ${arg[python]} from ${arg[requirements]} of ${arg[commit]}" engine-venv
fi

stamp_now="commit ${arg[commit]}
venv $(cat -- "$venv/keel-venv.txt" "$venv/keel-freeze.txt" | sha256sum | cut -d' ' -f1)
config ${arg[config-sha256]}
unit ${arg[unit-sha256]}"
stamp_then=$(cat -- "${arg[stamp]}" 2>/dev/null || true)

if [[ $(show NeedDaemonReload) == yes ]]; then
  systemctl daemon-reload
  actions+=("reloaded systemd's unit files")
fi
if [[ $(systemctl is-enabled -- "$unit" 2>/dev/null || true) != enabled ]]; then
  systemctl enable --quiet -- "$unit"
  actions+=("enabled $unit")
fi
if [[ -z $stamp_then ]]; then
  restart "first deploy"
elif [[ $stamp_then != "$stamp_now" ]]; then
  restart "$(diff <(printf '%s\n' "$stamp_then") <(printf '%s\n' "$stamp_now") | sed -n 's/^> \([a-z]*\) .*/\1/p' | paste -sd, -) changed"
elif [[ $(show ActiveState) != active ]]; then
  restart "it was $(show ActiveState)"
fi
steady_or_fail

if [[ $stamp_then != "$stamp_now" ]]; then
  umask 077
  printf '%s\n' "$stamp_now" >"${arg[stamp]}.tmp"
  mv -f -- "${arg[stamp]}.tmp" "${arg[stamp]}"
fi
report
