# shellcheck shell=bash
# db-lib.sh — helpers shared by keel's database scripts (db-gate, db-backup, db-restore,
# db-snapshot). Sourced, never run. Installed on the host as /usr/local/sbin/keel-db-lib.
#
# Exit codes shared by every script (docs/DATABASE.md):
#   0 ok · 1 gate failed: a DB, backup or copy is missing or not clean · 2 usage
#   3 busy: a process holds the DB open, or another run holds the lock
#   4 refused: not on a local filesystem (seed 000 §11D)
#   5 failed: I/O error, disk full, missing tool, target exists, interrupted
#
# Every function that fails calls keel_die, which records the reason in KEEL_LAST_ERROR and exits.
# Functions run at the top level of a script, never inside `if`/`||` (where `set -e` is off).

readonly KEEL_EX_GATE=1 KEEL_EX_USAGE=2 KEEL_EX_BUSY=3 KEEL_EX_NONLOCAL=4 KEEL_EX_FAIL=5

KEEL_PROG=${KEEL_PROG:-keel-db}

# The exit-code paragraph of every script's usage text.
# shellcheck disable=SC2034 # read by the scripts that source this file
KEEL_EXIT_CODES_HELP="exit codes: 0 ok; 1 gate failed (a DB, backup or copy is missing or not clean);
  2 usage; 3 busy (a process holds the DB, its -wal/-shm/-journal open, or another run holds
  the lock); 4 refused: not on a local filesystem (NFS, SMB/CIFS, FUSE, 9p, … — seed 000 §11D);
  5 failed otherwise (I/O error, disk full, missing tool, target exists, interrupted).
