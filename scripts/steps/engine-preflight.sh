#!/usr/bin/env bash
# keel engine preflight gates (seed 000 §1 free space, §2 pinned Python; and the venv module and
# git the next steps use), run as the deploy user before the engine is deployed. Changes nothing.
# Usage: engine-preflight.sh PYTHON_VERSION MIN_FREE_GIB DIR...
#   PYTHON_VERSION  major.minor the system python3 must be (keel:pythonVersion)
#   MIN_FREE_GIB    free space each filesystem holding a DIR must have (keel:minFreeDiskGiB)
#   DIR             the engine's state and backup directories
# Exit: 0 every gate passed; 1 a gate failed (one line on stderr: what failed, what to do); 2 usage.
set -euo pipefail

usage() {
  echo "usage: engine-preflight.sh PYTHON_VERSION MIN_FREE_GIB DIR..." >&2
  exit 2
}
fail() {
  echo "keel preflight: $*" >&2
  exit 1
}

[[ $# -ge 3 && $1 =~ ^3\.[0-9]+$ && $2 =~ ^[0-9]+(\.[0-9]+)?$ ]] || usage
want=$1
min_gib=$2
shift 2

found=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) ||
  fail "no working python3 on the host; keel deploys the engine with the system Python $want. Fix the image (keel:image), then run pulumi up again"
[[ $found == "$want" ]] ||
  fail "the system python3 is $found, keel:pythonVersion pins $want. Test the engine on $found and set pulumi config set keel:pythonVersion $found, or use an image whose python3 is $want"
python3 -c 'import ensurepip, venv' 2>/dev/null ||
  fail "python3 $found cannot create a venv (no ensurepip): install the python3-venv package (cloud-init's package list), then run pulumi up again"
command -v git >/dev/null ||
  fail "git is not installed; the engine's source is a git checkout. Install the git package (cloud-init's package list), then run pulumi up again"

need_kib=$(awk -v g="$min_gib" 'BEGIN { printf "%d", g * 1024 * 1024 }')
declare -A checked=()
report=()
for dir in "$@"; do
  [[ -d $dir ]] || fail "$dir does not exist; the layout step creates it. Run pulumi up again from the start"
  device=$(stat -c %d -- "$dir")
  [[ -z ${checked[$device]:-} ]] || continue
  checked[$device]=1
  read -r mount avail_kib < <(df -P -k -- "$dir" | awk 'NR == 2 { print $6, $4 }')
  avail_gib=$(awk -v k="$avail_kib" 'BEGIN { printf "%.1f", k / 1024 / 1024 }')
  ((avail_kib >= need_kib)) ||
    fail "only $avail_gib GiB free on $mount (holding $dir), keel:minFreeDiskGiB asks for $min_gib GiB for DB, backups and logs. Free space (old backups, journalctl --vacuum-size) or resize the disk, then run pulumi up again"
  report+=("$mount ${avail_gib} GiB free")
done
echo "preflight ok: python3 $found; ${report[*]} (>= $min_gib GiB each)"
