#!/usr/bin/env bash
# keel: fails loudly when a filesystem has less free space than the engine needs for its database,
# its backups and the logs (keel:minFreeDiskGiB). cloud-init runs it at the end of the first boot,
# so a too-small disk shows up as a cloud-init error before anything is deployed.
# Installed as /usr/local/lib/keel/check-free-disk. Needs no root.
# Usage: check-free-disk PATH MIN_GIB      e.g. check-free-disk / 5
# Exit: 0 enough space; 1 not enough; 2 usage.
set -euo pipefail

if [[ $# -ne 2 || ! $2 =~ ^[0-9]+(\.[0-9]+)?$ ]]; then
  echo "usage: check-free-disk PATH MIN_GIB" >&2
  exit 2
fi
path=$1
min_gib=$2

avail_kib=$(df --output=avail -k -- "$path" | tail -n 1 | tr -d ' ')
if ! awk -v avail="$avail_kib" -v min="$min_gib" 'BEGIN { exit !(avail >= min * 1048576) }'; then
  avail_gib=$(awk -v avail="$avail_kib" 'BEGIN { printf "%.1f", avail / 1048576 }')
  echo "keel: $path has ${avail_gib} GiB free; keel:minFreeDiskGiB needs ${min_gib} GiB for the database, backups and logs." >&2
  echo "keel: choose a server type with a larger disk (keel:serverType) or lower keel:minFreeDiskGiB, then rebuild the server." >&2
  exit 1
fi
echo "keel: $path has enough free disk ($((avail_kib / 1048576)) GiB free, ${min_gib} GiB required)"
