#!/usr/bin/env bash
# db-migrate.sh — the host's side of keel's migration (seed 000 §4): check that the uploaded copy
# is byte for byte the file the operator's machine proved clean, then adopt it as the live DB —
# only if there is no live DB yet. Installed on the host as /usr/local/sbin/keel-db-migrate.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

KEEL_PROG=$(basename -- "$0")
self=$(readlink -f -- "${BASH_SOURCE[0]}" 2>/dev/null || printf '%s' "${BASH_SOURCE[0]}")
KEEL_DB_HERE=$(cd -P -- "$(dirname -- "$self")" && pwd)
for lib in "$KEEL_DB_HERE/db-lib.sh" "$KEEL_DB_HERE/keel-db-lib" ""; do [[ -r $lib ]] && break; done
[[ -n $lib ]] || { echo "$KEEL_PROG: cannot find db-lib.sh or keel-db-lib beside $self" >&2; exit 5; }
# shellcheck source=db-lib.sh
. "$lib"

usage() {
  cat <<EOF
usage: $KEEL_PROG [--records DIR] --owner USER[:GROUP] --unit NAME.service STAGED DB  < "<sha256>  <origin>"
       $KEEL_PROG -h

Reads one line on stdin, the result of the operator's side (db-migrate-source.sh): the sha256 of
the file it proved clean and that file's path there. Then, as root:
- DB (or a -wal/-shm/-journal of it) exists: keel never replaces a live DB, and nothing changes.
  Exit 0 only if this very source (its sha256) was adopted here before: DIR/<sha256> records
  every adoption (--records, default /var/lib/keel/migrated, root's). Otherwise the live DB did
  not come from this source — the engine started before the migration ran, or the DB came from
  elsewhere — and a green deploy would hide that the data was not carried over: exit 1, saying
  what to do. A staged copy left at STAGED is kept.
- otherwise STAGED must exist and its sha256 must be the one on stdin (else exit 1: the copy is
  not the file that passed the gate), the unit must be stopped (else exit 3), and then
  db-gate.sh adopt --owner USER[:GROUP] STAGED DB: verify, WAL mode, checkpoint, verify, atomic
  rename, mode 0600; STAGED is removed; the adoption is recorded in DIR.
$KEEL_EXIT_CODES_HELP
EOF
}

owner="" unit="" records=/var/lib/keel/migrated
while [[ $# -gt 0 ]]; do
  case $1 in
    --records) [[ $# -ge 2 ]] || keel_usage_error "--records needs a directory"; records=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    --owner) [[ $# -ge 2 ]] || keel_usage_error "--owner needs a user"; owner=$2; shift 2 ;;
    --unit) [[ $# -ge 2 ]] || keel_usage_error "--unit needs a unit name"; unit=$2; shift 2 ;;
    --) shift; break ;;
    -*) keel_usage_error "unknown option $1" ;;
    *) break ;;
  esac
done
[[ $# -eq 2 ]] || keel_usage_error "expected STAGED and DB"
[[ -n $owner ]] || keel_usage_error "--owner is required"
[[ $unit =~ ^[a-z][a-z0-9-]*\.service$ ]] || keel_usage_error "--unit: expected NAME.service, not '$unit'"
[[ $(id -u) -eq 0 ]] || keel_die "$KEEL_EX_USAGE" "run as root" "sudo $KEEL_PROG …"
staged=$1 db=$2

line=""
IFS= read -r line || [[ -n $line ]] || true
[[ $line =~ ^([0-9a-f]{64})\ \ (/.*)$ ]] ||
  keel_usage_error "expected '<sha256>  <path>' on stdin (the result of db-migrate-source.sh), found '${line:0:100}'"
expected=${BASH_REMATCH[1]} origin=${BASH_REMATCH[2]}

for f in "$db" "$db-wal" "$db-shm" "$db-journal"; do
  [[ -e $f ]] || continue
  if [[ -f $records/.$expected.pending && ! -f $records/$expected ]]; then
    # Recorded as pending before the adopt, not finalized after it: the run was cut off between
    # the adopt and the record's rename (the engine starts only in a later step, after a success).
    mv -f -- "$records/.$expected.pending" "$records/$expected" && keel_fsync "$records"
    keel_info "an earlier run adopted $origin (sha256 $expected) but was cut off before recording it; recorded now"
  fi
  if [[ -f $records/$expected ]]; then
    keel_info "$f exists: $origin (sha256 $expected) was adopted here before ($(head -n 1 -- "$records/$expected")); keel never replaces a live DB"
    echo "migrate: $db already exists, adopted from this source before; nothing changed"
    exit 0
  fi
  keel_die "$KEEL_EX_GATE" "$f exists, but it was not adopted from $origin (sha256 $expected): the engine started before the migration ran, or the live DB came from elsewhere. keel never replaces a live DB, so nothing changed, and the data of $origin is not on the host" \
    "to carry it over after all: sudo keel-ops adopt $staged (a verified backup of the live DB is taken first), then pulumi up. If the live DB is the one you want (or this host was migrated before keel recorded migrations): pulumi config rm keel:migrateFrom (and keel:migrateFallbackDir), then pulumi up"
done

[[ -f $staged ]] || keel_die "$KEEL_EX_GATE" "no uploaded copy at $staged" \
  "the upload step must run first: run pulumi up again"
actual=$(keel_sha256 "$staged")
[[ $actual == "$expected" ]] || keel_die "$KEEL_EX_GATE" \
  "the copy at $staged (sha256 $actual) is not the file that passed the gate on the operator's machine ($origin, sha256 $expected): it changed after the gate or the transfer broke; nothing was adopted" \
  "keep the engine on the operator's machine stopped and run the migration's source step again: pulumi up --replace <URN of keel-step-db-migrate-source> (pulumi stack --show-urns)"
if systemctl is-active --quiet -- "$unit"; then
  keel_die "$KEEL_EX_BUSY" "$unit is running; a DB is adopted only before the engine's first start" "sudo systemctl stop $unit, then run pulumi up again"
fi

keel_info "the copy at $staged has the sha256 of $origin ($expected)"
install -d -m 0700 -- "$records" || keel_die "$KEEL_EX_FAIL" "cannot create $records, where adoptions are recorded"
printf '%s %s -> %s\n' "$(keel_utc_iso)" "$origin" "$db" >"$records/.$expected.pending" ||
  keel_die "$KEEL_EX_FAIL" "cannot write $records/.$expected.pending (disk full?); nothing was adopted"
keel_fsync "$records/.$expected.pending"
# A failed adopt takes its pending record with it (only a SIGKILL can leave one behind).
keel_cleanup_add "$records/.$expected.pending"
dbdir=$(dirname -- "$db")
if keel_dir_is_mine "$dbdir"; then
  "$(keel_sibling gate)" adopt --owner "$owner" "$staged" "$db" >/dev/null
else
  # The DB's directory is the engine's: root writes nothing there (keel_require_own_dir). Root
  # reads the upload, the DB's owner writes its own copy beside the DB and adopts that.
  user=${owner%%:*}
  group=${owner#*:}
  [[ $owner == *:* ]] || group=$(id -gn -- "$user")
  as_owner() { setpriv --reuid="$user" --regid="$group" --clear-groups -- "$@"; }
  copy=$(as_owner mktemp "$dbdir/.$(basename -- "$db").migrate.XXXXXX") ||
    keel_die "$KEEL_EX_FAIL" "cannot create a file in $dbdir as $user"
  keel_cleanup_add "$copy"
  as_owner dd of="$copy" bs=1M conv=fsync status=none <"$staged" || keel_die "$KEEL_EX_FAIL" "cannot copy $staged into $dbdir (disk full?); nothing was adopted"
  [[ $(keel_sha256 "$copy") == "$expected" ]] || keel_die "$KEEL_EX_GATE" "the copy of $staged in $dbdir does not have its sha256; nothing was adopted" "run pulumi up again"
  as_owner "$(keel_sibling gate)" adopt --owner "$owner" "$copy" "$db" >/dev/null
  keel_cleanup_forget "$copy"
  rm -f -- "$staged"
fi
# The record that this source became the live DB, what lets a later run of this step pass:
# written (and fsynced) before the adopt as .SHA.pending, renamed once the adopt succeeded.
mv -f -- "$records/.$expected.pending" "$records/$expected" || keel_die "$KEEL_EX_FAIL" "adopted, but $records/$expected could not be recorded"
keel_cleanup_forget "$records/.$expected.pending"
keel_fsync "$records"
echo "migrate: adopted $origin (sha256 $expected) as $db"
