#!/usr/bin/env bash
# verify.sh — keel verify: the acceptance checks against the live host of the stack outputs,
# read-only. docs/RUNBOOK.md "Verify".
#
# From here: the pinned host key answers on the SSH port; root and passwords are refused; ssh-audit
# finds nothing to fail (skipped when it is not installed). On the host, keel-verify (as root through
# the deploy user's sudo, read-only; what is planned comes from the host's /etc/keel/host.conf):
# sshd's effective config, what listens beyond loopback, UFW, fail2ban's jail, the metadata guard, the sysctl values, the engine
# active and its unit's exposure, the env file's owner and mode, and the health report (DB quick
# check, newest backup, security updates, keel's files as placed, every other check).
#
# Usage: scripts/runbook/verify.sh [--stack FILE|-] [--json]
# Exit: 0 every check ok (or skipped); 1 a check failed; 2 usage; 3 the stack outputs could not be
#       read or the host not reached.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

rb_common_args "$@"
set -- ${RB_ARGS[@]+"${RB_ARGS[@]}"}
json=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --json) json=1 ;;
    -h | --help) sed -n 's/^# \{0,1\}//; /^Usage:/,/^Exit/p' "$0" >&2; exit 0 ;;
    *) rb_die 2 "usage: $RB_PROG [--stack FILE|-] [--json]" ;;
  esac
  shift
done
rb_load_stack

lines=()
add() { lines+=("$1"$'\t'"$2"$'\t'"$3"); }
ssh_opts=(-o StrictHostKeyChecking=yes -o UserKnownHostsFile="$RB_KNOWN_HOSTS" -o GlobalKnownHostsFile=/dev/null
  -o UpdateHostKeys=no -o ConnectTimeout=20 -o LogLevel=ERROR -o BatchMode=yes -p "$RB_PORT")
id=()
[[ -z ${KEEL_SSH_IDENTITY:-} ]] || id=(-i "$KEEL_SSH_IDENTITY" -o IdentitiesOnly=yes)

# The pinned host key answers: keel's own, from the stack, not one the host offers.
pinned=$(awk '{print $2" "$3}' "$RB_KNOWN_HOSTS")
scanned=$(ssh-keyscan -T 15 -t ed25519 -p "$RB_PORT" "$RB_ADDRESS" 2>/dev/null | awk '$2 == "ssh-ed25519" {print $2" "$3; exit}') || true
if [[ -z $scanned ]]; then
  rb_die 3 "the host did not answer on $RB_ADDRESS port $RB_PORT (ssh-keyscan); nothing was checked"
elif [[ $scanned == "$pinned" ]]; then
  add ok host-key "the host answers on port $RB_PORT with the pinned ed25519 key ${pinned:12:20}…"
else
  echo "failed   host-key           the host answers on port $RB_PORT with another ed25519 key (${scanned:12:20}…) than the pinned one (${pinned:12:20}…): nothing else is checked on a host that is not the stack's; see docs/RUNBOOK.md \"Connect\""
  exit 1
fi

# Root is refused, whatever key ssh offers.
out=$(ssh "${ssh_opts[@]}" ${id[@]+"${id[@]}"} "root@$RB_ADDRESS" true 2>&1) && rc=0 || rc=$?
if [[ $rc -ne 0 && $out == *"Permission denied"* ]]; then
  add ok root-login "root refused: ${out//$'\n'/ }"
else
  add failed root-login "root was not refused as expected (exit $rc): ${out//$'\n'/ }"
fi
# Passwords are refused: sshd offers no method but publickey.
out=$(ssh "${ssh_opts[@]}" -o PubkeyAuthentication=no -o PreferredAuthentications=password,keyboard-interactive \
  "$RB_USER@$RB_ADDRESS" true 2>&1) && rc=0 || rc=$?
if [[ $rc -ne 0 && $out == *"Permission denied (publickey)."* ]]; then
  add ok password-login "passwords refused: the host offers publickey only"
else
  add failed password-login "a login without a key was not refused with publickey alone (exit $rc): ${out//$'\n'/ }"
fi
if command -v ssh-audit >/dev/null; then
  # ssh-audit 2.5.0 exits 0 when all is good, 2 with warnings, 3 with failures (1: not reached).
  # keel's own warnings are explained in docs/HARDENING.md (test/host/sshd.test.ts keeps the list).
  out=$(ssh-audit -n -p "$RB_PORT" "$RB_ADDRESS" 2>&1) && rc=0 || rc=$?
  warned=$(sed -n 's/^([a-z]*) \([^ ]*\) .*-- \[warn\].*/\1/p' <<<"$out" | sort -u | tr '\n' ' ')
  if [[ ($rc -eq 0 || $rc -eq 2) && $out != *"[fail]"* ]]; then
    add ok ssh-audit "ssh-audit: no failure${warned:+; warnings (docs/HARDENING.md): $warned}"
  else
    add failed ssh-audit "ssh-audit exit $rc: $(grep -F '[fail]' <<<"$out" | head -5 | tr -s ' \n' ' ')"
  fi
else
  add skipped ssh-audit "ssh-audit is not installed here"
fi
add skipped hetzner-firewall "the Hetzner firewall's rules need the Hetzner API: pulumi preview shows any difference from the plan"

# On the host, as root, read-only.
host_out=$(rb_ssh -o BatchMode=yes -- sudo "$(rb_tool verify)" </dev/null) && rc=0 || rc=$?
if [[ $rc -ne 0 ]]; then
  echo "$RB_PROG: the checks on the host did not run (exit $rc; a host last converged by an older keel has no $(rb_tool verify): pulumi up first); what ran from here:" >&2
  printf '%s\n' "${lines[@]}" >&2
  exit 3
fi
while IFS= read -r line; do [[ -z $line ]] || lines+=("$line"); done <<<"$host_out"

failed=0
for line in "${lines[@]}"; do [[ $line != failed$'\t'* ]] || failed=$((failed + 1)); done
if [[ $json == 1 ]]; then
  printf '%s\n' "${lines[@]}" | node -e '
    const checks = require("fs").readFileSync(0, "utf8").split("\n").filter(Boolean).map((l) => {
      const [status, name, ...evidence] = l.split("\t");
      return { name, status, evidence: evidence.join("\t") };
    });
    const status = checks.some((c) => c.status === "failed") ? "failed" : "ok";
    process.stdout.write(JSON.stringify({ status, host: process.argv[1], checks }, null, 2) + "\n");
  ' "$RB_ADDRESS"
else
  printf '%s\n' "${lines[@]}" | awk -F'\t' '{ printf "%-8s %-18s %s\n", $1, $2, $3 }'
  echo "$RB_PROG: $RB_ADDRESS: ${#lines[@]} checks, $failed failed"
fi
[[ $failed -eq 0 ]] || exit 1
