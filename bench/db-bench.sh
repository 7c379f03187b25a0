#!/usr/bin/env bash
# db-bench.sh — how the DB scripts compare with plain file operations on a DB of about 1 GiB:
# verify against a sequential read (cat), backup against cp, and the worst commit latency of a
# writer while a backup runs. Prints figures only. Linux; needs sqlite3 and python3; as root it
# drops the page cache before each timed run, otherwise the figures are warm-cache ones.
#
# usage: bench/db-bench.sh [SIZE_MIB]     (default 1024; the temp dir needs about 3 x SIZE free)
set -euo pipefail

here=$(cd -P -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname -- "$here")
size_mib=${1:-1024}
[[ $size_mib =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [SIZE_MIB]" >&2; exit 2; }
python=/usr/bin/python3
[[ -x $python ]] || python=python3

work=$(mktemp -d "${TMPDIR:-/tmp}/keel-db-bench.XXXXXX")
writer_pid=""
cleanup() {
  [[ -z $writer_pid ]] || kill -KILL "$writer_pid" 2>/dev/null || true
  rm -rf -- "$work"
}
trap cleanup EXIT

now_ms() { echo $(($(date +%s%N) / 1000000)); }
cold() {
  sync
  if [[ -w /proc/sys/vm/drop_caches ]]; then echo 3 >/proc/sys/vm/drop_caches; fi
}
timed() { # timed CMD… — prints the wall time in ms; the command's output is discarded
  local t0
  cold
  t0=$(now_ms)
  "$@" >/dev/null
  echo $(($(now_ms) - t0))
}
writer_around() { # writer_around COMMAND… — a loop writer runs while COMMAND does; prints its figures
  local log=$work/writer.log
  : >"$log"
  "$python" "$repo/test/host/db-writer.py" loop "$db" "$log" 600 >"$work/writer.out" &
  writer_pid=$!
  until grep -q ready "$work/writer.out" 2>/dev/null; do sleep 0.05; done
  "$@" >/dev/null
  kill -TERM "$writer_pid"
  wait "$writer_pid" || true
  writer_pid=""
  tail -n 1 "$work/writer.out" | sed -E 's/.*"committed": ([0-9]+), "errors": ([0-9]+), "max_ms": ([0-9.]+), "secs": ([0-9.]+).*/\1 \2 \3 \4/' |
    awk '{ printf "%d commits in %.1f s (%.0f/s), worst commit %.1f ms, %d errors\n", $1, $4, $1 / $4, $3, $2 }'
}

db=$work/app.db
rows=$((size_mib * 1024 * 1024 / 1100))
t0=$(now_ms)
sqlite3 "$db" "PRAGMA journal_mode=WAL;
  CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v BLOB); CREATE INDEX t_k ON t(k);
  WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < $rows)
  INSERT INTO t(k, v) SELECT 'key-' || i, randomblob(1000) FROM c;" >/dev/null
build_ms=$(($(now_ms) - t0))
bytes=$(stat -c %s "$db")

echo "keel db-bench: $(sqlite3 --version | cut -d' ' -f1) on $(uname -srm), $(nproc) CPUs"
echo "DB: $rows rows, $((bytes / 1024 / 1024)) MiB ($bytes bytes), built in $((build_ms / 1000)) s, in $work"
if [[ -w /proc/sys/vm/drop_caches ]]; then echo "page cache dropped before each timed run"; else echo "page cache NOT dropped (not root): warm-cache figures"; fi
echo

cat_ms=$(timed cat "$db")
verify_ms=$(timed "$repo/scripts/host/keel-db-gate" verify "$db")
echo "verify (integrity_check + foreign_key_check): $verify_ms ms   vs   cat > /dev/null: $cat_ms ms   ratio $(awk -v a="$verify_ms" -v b="$cat_ms" 'BEGIN { printf "%.1f", a / (b ? b : 1) }')"

cp_ms=$(timed cp "$db" "$work/copy.db")
rm -f "$work/copy.db"
backup_ms=$(timed "$repo/scripts/host/keel-db-backup" --keep 1 "$db" "$work/backups")
echo "backup (VACUUM INTO + verify + sha256 + fsync): $backup_ms ms   vs   cp: $cp_ms ms   ratio $(awk -v a="$backup_ms" -v b="$cp_ms" 'BEGIN { printf "%.1f", a / (b ? b : 1) }')"
rm -rf "$work/backups"

# On a keel host a backup crosses two users (docs/DATABASE.md "The backup identity"): the DB's
# side exports a copy beside the DB and streams it, the backups' side stores it. Same user here.
pipe_backup() { "$repo/scripts/host/keel-db-backup" --export "$db" | "$repo/scripts/host/keel-db-backup" --from-stdin --keep 1 "$db" "$work/backups"; }
pipe_ms=$(timed pipe_backup)
echo "backup across two users (--export | --from-stdin, as the host runs it): $pipe_ms ms   vs   cp: $cp_ms ms   ratio $(awk -v a="$pipe_ms" -v b="$cp_ms" 'BEGIN { printf "%.1f", a / (b ? b : 1) }')"
rm -rf "$work/backups"

vacuum_ms=$(timed sqlite3 "file:$db?mode=ro" "VACUUM INTO '$work/vacuum.db'")
rm -f "$work/vacuum.db"
echo "  of which VACUUM INTO alone: $vacuum_ms ms"
echo

idle=$(writer_around sleep 5)
cold
during=$(writer_around "$repo/scripts/host/keel-db-backup" --keep 1 "$db" "$work/backups")
echo "a writer committing one small row per transaction (python3 sqlite3, SQLite's default synchronous):"
echo "  for 5 s without a backup: $idle"
echo "  during a backup:          $during"