Messages go to stderr: what failed, then what to do.
In-use detection reads /proc/*/fd (Linux; as root it sees every process, as another user only
that user's own) or lsof elsewhere. It is a check at one moment: keep the engine stopped."
KEEL_LAST_ERROR=""
KEEL_CLEANUP=()

keel_err() { printf '%s: %s\n' "$KEEL_PROG" "$*" >&2; }
keel_info() { printf '%s: %s\n' "$KEEL_PROG" "$*" >&2; }

# keel_die CODE WHAT [WHAT-TO-DO]
keel_die() {
  local code=$1 what=$2 todo=${3:-}
  KEEL_LAST_ERROR=$what
  keel_err "$what"
  [[ -z $todo ]] || keel_err "what to do: $todo"
  exit "$code"
}

keel_usage_error() {
  keel_err "$1"
  keel_err "run with -h for usage"
  exit "$KEEL_EX_USAGE"
}

# One EXIT trap per script: an optional hook (defined by the script as keel_exit_hook), then the
# temporary paths registered with keel_cleanup_add are removed.
keel_on_exit() {
  local rc=$?
  set +e
  if [[ $(type -t keel_exit_hook) == function ]]; then keel_exit_hook "$rc"; fi
  local p
  for p in ${KEEL_CLEANUP[@]+"${KEEL_CLEANUP[@]}"}; do rm -rf -- "$p"; done
  exit "$rc"
}
keel_on_signal() { keel_die "$KEEL_EX_FAIL" "interrupted by SIG$1${KEEL_SIGNAL_NOTE:- (nothing was put under a final name)}"; }
keel_on_error() { KEEL_LAST_ERROR=${KEEL_LAST_ERROR:-"unexpected failure of: $1"}; }
trap keel_on_exit EXIT
trap 'keel_on_signal INT' INT
trap 'keel_on_signal TERM' TERM
trap 'keel_on_signal HUP' HUP
trap 'keel_on_error "$BASH_COMMAND"' ERR
set -E

keel_cleanup_add() { KEEL_CLEANUP+=("$1"); }
keel_cleanup_forget() {
  local rest=() p
  for p in ${KEEL_CLEANUP[@]+"${KEEL_CLEANUP[@]}"}; do [[ $p == "$1" ]] || rest+=("$p"); done
  KEEL_CLEANUP=(${rest[@]+"${rest[@]}"})
}

keel_require_tools() {
  local t
  for t in "$@"; do
    command -v "$t" >/dev/null 2>&1 ||
      keel_die "$KEEL_EX_FAIL" "required tool '$t' is not installed" "install it (Debian/Ubuntu: apt-get install $t)"
  done
}

# The path of a sibling script (gate, backup, …) in the repo (db-NAME.sh) or installed (keel-db-NAME).
keel_sibling() {
  local p
  for p in "$KEEL_DB_HERE/db-$1.sh" "$KEEL_DB_HERE/keel-db-$1"; do
    [[ -x $p ]] && { printf '%s\n' "$p"; return 0; }
  done
  keel_die "$KEEL_EX_FAIL" "cannot find the db-$1 script beside $KEEL_DB_HERE" "install all keel-db-* scripts together"
}

# ---- portable file facts (GNU coreutils on Linux, BSD tools on macOS) ---------------------------

# keel_stat GNU-FORMAT BSD-FORMAT FILE
if stat -c %s / >/dev/null 2>&1; then
  keel_stat() { stat -L -c "$1" -- "$3"; }
else
  keel_stat() { stat -L -f "$2" -- "$3"; }
fi
keel_size() { keel_stat %s %z "$1"; }
keel_owner() { keel_stat %u:%g %u:%g "$1"; }

keel_sha256() {
  local out
  if command -v sha256sum >/dev/null 2>&1; then out=$(sha256sum -- "$1"); else out=$(shasum -a 256 -- "$1"); fi
  printf '%s\n' "${out%% *}"
}

# fsync files and directories: GNU sync(1) fsyncs each named path, and a failure there (EIO: the
# disk lost the write) fails the script, so nothing unsynced gets a final name or an "ok". BSD and
# macOS sync(1) takes no paths: there it flushes everything (the operator's machine only).
keel_fsync() {
  local err
  if [[ -z ${KEEL_GNU_SYNC:-} ]]; then
    if sync --version >/dev/null 2>&1; then KEEL_GNU_SYNC=1; else KEEL_GNU_SYNC=0; fi
  fi
  if [[ $KEEL_GNU_SYNC == 0 ]]; then
    sync
    return 0
  fi
  err=$(sync -- "$@" 2>&1) ||
    keel_die "$KEEL_EX_FAIL" "fsync of $* failed: ${err:-sync exited non-zero}" \
      "the disk did not confirm the write: read dmesg and check the disk"
}

keel_utc_stamp() { date -u +%Y%m%dT%H%M%SZ; }

# keel_is_backup_name BASE NAME — NAME is a backup's file name as db-backup.sh gives it to a DB
# named BASE.*: BASE-YYYYMMDDTHHMMSSZ.db.
keel_is_backup_name() {
  local n=${2#"$1"-}
  [[ $2 == "$1-$n" && $n =~ ^[0-9]{8}T[0-9]{6}Z\.db$ ]]
}

# keel_list_backups DIR BASE — the backups of a DB named BASE.* in DIR, oldest first: regular files
# (never a link) named as keel_is_backup_name says.
keel_list_backups() {
  local f
  for f in "$1/$2"-*.db; do
    [[ -f $f && ! -L $f ]] && keel_is_backup_name "$2" "${f##*/}" && printf '%s\n' "$f"
  done
  return 0
}
# seconds since the epoch -> 20261122T031700Z (GNU date, or BSD date on macOS).
keel_epoch_stamp() { date -u -d "@$1" +%Y%m%dT%H%M%SZ 2>/dev/null || date -u -r "$1" +%Y%m%dT%H%M%SZ; }
# 20261122T031700Z -> seconds since the epoch, by arithmetic (days from the civil date, years 0001
# and later): no date(1) parser, whose accepted forms differ between GNU, BSD and Rust coreutils
# (Ubuntu 26.04's). keel-health.sh's stamp_epoch is its twin (test/host/stamp-epoch.test.ts).
keel_stamp_epoch() {
  local t=$1 y m d era yoe doy
  [[ $t =~ ^([0-9]{4})([0-9]{2})([0-9]{2})T([0-9]{2})([0-9]{2})([0-9]{2})Z$ ]] || return 1
  y=$((10#${BASH_REMATCH[1]})) m=$((10#${BASH_REMATCH[2]})) d=$((10#${BASH_REMATCH[3]}))
  # A field out of its range (month 13, hour 24) is refused.
  ((y >= 1 && m >= 1 && m <= 12 && d >= 1 && d <= 31 && 10#${BASH_REMATCH[4]} < 24 && 10#${BASH_REMATCH[5]} < 60 && 10#${BASH_REMATCH[6]} < 60)) || return 1
  ((m > 2)) || y=$((y - 1))
  era=$((y / 400)) yoe=$((y % 400)) doy=$(((153 * ((m + 9) % 12) + 2) / 5 + d - 1))
  echo $(((era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468) * 86400 + 10#${BASH_REMATCH[4]} * 3600 + 10#${BASH_REMATCH[5]} * 60 + 10#${BASH_REMATCH[6]}))
}
keel_utc_iso() { date -u +%Y-%m-%dT%H:%M:%SZ; }

# An absolute path whose directory is resolved physically (the file itself need not exist).
# A symlink to a DB is followed, as SQLite does (its -wal lives beside the real file).
keel_abspath() {
  local p=$1 dir
  if [[ -L $p ]]; then
    p=$(readlink -f -- "$p" 2>/dev/null) || keel_die "$KEEL_EX_FAIL" "cannot resolve the symlink $1"
  fi
  dir=$(dirname -- "$p")
  [[ -d $dir ]] || keel_die "$KEEL_EX_FAIL" "directory $dir does not exist" "create it, or check the path"
  dir=$(cd -P -- "$dir" && pwd) || keel_die "$KEEL_EX_FAIL" "cannot enter directory $dir"
  p=$(basename -- "$p")
  [[ $p != . && $p != .. && $p != / ]] || keel_die "$KEEL_EX_USAGE" "'$1' is a directory, not a DB file"
  if [[ $dir == / ]]; then printf '/%s\n' "$p"; else printf '%s/%s\n' "$dir" "$p"; fi
}

# ---- local filesystem only (seed 000 §11D: "no exceptions") ------------------------------------

# The type of the filesystem holding directory $1, as the kernel names it (e.g. ext4, nfs4, fuse).
keel_fs_type() {
  local dir mp
  dir=$(cd -P -- "$1" && pwd) || keel_die "$KEEL_EX_FAIL" "cannot enter directory $1"
  if [[ -r /proc/self/mountinfo ]]; then
    # mountinfo: field 5 is the mount point (octal escapes), the type follows the " - " separator.
    # The longest mount point containing the path wins; a later mount on the same point hides earlier ones.
    awk -v p="$dir" '
      function unesc(s) { gsub(/\\040/, " ", s); gsub(/\\011/, "\t", s); gsub(/\\012/, "\n", s); gsub(/\\134/, "\\", s); return s }
      {
        mp = unesc($5); i = 7; while (i <= NF && $i != "-") i++
        if (i >= NF) next
        if (p == mp || mp == "/" || index(p, mp "/") == 1) {
          if (length(mp) >= best) { best = length(mp); type = $(i + 1) }
        }
      }
      END { print type }' /proc/self/mountinfo
    return 0
  fi
  # BSD/macOS: the mount point from df, its type from mount(8): "dev on /mp (apfs, local, …)".
  mp=$(df -P -- "$dir" | awk 'NR == 2 { print $NF }')
  mount | awk -v mp="$mp" '!found { i = index($0, " on " mp " ("); if (i) { s = substr($0, i + length(mp) + 6); sub(/[,)].*/, "", s); print s; found = 1 } }'
}

# Prints local, network or unknown for a filesystem type name.
keel_fs_class() {
  case $1 in
    ext2 | ext3 | ext4 | ext2/ext3 | xfs | btrfs | zfs | f2fs | jfs | reiserfs | bcachefs | nilfs2 | \
      tmpfs | ramfs | overlay | overlayfs | squashfs | erofs | apfs | hfs | hfsplus | ufs | ffs | \
      vfat | msdos | exfat | ntfs | ntfs3)
      echo local ;;
    nfs | nfs4 | nfsd | cifs | smb | smb2 | smb3 | smbfs | 9p | v9fs | virtiofs | fuse | fuse.* | fuseblk | \
      fusefs | fusefs.* | osxfuse | macfuse | sshfs | davfs | webdav | ceph | glusterfs | lustre | afs | \
      coda | ocfs2 | gfs2 | ncpfs | afpfs | autofs | beegfs | gpfs | orangefs)
      echo network ;;
    *) echo unknown ;;
  esac
}

# Refuses (exit 4) unless the directory holding path $1 is on a local filesystem.
keel_require_local() {
  local dir type class
  dir=$(dirname -- "$1")
  type=$(keel_fs_type "$dir")
  class=$(keel_fs_class "$type")
  case $class in
    local) return 0 ;;
    network)
      keel_die "$KEEL_EX_NONLOCAL" "refused: $dir is on a '$type' filesystem (network, shared or FUSE); seed 000 §11D: the DB lives on local disk, no exceptions" \
        "move the file to a local disk (ext4, xfs, btrfs, …) and run again there" ;;
    *)
      keel_die "$KEEL_EX_NONLOCAL" "refused: $dir is on a filesystem of type '${type:-unknown}', which is not known to be local (seed 000 §11D)" \
        "move the file to a local disk (ext4, xfs, btrfs, …) and run again there" ;;
  esac
}

