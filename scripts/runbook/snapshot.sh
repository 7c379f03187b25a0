#!/usr/bin/env bash
# snapshot.sh — a consistent read-only copy of the live DB for analysis (seed 000 §11B: analysis
# reads copies, never the live file). keel-ops snapshot writes it on the host with
# keel-db-snapshot while the engine runs; it is downloaded, compared by sha256 and removed from
# the host. docs/RUNBOOK.md "Snapshot for analysis".
#
# Usage: scripts/runbook/snapshot.sh [--stack FILE|-] [OUT]
#   OUT  where to write it (default: the snapshot's name on the host, in the current directory);
#        an existing OUT is never overwritten
# Prints OUT. Open it read-only: sqlite3 'file:OUT?mode=ro'
# Exit: 0 done; 1 the snapshot or the download failed; 255 ssh failed; 2 usage; 3 stack outputs missing.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

rb_common_args "$@"
set -- ${RB_ARGS[@]+"${RB_ARGS[@]}"}
case ${1:-} in
  -*) rb_die 2 "usage: $RB_PROG [--stack FILE|-] [OUT]" ;;
esac
[[ $# -le 1 ]] || rb_die 2 "usage: $RB_PROG [--stack FILE|-] [OUT]"
out=${1:-}
[[ -z $out || ! -e $out ]] || rb_die 2 "$out exists; snapshots are never overwritten"
rb_load_stack
remote=$(rb_ssh -- sudo "$(rb_tool ops)" snapshot) || rb_die 1 "the snapshot failed on the host (see above)"
[[ $remote =~ ^/[A-Za-z0-9._/-]+\.db$ ]] || rb_die 1 "keel-ops snapshot printed '$remote', not a path"
out=${out:-${remote##*/}}
[[ ! -e $out ]] || rb_die 2 "$out exists; snapshots are never overwritten"
tmp=$(mktemp "$(dirname -- "$out")/.snapshot.XXXXXX")
trap 'rm -f -- "$tmp"' EXIT
rb_ssh -- cat "$remote" >"$tmp" || rb_die 1 "downloading $remote failed"
want=$(rb_ssh -- sha256sum "$remote" | cut -d' ' -f1)
[[ $(rb_sha256 "$tmp") == "$want" ]] || rb_die 1 "the download of $remote does not match its sha256 on the host; run again"
chmod 0440 "$tmp"
mv -n -- "$tmp" "$out"
[[ ! -e $tmp ]] || rb_die 2 "$out appeared meanwhile; nothing was overwritten"
rb_ssh -- rm -f "$remote"
printf '%s\n' "$out"
