#!/usr/bin/env bash
# bench/aide-native.sh — what a file-integrity baseline (AIDE, ANSSI BP-028's package_aide_installed
# and aide_build_database) would cost a keel host, at this machine's native speed rather than under
# qemu's TCG (issue 14, docs/COMPLIANCE.md "AIDE"). The compliance benchmark measures AIDE inside its
# VM, where TCG multiplies every figure many times; this runs Debian 12's own aide 0.18.3 on the
# file tree of a keel first boot, read-only:
#
#   bench/aide-native.sh DISK.qcow2
#
# DISK is a keel VM's disk after its first boot: the VM tier keeps one per test run under
# $TMPDIR/keel-test-run-*/first-boots/*/disk.qcow2 while it runs (test/vm/support/keelVm.ts). The
# disk is converted to a sparse raw copy, loop-mounted read-only (ext4, noload), and aide runs on it
# with root_prefix and Debian's attribute definitions (aide-common's aide.conf: Checksums = H, every
# hash aide was built with; Full for every file), over the whole tree but /proc, /sys, /dev, /run
# and /tmp — Debian's own rules narrow some paths (logs), so this is an upper bound. Prints the tree's
# size, the database's, and `aide --init` and `aide --check` wall clock and CPU time. Needs root
# (mount), qemu-img, GNU time (/usr/bin/time) and apt-get download (this machine's apt sources:
# Debian 12's aide, the version printed; the packages are not installed). Changes nothing on this
# machine outside its temporary directory.
set -euo pipefail

[[ $# -eq 1 && -f $1 ]] || { echo "usage: bench/aide-native.sh DISK.qcow2 (a keel VM's disk after first boot)" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "bench/aide-native.sh: needs root (a read-only loop mount)" >&2; exit 2; }
disk=$(realpath -- "$1")
work=$(mktemp -d "${TMPDIR:-/tmp}/keel-aide-native-XXXXXX")
mnt="$work/root"
cleanup() {
  mountpoint -q "$mnt" && umount "$mnt"
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$mnt" "$work/pkg"

(cd "$work/pkg" && apt-get download -q -o APT::Sandbox::User=root aide libmhash2 >/dev/null)
for deb in "$work"/pkg/*.deb; do dpkg-deb -x "$deb" "$work/pkg/x"; done
aide=("env" "LD_LIBRARY_PATH=$work/pkg/x/usr/lib/x86_64-linux-gnu" "$work/pkg/x/usr/bin/aide")
echo "aide: $("${aide[@]}" --version 2>&1 | head -1) ($(basename "$work"/pkg/aide_*.deb))"

qemu-img convert -O raw "$disk" "$work/disk.raw"
mount -o loop,ro,noload "$work/disk.raw" "$mnt"
echo "tree: $(du -sxh "$mnt" 2>/dev/null | cut -f1), $(find "$mnt" -xdev -type f | wc -l) files (a keel first boot: $disk)"

cat >"$work/aide.conf" <<EOF
root_prefix=$mnt
database_in=file:$work/aide.db
database_out=file:$work/aide.db.new
gzip_dbout=yes
Checksums = H
database_attrs = Checksums
OwnerMode = p+u+g+ftype
Size = s+b
InodeData = OwnerMode+n+i+Size+l+X
StaticFile = m+c+Checksums
Full = InodeData+StaticFile
!/proc
!/sys
!/dev
!/run
!/tmp
/ 0 Full
EOF

# timed LABEL MAX-EXIT ARGS...: wall clock and CPU time of one aide run (GNU time's format).
timed() {
  local label=$1 max=$2
  shift 2
  local out rc=0
  out=$({ /usr/bin/time -f '%e s wall, %U s user, %S s system, %M KiB peak' "${aide[@]}" --config "$work/aide.conf" "$@" >/dev/null; } 2>&1) || rc=$?
  # aide --check: 0 nothing changed, 1-7 added/removed/changed (aide(1)); more is an error.
  [[ $rc -le $max ]] || { echo "bench/aide-native.sh: aide $* exited $rc: $out" >&2; exit 1; }
  echo "$label ${out##*$'\n'} (exit $rc)"
}
timed "aide --init:" 0 --init
mv "$work/aide.db.new" "$work/aide.db"
echo "database: $(stat -c %s "$work/aide.db") bytes (gzip)"
timed "aide --check:" 7 --check
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg) (anything else running slows the wall clock)"