# ---- "another process holds the DB open" --------------------------------------------------------

# Prints "PID (COMMAND)" for every process with an open file descriptor on one of the given files.
# Linux: reads /proc/*/fd and matches device and inode (so hard links and bind mounts count too).
# As root it sees every process; as another user only that user's own. Elsewhere: lsof.
keel_holders() {
  local ids=() f
  for f in "$@"; do
    [[ -e $f ]] && ids+=("$(keel_stat %d:%i %d:%i "$f")")
  done
  [[ ${#ids[@]} -gt 0 ]] || return 0
  if [[ -d /proc/self/fd ]]; then
    { find -L /proc/[0-9]*/fd -mindepth 1 -maxdepth 1 -printf '%D:%i %h\n' 2>/dev/null || true; } |
      awk -v ids="${ids[*]}" -v self="$$" '
        BEGIN { n = split(ids, a, " "); for (i = 1; i <= n; i++) want[a[i]] = 1 }
        ($1 in want) { split($2, p, "/"); if (p[3] != self && !(p[3] in seen)) { seen[p[3]] = 1; print p[3] } }' |
      while read -r pid; do
        printf '%s (%s)\n' "$pid" "$(cat "/proc/$pid/comm" 2>/dev/null || echo '?')"
      done
  else
    { lsof -F pc -- "$@" 2>/dev/null || true; } |
      awk '/^p/ { pid = substr($0, 2) } /^c/ { print pid " (" substr($0, 2) ")" }'
  fi
}

# keel_dir_is_mine DIR — true when DIR is a real directory (not a link) owned by the current user
# that no group or other user can write. Only there do the tools create their temporary files.
keel_dir_is_mine() {
  local d=$1 st
  [[ -d $d && ! -L $d ]] || return 1
  st=$(stat -c '%u %a' -- "$d" 2>/dev/null) || return 1
  [[ ${st%% *} == "$(id -u)" ]] && (((8#${st##* } & 8#022) == 0))
}

# keel_require_own_dir DIR — root creates, links, copies into, chmods or chowns nothing in a
# directory another user can write (docs/DATABASE.md "Who runs what"): that user could turn a name
# root is about to write into a link to any file between two steps. As root in such a directory
# (the engine's /var/lib/<app>), refuse and say how to run as its owner instead.
keel_require_own_dir() {
  local d=$1 owner
  [[ $(id -u) -eq 0 ]] || return 0
  keel_dir_is_mine "$d" && return 0
  owner=$(stat -c %U:%G -- "$d" 2>/dev/null) || owner="its owner"
  keel_die "$KEEL_EX_USAGE" "refused: as root in $d, which belongs to $owner or is writable by others; root writes nothing where another user can" \
    "run it as the directory's owner: setpriv --reuid=${owner%%:*} --regid=${owner#*:} --clear-groups -- $KEEL_PROG …; on a keel host, sudo keel-ops restore NAME or sudo keel-ops adopt FILE do that"
}

# Refuses (exit 3) while a process holds DB, DB-wal, DB-shm or DB-journal open.
keel_require_unused() {
  local db=$1 holders
  [[ -d /proc/self/fd ]] || command -v lsof >/dev/null 2>&1 ||
    keel_die "$KEEL_EX_FAIL" "cannot tell whether $db is in use: no /proc and no lsof" "install lsof"
  holders=$(keel_holders "$db" "$db-wal" "$db-shm" "$db-journal")
  [[ -z $holders ]] && return 0
  keel_die "$KEEL_EX_BUSY" "$db is in use: held open by $(printf '%s' "$holders" | paste -sd, - | sed 's/,/, /g')" \
    "stop the engine first (systemctl stop <app>), then run again"
}

# ---- sqlite3 ------------------------------------------------------------------------------------

keel_sqlite() { sqlite3 -init /dev/null -batch -bail "$@"; }

# A file: URI for an absolute path (percent-encodes what URIs reserve), with optional parameters.
keel_uri() {
  local p=$1
  p=${p//%/%25}
  p=${p//\?/%3f}
  p=${p//#/%23}
  printf 'file:%s%s\n' "$p" "${2:+?$2}"
}

keel_sql_str() { printf "'%s'" "${1//\'/\'\'}"; }

# A string as a JSON string literal.
keel_json_str() {
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}
  s=${s//$'\r'/\\r}
  s=${s//$'\t'/\\t}
  s=$(printf '%s' "$s" | tr -d '\000-\037')
  # Valid UTF-8 only (SQLite's messages quote the DB's own bytes, which its writer chose): a reader's
  # JSON parser must not fail on them. Invalid sequences are dropped; without iconv, non-ASCII is.
  if command -v iconv >/dev/null 2>&1; then
    s=$(printf '%s' "$s" | iconv -f UTF-8 -t UTF-8 -c 2>/dev/null) || true
  else
    s=$(printf '%s' "$s" | LC_ALL=C tr -cd '\040-\176')
  fi
  printf '"%s"' "$s"
}

# ---- the integrity gate -------------------------------------------------------------------------

# Bytes of a file as decimal numbers: keel_bytes FILE OFFSET COUNT
keel_bytes() {
  od -An -v -tu1 -j "$2" -N "$3" -- "$1" | awk '{ for (i = 1; i <= NF; i++) printf "%s%s", (n++ ? " " : ""), $i } END { print "" }'
}

keel_gate_fail() { # keel_gate_fail DB REASON [WHAT-TO-DO]
  keel_die "$KEEL_EX_GATE" "verify $1: FAILED: $2" \
    "${3:-do not carry this DB forward: use the newest backup that passes verify (db-restore.sh)}"
}

# The first five lines of a text, joined with "; ".
keel_first_lines() { printf '%s\n' "$1" | awk 'NR > 1 && NR <= 5 { printf "; " } NR <= 5 { printf "%s", $0 } END { print "" }'; }

# Runs integrity_check and foreign_key_check through a URI. Returns 1 with the findings (the first
# lines of SQLite's answer) in KEEL_FINDINGS if either reports anything.
KEEL_FINDINGS=""
keel_integrity() {
  local uri=$1 out rc=0
  KEEL_FINDINGS=""
  out=$(keel_sqlite -readonly "$uri" 'PRAGMA integrity_check;' 2>&1) || rc=$?
  if [[ $rc -ne 0 || $out != ok ]]; then
    KEEL_FINDINGS="integrity_check: $(keel_first_lines "$out")"
    return 1
  fi
  out=$(keel_sqlite -readonly "$uri" 'PRAGMA foreign_key_check;' 2>&1) || rc=$?
  if [[ $rc -ne 0 || -n $out ]]; then
    KEEL_FINDINGS="foreign_key_check (table|rowid|parent|fkid): $(keel_first_lines "$out")"
    return 1
  fi
  return 0
}

# keel_verify DB — the gate. Returns only if DB (with its -wal) is clean; otherwise exits.
# It never writes to DB, DB-wal or DB-shm: the main file is read through an immutable read-only
# URI; a -wal with frames is replayed on a private copy (a hard link of the DB, opened read-only,
# beside a copy of the -wal, in a temporary directory).
keel_verify() {
  local db=$1 wal=$1-wal shm=$1-shm size psz b h wsize=0 wal_frames=0
  keel_require_local "$db"
  keel_require_unused "$db"
  if [[ ! -e $db ]]; then
    [[ -e $wal ]] && keel_gate_fail "$db" "a -wal without its DB: $wal exists but $db does not" \
      "find the DB file this -wal belongs to; without it the -wal is useless"
    keel_gate_fail "$db" "no such file"
  fi
  [[ -f $db ]] || keel_gate_fail "$db" "not a regular file"
  [[ -r $db ]] || keel_die "$KEEL_EX_FAIL" "verify $db: cannot read it (permission denied)" "run as the DB's owner or root"
  size=$(keel_size "$db")
  [[ $size -gt 0 ]] || keel_gate_fail "$db" "empty file (0 bytes): not an SQLite database (SQLite would open it as a new, empty DB)"
  [[ $size -ge 100 ]] || keel_gate_fail "$db" "only $size bytes: too short for an SQLite header"

  # The 100-byte header (https://www.sqlite.org/fileformat2.html#the_database_header).
  read -r -a h <<<"$(keel_bytes "$db" 0 100)"
  [[ "${h[*]:0:16}" == "83 81 76 105 116 101 32 102 111 114 109 97 116 32 51 0" ]] ||
    keel_gate_fail "$db" "not an SQLite database (no 'SQLite format 3' header)"
  psz=$((h[16] * 256 + h[17]))
  [[ $psz -eq 1 ]] && psz=65536
  [[ $psz -ge 512 && $psz -le 65536 && $((psz & (psz - 1))) -eq 0 ]] ||
    keel_gate_fail "$db" "damaged header: invalid page size $psz"
  [[ $((size % psz)) -eq 0 ]] ||
    keel_gate_fail "$db" "truncated or damaged: size $size is not a multiple of the page size $psz"

  # The -wal: its header must be a WAL header for this page size; the -shm (the WAL index a crashed
  # writer left behind) must describe this -wal, not another one.
  if [[ -e $wal || -L $wal ]]; then
    [[ -f $wal && ! -L $wal ]] || keel_gate_fail "$db" "$wal is not a regular file"
    wsize=$(keel_size "$wal")
    if [[ $wsize -gt 0 ]]; then
      [[ $wsize -ge 32 ]] || keel_gate_fail "$db" "the -wal is $wsize bytes, shorter than a WAL header: damaged" \
        "if no process wrote to this DB when it stopped, move the -wal away and verify again; otherwise use a backup"
      read -r -a b <<<"$(keel_bytes "$wal" 0 32)"
      [[ "${b[*]:0:3}" == "55 127 6" && (${b[3]} -eq 130 || ${b[3]} -eq 131) ]] ||
        keel_gate_fail "$db" "the -wal does not start with a WAL header: it is not a write-ahead log of this DB"
      [[ $(((b[4] << 24) | (b[5] << 16) | (b[6] << 8) | b[7])) -eq 3007000 ]] ||
        keel_gate_fail "$db" "the -wal has an unknown WAL format version"
      local wpsz=$(((b[8] << 24) | (b[9] << 16) | (b[10] << 8) | b[11]))
      [[ $wpsz -eq $psz ]] ||
        keel_gate_fail "$db" "the -wal has page size $wpsz but the DB has $psz: the -wal belongs to another DB" \
          "find the -wal that belongs to this DB, or use a backup; never delete a -wal you cannot explain"
      # Frame 1 carries the header's salts when the -wal holds frames of its current generation.
      if [[ $wsize -ge $((32 + 24 + psz)) && $(keel_bytes "$wal" 40 8) == "${b[*]:16:8}" ]]; then
        wal_frames=1
      fi
      keel_check_shm "$db" "${b[*]:16:8}" "$wsize" "$psz"
    else
      keel_check_shm "$db" "" 0 "$psz"
    fi
  elif [[ -e $shm ]]; then
    keel_check_shm "$db" "" 0 "$psz"
  fi

  # The in-header page count is authoritative when it is valid (change counter = version-valid-for)
  # and no -wal frame can have grown the DB: then a shorter file is a truncated one.
  local pages=$(((h[28] << 24) | (h[29] << 16) | (h[30] << 8) | h[31]))
  if [[ $wal_frames -eq 0 && "${h[*]:24:4}" == "${h[*]:92:4}" && $pages -gt 0 && $size -lt $((pages * psz)) ]]; then
    keel_gate_fail "$db" "truncated: the header says $pages pages ($((pages * psz)) bytes) but the file has $size bytes"
  fi

  # A hot rollback journal: the DB is only consistent after SQLite rolls it back (a write).
  if [[ -s $db-journal && $(keel_bytes "$db-journal" 0 8) == "217 213 5 249 32 161 99 215" ]]; then
    keel_gate_fail "$db" "a hot rollback journal ($db-journal) is beside it: a transaction was interrupted" \
      "open the DB once with the application or 'sqlite3 DB \"PRAGMA quick_check\"' (SQLite rolls the journal back), then verify again; or use a backup"
  fi

  local alone
  alone=$(keel_uri "$db" 'mode=ro&immutable=1')
  if [[ $wal_frames -eq 1 ]]; then
    local rc=0 findings
    keel_integrity_with_wal "$db" || rc=$?
    findings=$KEEL_FINDINGS
    case $rc in
      0) return 0 ;;
      2) keel_gate_fail "$db" "$findings: the -wal belongs to another DB" "find the -wal that belongs to this DB, or use a backup" ;;
    esac
    if keel_integrity "$alone"; then
      keel_gate_fail "$db" "the DB file alone is clean, but replaying its -wal breaks it ($findings): the -wal belongs to another DB or is damaged" \
        "find the -wal that belongs to this DB, or use a backup"
    fi
    keel_gate_fail "$db" "$findings"
  fi
  keel_integrity "$alone" || keel_gate_fail "$db" "$KEEL_FINDINGS"
}

# A 32-bit unsigned integer from four decimal bytes: keel_u32 be|le B0 B1 B2 B3
keel_u32() {
  if [[ $1 == be ]]; then echo $((($2 << 24) | ($3 << 16) | ($4 << 8) | $5)); else echo $((($5 << 24) | ($4 << 16) | ($3 << 8) | $2)); fi
}

# keel_shm_header SHM — the wal-index header in a -shm (written in the writer's native byte order).
# Returns 1 if it is absent, torn or uninitialised (SQLite rebuilds such a file); otherwise sets
# KEEL_SHM_MXFRAME (frames committed), KEEL_SHM_NPAGE (DB size in pages after the last commit),
# KEEL_SHM_BACKFILL (frames already copied into the DB) and KEEL_SHM_SALT (the -wal's salt bytes).
KEEL_SHM_MXFRAME=0 KEEL_SHM_NPAGE=0 KEEL_SHM_BACKFILL=0 KEEL_SHM_SALT=""
keel_shm_header() {
  local shm=$1 hb order
  [[ -f $shm && $(keel_size "$shm") -ge 136 ]] || return 1
  read -r -a hb <<<"$(keel_bytes "$shm" 0 136)"
  # Two copies of the 48-byte header that agree, and isInit set.
  [[ "${hb[*]:0:48}" == "${hb[*]:48:48}" && ${hb[12]} -eq 1 ]] || return 1
  if [[ $(keel_u32 le "${hb[@]:0:4}") -eq 3007000 ]]; then
    order=le
  elif [[ $(keel_u32 be "${hb[@]:0:4}") -eq 3007000 ]]; then
    order=be
  else
    return 1
  fi
  KEEL_SHM_MXFRAME=$(keel_u32 "$order" "${hb[@]:16:4}")
  KEEL_SHM_NPAGE=$(keel_u32 "$order" "${hb[@]:20:4}")
  KEEL_SHM_BACKFILL=$(keel_u32 "$order" "${hb[@]:96:4}")
  KEEL_SHM_SALT="${hb[*]:32:8}"
}

# keel_check_shm DB WAL-SALT-BYTES WAL-SIZE PAGE-SIZE — a -shm left by a writer that stopped without
# closing records the salts of its -wal and how many frames it had committed (mxFrame) and copied
# into the DB (nBackfill). Only contradictions with the -wal beside it are reported.
keel_check_shm() {
  local db=$1 salts=$2 wsize=$3 psz=$4 shm=$1-shm
  [[ -e $shm || -L $shm ]] || return 0
  [[ -f $shm && ! -L $shm ]] || keel_gate_fail "$db" "$shm is not a regular file"
  keel_shm_header "$shm" || return 0
  [[ $KEEL_SHM_MXFRAME -gt 0 ]] || return 0
  if [[ -z $salts ]]; then
    [[ $KEEL_SHM_MXFRAME -le $KEEL_SHM_BACKFILL ]] ||
      keel_gate_fail "$db" "the -wal is missing or empty, but the -shm records $((KEEL_SHM_MXFRAME - KEEL_SHM_BACKFILL)) committed frame(s) not yet in the DB: the -wal was lost or removed" \
        "find the DB's -wal; if it is gone, committed transactions are gone: use a backup"
    return 0
  fi
  [[ $KEEL_SHM_SALT == "$salts" ]] ||
    keel_gate_fail "$db" "the -wal's salt does not match the one recorded in the -shm: the -wal belongs to another DB or was replaced" \
      "find the -wal that belongs to this DB, or use a backup"
  [[ $wsize -ge $((32 + KEEL_SHM_MXFRAME * (24 + psz))) ]] ||
    keel_gate_fail "$db" "the -wal is truncated: the -shm records $KEEL_SHM_MXFRAME committed frames, the -wal holds fewer" \
      "use a backup: committed transactions are missing"
}

# integrity_check of DB as SQLite sees it with its -wal, on a private copy: a temporary directory
# holds a hard link to it (opened read-only: the kernel refuses any write) and a copy of the -wal;
# SQLite builds its -shm there. The directory is beside the DB when that directory is the caller's
# own (keel_dir_is_mine), else a private one under $TMPDIR or /var/tmp (0700, in a sticky directory
# on the same disk as /var/lib as a rule): root never works inside the engine's directory, where
# the engine could swap the temporary directory for a link. Falls back to a full copy where hard
# links fail.
# Returns 1 with KEEL_FINDINGS like keel_integrity, or 2 when the replayed DB is clean but its
# size disagrees with the -wal's last commit (the -wal was written for another DB: every commit
# records the DB size, which equals the page count in the page-1 header of a DB and its own -wal).
# Exits on an I/O failure.
keel_integrity_with_wal() {
  local db=$1 tmp="" rc=0 uri pages
  if keel_dir_is_mine "$(dirname -- "$db")"; then
    tmp=$(mktemp -d "$(dirname -- "$db")/.keel-verify.XXXXXX" 2>/dev/null) || tmp=""
  fi
  [[ -n $tmp ]] || tmp=$(mktemp -d "${TMPDIR:-/var/tmp}/keel-verify.XXXXXX") ||
    keel_die "$KEEL_EX_FAIL" "verify $db: cannot create a temporary directory"
  keel_cleanup_add "$tmp"
  if ! ln -- "$db" "$tmp/db" 2>/dev/null; then
    cp -- "$db" "$tmp/db" || keel_die "$KEEL_EX_FAIL" "verify $db: cannot copy it to $tmp (disk full?)"
  fi
  cp -- "$db-wal" "$tmp/db-wal" || keel_die "$KEEL_EX_FAIL" "verify $db: cannot copy its -wal to $tmp (disk full?)"
  uri=$(keel_uri "$tmp/db" mode=ro)
  keel_integrity "$uri" || rc=$?
  if [[ $rc -eq 0 ]]; then
    pages=$(keel_sqlite -readonly "$uri" 'PRAGMA page_count;' 2>&1) || pages="?"
    if keel_shm_header "$tmp/db-shm" && [[ $KEEL_SHM_MXFRAME -gt 0 && $KEEL_SHM_NPAGE != "$pages" ]]; then
      KEEL_FINDINGS="the -wal's last commit leaves the DB at $KEEL_SHM_NPAGE pages, but the DB's header after replaying it says $pages"
      rc=2
    fi
  fi
  rm -rf -- "$tmp"
  keel_cleanup_forget "$tmp"
  return "$rc"
}

# ---- writing: only to DBs already proven clean, or to private copies ------------------------------

# keel_checkpoint DB [wal] — optionally switches DB to WAL mode, then checkpoints with TRUNCATE and
# confirms that the -wal is empty or gone. Exits 3 if another connection keeps it from completing.
keel_checkpoint() {
  local db=$1 sql="" out rc=0 last
  [[ ${2:-} != wal ]] || sql="PRAGMA journal_mode=WAL;"
  out=$(keel_sqlite "$(keel_uri "$db")" "${sql}PRAGMA wal_checkpoint(TRUNCATE);" 2>&1) || rc=$?
  if [[ $rc -ne 0 ]]; then
    case $out in
      *locked* | *busy*) keel_die "$KEEL_EX_BUSY" "checkpoint of $db failed: $out" "stop every process using the DB, then run again" ;;
      *) keel_die "$KEEL_EX_FAIL" "checkpoint of $db failed: $out" ;;
    esac
  fi
  [[ ${2:-} != wal || ${out%%$'\n'*} == wal ]] ||
    keel_die "$KEEL_EX_FAIL" "could not switch $db to WAL mode: $out"
  last=${out##*$'\n'}
  [[ ${last%%|*} == 0 ]] ||
    keel_die "$KEEL_EX_BUSY" "checkpoint of $db could not complete (busy|log|checkpointed = $last): another connection is reading it" \
      "stop every process using the DB, then run again"
  [[ ! -s $db-wal ]] ||
    keel_die "$KEEL_EX_BUSY" "the -wal of $db still holds $(keel_size "$db-wal") bytes after the checkpoint: another process opened the DB meanwhile" \
      "stop every process using the DB, then run again"
}

# keel_copy_db SRC DEST — a byte copy of a verified, unused DB with its -wal (SQLite rebuilds the
# -shm), for keel_checkpoint to fold into one file.
keel_copy_db() {
  keel_cleanup_add "$2-wal"
  keel_cleanup_add "$2-shm"
  cp -- "$1" "$2" || keel_die "$KEEL_EX_FAIL" "cannot copy $1 to $2 (disk full?)"
  if [[ -s $1-wal ]]; then
    cp -- "$1-wal" "$2-wal" || keel_die "$KEEL_EX_FAIL" "cannot copy $1-wal to $2-wal (disk full?)"
  fi
}

# keel_vacuum_into DB OUT — an online, consistent copy of DB into OUT (an empty file) through one
# read transaction of a read-only connection: the engine keeps writing meanwhile (WAL mode).
keel_vacuum_into() {
  local db=$1 out=$2 msg rc=0
  [[ -f $db ]] || keel_die "$KEEL_EX_GATE" "$db: no such DB file"
  keel_cleanup_add "$out-journal"
  msg=$(keel_sqlite -cmd '.timeout 30000' "$(keel_uri "$db" mode=ro)" "VACUUM INTO $(keel_sql_str "$out");" 2>&1) || rc=$?
  [[ $rc -eq 0 ]] && return 0
  case $msg in
    *malformed* | *"not a database"* | *corrupt*)
      keel_die "$KEEL_EX_GATE" "reading $db failed: $msg" "the live DB is damaged: stop the engine, run db-gate.sh verify, use a backup" ;;
    *"disk is full"* | *"No space"*)
      keel_die "$KEEL_EX_FAIL" "writing the copy failed: $(dirname -- "$out") is full ($msg)" "free space there (or keep fewer backups), then run again" ;;
    *locked* | *busy*)
      keel_die "$KEEL_EX_BUSY" "reading $db failed: $msg" "another process kept the DB locked for 30 s; run again" ;;
    *)
      keel_die "$KEEL_EX_FAIL" "copying $db failed: $msg" ;;
  esac
}

# ---- a backup across two identities (docs/DATABASE.md "The backup identity") ----------------------

# The engine's user can read the DB but not write the backups; the backup user the other way round.
# So a backup on a keel host is a pipe: `db-backup.sh --export DB` (engine's user) writes one header
# line and the copy on stdout, `db-backup.sh --from-stdin DB DIR` (backup user) stores it. Headers:
#   keel-db-export 1 size N          N bytes of a consistent copy (VACUUM INTO) follow
#   keel-db-export 1 none            there is no DB (a first start; session backups only)
#   keel-db-export 1 failed CODE WHY the export failed (CODE: these scripts' exit codes)
readonly KEEL_EXPORT_MAGIC="keel-db-export 1"
KEEL_EXPORT_SENT=0
# From an exporter's exit hook: a failure before the header says so on the stream, so the store side
# records the reason rather than "the stream ended".
keel_export_failed_header() {
  [[ $1 -ne 0 && $KEEL_EXPORT_SENT -eq 0 ]] || return 0
  KEEL_EXPORT_SENT=1
  # The store side may be gone already (killed with us by a deadline): a SIGPIPE here must not end
  # the exit trap before it removes the temporary copy.
  trap '' PIPE
  printf '%s failed %d %s\n' "$KEEL_EXPORT_MAGIC" "$1" "$(printf '%s' "${KEEL_LAST_ERROR:-exit code $1}" | tr '\n\r' '  ' | head -c 2000)" || true
}
keel_export_header() { KEEL_EXPORT_SENT=1; printf '%s %s\n' "$KEEL_EXPORT_MAGIC" "$1"; }

# keel_as_pair ENGINE:BACKUP DB DIR — the --as option of db-backup.sh and db-session-backup.sh:
# as root, two user names (not one), absolute paths. Sets KEEL_AS_ENGINE and KEEL_AS_BACKUP to the
# command-line prefixes that run a command as each user (setpriv: its own groups, no new
# privileges, a clean environment). Root itself opens nothing of theirs on the way
# (docs/DATABASE.md "Who runs what").
keel_as_pair() {
  [[ $(id -u) -eq 0 ]] || keel_usage_error "--as runs the two sides as other users: run it as root"
  [[ $1 =~ ^([a-z_][a-z0-9_-]{0,31}):([a-z_][a-z0-9_-]{0,31})$ ]] || keel_usage_error "--as needs ENGINE:BACKUP (two user names), not '$1'"
  [[ ${BASH_REMATCH[1]} != "${BASH_REMATCH[2]}" ]] || keel_usage_error "--as: the engine and the backups need two users, not one"
  [[ $2 == /* && $3 == /* ]] || keel_usage_error "--as needs absolute paths for DB and DIR"
  # shellcheck disable=SC2034 # read by the scripts that source this file
  KEEL_AS_ENGINE=(setpriv --reuid="${BASH_REMATCH[1]}" --regid="${BASH_REMATCH[1]}" --init-groups --no-new-privs --reset-env --)
  # shellcheck disable=SC2034
  KEEL_AS_BACKUP=(setpriv --reuid="${BASH_REMATCH[2]}" --regid="${BASH_REMATCH[2]}" --init-groups --no-new-privs --reset-env --)
}

# ---- putting a prepared file in place -----------------------------------------------------------

# A swap of the live DB (restore, adopt) is marked in progress by DIR/.NAME.swap, written and
# fsynced before the first rename and removed after the last, and runs under an flock on
# DIR/.NAME.swap.lock, which the engine's start gate (db-session-backup.sh pre) waits for. An
# interrupted swap (a kill, a power loss) leaves the marker: the start gate refuses to start the
# engine, and `db-gate.sh recover DB` (`keel-ops recover`) or the next swap finishes it or rolls it
# back (keel_swap_recover).
keel_swap_marker() { printf '%s/.%s.swap\n' "$(dirname -- "$1")" "$(basename -- "$1")"; }

# keel_swap_lock DB [SECONDS] — takes the swap lock of DB on fd 7 (waits up to SECONDS, 600).
keel_swap_lock() {
  local lock
  lock="$(dirname -- "$1")/.$(basename -- "$1").swap.lock"
  command -v flock >/dev/null 2>&1 || keel_die "$KEEL_EX_FAIL" "flock is missing: a swap of $1 cannot be locked" "install util-linux (flock)"
  exec 7>>"$lock" || keel_die "$KEEL_EX_FAIL" "cannot open $lock"
  flock -w "${2:-600}" 7 || keel_die "$KEEL_EX_BUSY" "another restore or adopt of $1 holds $lock" "wait for it to finish, then run again"
}

# keel_swap_recover DB — with the swap lock held: if a swap of DB was interrupted, finish it (the
# new file already has DB's name) or roll it back (it does not: the previous DB and its
# -wal/-shm/-journal get their names back, the prepared copy is removed). Says what it did.
# Anything else (no copy, no DB, no aside) is refused: it needs a person, not a guess.
keel_swap_recover() {
  local db=$1 marker tmp="" aside="" line ext dir name
  marker=$(keel_swap_marker "$db")
  [[ -e $marker || -L $marker ]] || return 0
  [[ -f $marker && ! -L $marker ]] || keel_die "$KEEL_EX_FAIL" "the swap marker $marker is not a regular file" "inspect $(dirname -- "$db") by hand"
  dir=$(dirname -- "$db")
  name=$(basename -- "$db")
  while IFS= read -r line; do
    case $line in
      tmp=*) tmp=${line#tmp=} ;;
      aside=*) aside=${line#aside=} ;;
    esac
  done <"$marker"
  # The marker names files beside DB only, by the exact names the tools give them.
  [[ ${tmp#"$dir/"} =~ ^\.${name//./\\.}\.(restore|adopt)\.[A-Za-z0-9]{6,}$ && $tmp == "$dir/"* ]] ||
    keel_die "$KEEL_EX_FAIL" "the swap marker $marker names '$tmp', which is not a temporary file of keel's beside $db" "inspect $dir by hand"
  [[ -z $aside || (${aside#"$dir/"} =~ ^${name//./\\.}\.pre-(restore|adopt)-[0-9]{8}T[0-9]{6}Z$ && $aside == "$dir/"*) ]] ||
    keel_die "$KEEL_EX_FAIL" "the swap marker $marker names '$aside', which is not an aside name of $db" "inspect $dir by hand"
  if [[ ! -e $tmp && ! -e $db && -n $aside && -e $aside ]]; then
    # The copy is gone and DB has no file: the copy never got DB's name. Put the previous DB back.
    tmp=""
  fi
  if [[ -z $tmp || -e $tmp ]]; then
    for ext in "" -wal -shm -journal; do
      if [[ -n $aside && -e $aside$ext && ! -e $db$ext ]]; then
        mv -- "$aside$ext" "$db$ext" || keel_die "$KEEL_EX_FAIL" "cannot move $aside$ext back to $db$ext"
      fi
    done
    # Checked before the copy is removed: with neither the DB nor its aside, the copy may be all
    # there is.
    [[ -e $db || -z $aside ]] || keel_die "$KEEL_EX_FAIL" "rolling back an interrupted restore or adopt of $db: the previous DB $aside is not there to put back" \
      "inspect $dir by hand (ls -la $dir); the marker $marker and the copy $tmp are kept, so the engine does not start"
    [[ -z $tmp ]] || rm -f -- "$tmp" "$tmp-wal" "$tmp-shm" "$tmp-journal"
    keel_fsync "$dir"
    rm -f -- "$marker"
    keel_fsync "$dir"
    keel_info "an interrupted restore or adopt of $db was rolled back: ${aside:+$db is the DB it was before, with its -wal}${aside:-there was no DB before, and there is none now}"
  else
    # The copy is gone. It got DB's name only if DB is there and is not the previous file.
    if [[ ! -e $db ]] || { [[ -n $aside && -e $aside ]] && [[ $db -ef $aside ]]; }; then
      keel_die "$KEEL_EX_FAIL" "an interrupted restore or adopt of $db left neither its copy nor a new $db" \
        "inspect $dir by hand (ls -la $dir); the marker $marker is kept, so the engine does not start"
    fi
    rm -f -- "$marker"
    keel_fsync "$dir"
    keel_info "an interrupted restore or adopt of $db was completed: $db is the new DB${aside:+; the previous one is $aside}"
  fi
}

# keel_install_db TMP DB TAG — renames TMP (in DB's directory, verified, fsynced) to DB. An
# existing DB is moved aside as DB.TAG-<utc> together with its -wal/-shm/-journal, which must not
# meet the new file: renames only, never a second name for the live inode, so the aside is the
# old DB exactly and nothing written later reaches it. Under the swap lock and its marker (above).
# Sets KEEL_ASIDE to the aside path (empty if there was nothing to keep).
KEEL_ASIDE=""
keel_install_db() {
  local tmp=$1 db=$2 tag=$3 aside="" ext try marker dir
  dir=$(dirname -- "$db")
  keel_swap_lock "$db"
  keel_swap_recover "$db"
  # Under the lock, just before the first rename: nothing may hold the DB (a start that slipped in
  # between the caller's own check and now would keep writing to the file moved aside).
  keel_require_unused "$db"
  for ext in "" -wal -shm -journal; do
    if [[ -e $db$ext ]]; then aside=1; fi
  done
  if [[ -n $aside ]]; then
    # One name per second; a second run within the same second waits for the next one.
    for try in 1 2 3; do
      aside="$db.$tag-$(keel_utc_stamp)"
      [[ -e $aside || -e $aside-wal ]] || break
      [[ $try -eq 3 ]] || sleep 1
    done
    [[ ! -e $aside && ! -e $aside-wal ]] || keel_die "$KEEL_EX_FAIL" "$aside already exists" "wait a second and run again"
  fi
  marker=$(keel_swap_marker "$db")
  # From the marker on, only a recover removes the copy: a signal's cleanup would otherwise delete
  # it while the marker names it, and the previous DB already moved aside.
  keel_cleanup_forget "$tmp"
  keel_cleanup_forget "$tmp-wal"
  keel_cleanup_forget "$tmp-shm"
  KEEL_SIGNAL_NOTE=" while it swapped $db: the engine does not start until sudo keel-ops recover (db-gate.sh recover) finishes or rolls back the swap"
  printf 'tmp=%s\naside=%s\n' "$tmp" "$aside" >"$marker.new" || keel_die "$KEEL_EX_FAIL" "cannot write $marker.new (disk full?)"
  keel_fsync "$marker.new"
  mv -f -- "$marker.new" "$marker" || keel_die "$KEEL_EX_FAIL" "cannot create the swap marker $marker"
  keel_fsync "$dir"
  if [[ -n $aside ]]; then
    for ext in "" -wal -shm -journal; do
      if [[ -e $db$ext ]]; then
        mv -- "$db$ext" "$aside$ext" || keel_die "$KEEL_EX_FAIL" "cannot move $db$ext aside to $aside$ext" "sudo keel-ops recover (puts it back)"
      fi
    done
  fi
  # shellcheck disable=SC2034 # read by the scripts that source this file
  KEEL_ASIDE=$aside
  mv -f -- "$tmp" "$db" || keel_die "$KEEL_EX_FAIL" "cannot rename $tmp to $db" "sudo keel-ops recover (puts the previous DB back)"
  keel_fsync "$dir"
  rm -f -- "$marker"
  keel_fsync "$dir"
  KEEL_SIGNAL_NOTE=""
  exec 7>&-
}
