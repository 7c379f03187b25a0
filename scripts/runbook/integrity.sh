#!/usr/bin/env bash
# integrity.sh — the file-integrity baseline (AIDE) on the live host of the stack outputs, through
# keel-integrity as root by the deploy user's sudo. docs/INTEGRITY.md.
#
# Usage: scripts/runbook/integrity.sh [--stack FILE|-] [--yes] COMMAND
#   show          the baseline's record and the last check's: every change no package and no keel
#                 step explains, and the pending database's sha256 (read-only)
#   check         checks the host against the baseline now: the daily timer's service, in its
#                 sandbox (minutes)
#   accept SHA256 the last check's changes become the baseline, after you have read them (`show`);
#                 SHA256 is the pending database's, as `show` printed it
#   rebuild       builds the baseline anew from the host as it is (once you know why the old one is
#                 not keel-integrity's)
#   copy DIR      copies the baseline database off the host into DIR, as aide-<sha256>.db (0600),
#                 checked against the sha256 the host recorded: a copy an intruder on the host
#                 cannot rewrite
# Exit: 0 done (check: nothing unexplained); 1 check found changes nobody explains; 2 usage, the
#       host refused or you did not confirm (nothing changed); 3 stack outputs missing, the host
#       without keel-integrity, or aide failed; 255 ssh failed.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

rb_common_args "$@"
set -- ${RB_ARGS[@]+"${RB_ARGS[@]}"}
usage="usage: $RB_PROG [--stack FILE|-] [--yes] show|check|accept SHA256|rebuild|copy DIR"
words=()
for arg in "$@"; do
  if [[ $arg == --yes ]]; then RB_YES=1; else words+=("$arg"); fi
done
set -- ${words[@]+"${words[@]}"}
[[ $# -ge 1 ]] || rb_die 2 "$usage"
command=$1
shift
case $command in
  show | check | rebuild) [[ $# -eq 0 ]] || rb_die 2 "$usage" ;;
  accept) [[ $# -eq 1 && $1 =~ ^[0-9a-f]{64}$ ]] || rb_die 2 "accept takes the pending database's sha256 (64 hex digits), as '$RB_PROG show' printed it" ;;
  copy) [[ $# -eq 1 && -d $1 && -w $1 ]] || rb_die 2 "copy takes a writable directory" ;;
  *) rb_die 2 "$usage" ;;
esac
rb_load_stack
# Asked before anything reaches the host.
case $command in
  accept) rb_confirm "This makes the changes the last check found on $RB_ADDRESS its baseline (pending database $1)." ;;
  rebuild) rb_confirm "This builds the baseline of $RB_ADDRESS anew from the host as it is: whatever changed before is in it." ;;
esac
# sudo exits 1 for a command it cannot find, which would read as "changes found": look first.
rb_ssh -- test -x "$(rb_tool integrity)" </dev/null && rc=0 || rc=$?
[[ $rc -ne 255 ]] || exit 255
[[ $rc -eq 0 ]] || rb_die 3 "$(rb_tool integrity) is not on $RB_ADDRESS: a host last converged by a keel without it (pulumi up first)"

# keel-integrity's own exits: 0 done, 1 unexplained changes, 2 refused, 3 aide failed.
host() {
  rb_ssh -- sudo "$(rb_tool integrity)" "$@" && rc=0 || rc=$?
  case $rc in
    0 | 1 | 2 | 255) return "$rc" ;;
    *) rb_die 3 "keel-integrity on the host failed (exit $rc, above): aide or keel-integrity broke; nothing was changed" ;;
  esac
}

case $command in
  show) host show </dev/null ;;
  check)
    echo "$RB_PROG: checking $RB_ADDRESS against its baseline (some minutes)" >&2
    host check-now </dev/null && rc=0 || rc=$?
    [[ $rc -ne 1 ]] || rb_die 1 "changes no package and no keel step explains (above): read them with '$RB_PROG show'"
    exit "$rc"
    ;;
  accept) host accept "$1" </dev/null ;;
  rebuild) host rebuild </dev/null ;;
  copy)
    dir=$1
    want=$(host database-sha256 </dev/null) || exit $?
    [[ $want =~ ^[0-9a-f]{64}$ ]] || rb_die 3 "the host answered '$want', not a sha256"
    dest="$dir/aide-$want.db"
    part=$(mktemp "$dir/.aide-XXXXXX")
    trap 'rm -f "$part"' EXIT
    host database "$want" </dev/null >"$part" || exit $?
    got=$(rb_sha256 "$part")
    [[ $got == "$want" ]] || rb_die 3 "the copy's sha256 is $got, not the $want the host recorded: not kept"
    mv -- "$part" "$dest"
    trap - EXIT
    echo "$RB_PROG: $dest (sha256 $want)"
    ;;
esac
