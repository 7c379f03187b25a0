#!/usr/bin/env bash
# verify.sh — keel verify: the acceptance checks against the live host of the stack outputs,
# read-only. docs/RUNBOOK.md "Verify".
#
# From here: the host proves the pinned key (every connection trusts it alone); a login without a
# key is refused with publickey the only method offered; with --audit, ssh-audit finds nothing to
# fail. On the host, keel-verify (as root through the deploy user's sudo, read-only; what is planned
# comes from the host's /etc/keel/host.conf): sshd's effective config, what listens beyond loopback,
# UFW, fail2ban's jail, the metadata guard, the sysctl values, keel's audit rules loaded (the sudo
# rule on the file sudo runs), the engine active and its unit's exposure, the env file's owner and
# mode, the health report (DB quick check, newest backup, security updates, keel's files as
# placed, every other check), no password that works, what the last keel compliance run
# (compliance.sh) found, the file-integrity baseline's last daily check (integrity.sh), and
# keel:auditLog's file append-only with its daily rotation going (skipped when the key is unset).
#
# fail2ban counts what a run does from here: one connection that logs in (the host's checks) and
# one that is refused (plus ssh-audit's several with --audit); see docs/RUNBOOK.md "Verify".
#
# Usage: scripts/runbook/verify.sh [--stack FILE|-] [--json] [--audit]
# Exit: 0 every check ok (or skipped); 1 a check failed; 2 usage; 3 the stack outputs could not be
#       read or the host not reached.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

rb_common_args "$@"
set -- ${RB_ARGS[@]+"${RB_ARGS[@]}"}
json=0 audit=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --json) json=1 ;;
    --audit) audit=1 ;;
    *) rb_die 2 "usage: $RB_PROG [--stack FILE|-] [--json] [--audit]" ;;
  esac
  shift
done
rb_load_stack

lines=()
add() { lines+=("$1"$'\t'"$2"$'\t'"$3"); }
# Prints the report (text or JSON) and exits 1 when a check failed, else 0.
finish() {
  local failed=0 line
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
    # Control characters never reach the terminal, whatever the host printed.
    printf '%s\n' "${lines[@]}" | LC_ALL=C tr -d '\000-\010\013-\037\177' | awk -F'\t' '{ printf "%-8s %-18s %s\n", $1, $2, $3 }'
    echo "$RB_PROG: $RB_ADDRESS: ${#lines[@]} checks, $failed failed"
  fi
  [[ $failed -eq 0 ]] || exit 1
  exit 0
}

# On the host first, as root through sudo, read-only. The connection trusts the pinned key alone
# (StrictHostKeyChecking against the stack's known_hosts line): getting in proves the host's key.
err=$(mktemp)
trap 'rm -f "$err"' EXIT
host_out=$(rb_ssh -o BatchMode=yes -- sudo "$(rb_tool verify)" </dev/null 2>"$err") && rc=0 || rc=$?
if [[ $rc -eq 255 ]] && grep -q "Host key verification failed" "$err"; then
  add failed host-key "the host at $RB_ADDRESS port $RB_PORT shows another key than the stack's pinned one: nothing else is checked on a host that is not the stack's (docs/RUNBOOK.md \"Connect\")"
  finish
elif [[ $rc -eq 255 ]]; then
  rb_die 3 "could not reach $RB_ADDRESS port $RB_PORT as $RB_USER: $(tr '\n' ' ' <"$err")(the network, a key missing from ssh-agent, or fail2ban banning this address after failed logins: docs/RUNBOOK.md \"fail2ban\")"
elif [[ $rc -ne 0 ]]; then
  if grep -qE "command not found|not allowed to execute|a password is required|a terminal is required" "$err"; then
    rb_die 3 "$(rb_tool verify) is not on the host, or not allowed to $RB_USER (a host last converged by an older keel): pulumi up first; $(tr '\n' ' ' <"$err")"
  fi
  rb_die 3 "keel-verify on the host failed (exit $rc): $(tr '\n' ' ' <"$err")"
fi
add ok host-key "the host at $RB_ADDRESS port $RB_PORT proved the stack's pinned ed25519 key"
host_lines=()
while IFS= read -r line; do [[ -z $line ]] || host_lines+=("$line"); done <<<"$host_out"
# Every check keel-verify makes must be there: a cut-short run is not a pass.
for check in sshd-config listeners ufw fail2ban metadata-guard sysctl passwords audit engine engine-exposure env-file health-db health-backup health-updates health-drift health compliance integrity https audit-log; do
  printf '%s\n' "${host_lines[@]}" | grep -q "^[a-z]*"$'\t'"$check"$'\t' ||
    rb_die 3 "keel-verify on the host gave no $check line: it is older than this keel (pulumi up places the new one), or its output was cut short"
done

# From here: a login without a key, as root, is refused, and publickey is the only method offered.
out=$(ssh -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$RB_KNOWN_HOSTS" -o GlobalKnownHostsFile=/dev/null \
  -o UpdateHostKeys=no -o ConnectTimeout=20 -o LogLevel=ERROR -o BatchMode=yes -o PubkeyAuthentication=no \
  -o PreferredAuthentications=password,keyboard-interactive -p "$RB_PORT" "root@$RB_ADDRESS" true 2>&1) && rc=0 || rc=$?
if [[ $rc -ne 0 && $out == *"Permission denied (publickey)."* ]]; then
  add ok password-login "a login without a key (as root) is refused: the host offers publickey only"
else
  add failed password-login "a login without a key was not refused with publickey as the only method (exit $rc): ${out//$'\n'/ }"
fi
if [[ $audit == 0 ]]; then
  add skipped ssh-audit "not asked (--audit: ssh-audit makes several connections, which fail2ban may count)"
elif command -v ssh-audit >/dev/null; then
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
lines+=("${host_lines[@]}")
finish
