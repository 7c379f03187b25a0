#!/usr/bin/env bash
# Build a Debian VM image that looks like a Hetzner cloud image, plus what an offline VM needs:
# an apt repository inside the image holding REPO_PACKAGEs and their dependencies, and
# cloud-init settings for a NoCloud seed. Output in OUTDIR: image.qcow2 (ext4 on the whole disk,
# label keel-root, no bootloader), vmlinuz + initrd.img for qemu's direct kernel boot,
# packages.txt (installed), repo-packages.txt (offline repo), kernel-version, build-seconds.
#
# Usage: build-image.sh bookworm|trixie OUTDIR [REPO_PACKAGE...]
# Exit codes: 0 built, or already built by an earlier run; 1 build failed; 2 usage error.
#
# Concurrent runs for the same OUTDIR are serialised by a lock on OUTDIR.lock; the image is built
# in a temporary directory beside OUTDIR and renamed into place, so OUTDIR is complete or absent.
# Network: only the Debian mirror below. Needs root (debootstrap, chroot, mke2fs -d).
set -euo pipefail

readonly MIRROR=http://deb.debian.org/debian
readonly SECURITY_MIRROR=http://deb.debian.org/debian-security
readonly ROOT_LABEL=keel-root
readonly REPO_DIR=/var/lib/keel-offline-repo
# The VM-only files baked into the image (local/vm/guest/).
guest_dir=$(cd -P -- "$(dirname -- "$0")/guest" && pwd)
readonly guest_dir

usage() {
  echo "usage: build-image.sh bookworm|trixie OUTDIR [REPO_PACKAGE...]" >&2
  exit 2
}

die() {
  echo "build-image: $*" >&2
  exit 1
}

[[ $# -ge 2 ]] || usage
release=$1
outdir=$2
shift 2
case $release in
  bookworm | trixie) ;;
  *) usage ;;
esac
[[ $EUID -eq 0 ]] || die "must run as root (debootstrap, chroot and mke2fs -d need it); rerun with sudo"

# Mounts made below live in a private mount namespace: they vanish with this process, whatever
# way it ends, and never show up on the host.
if [[ -z ${KEEL_BUILD_IN_NAMESPACE:-} ]]; then
  KEEL_BUILD_IN_NAMESPACE=1 exec unshare --mount --propagation private -- bash "$0" "$release" "$outdir" "$@"
fi

for tool in debootstrap dpkg-scanpackages apt-ftparchive mke2fs qemu-img flock; do
  command -v "$tool" >/dev/null || die "$tool not found; install: apt-get install debootstrap dpkg-dev apt-utils e2fsprogs qemu-utils util-linux"
done

# What a Hetzner Debian image has (a kernel, systemd, sshd with sftp, cloud-init, sudo, python3,
# AppArmor, ifupdown networking that cloud-init renders), plus locales so cloud-init's locale
# module succeeds. Installed without recommends, so nothing else (an MTA, firmware) slows the
# first boot; what a recommends chain would bring that matters is listed here.
base_packages=(
  systemd-sysv udev dbus libpam-systemd linux-image-amd64 initramfs-tools busybox zstd apparmor
  openssh-server openssh-sftp-server cloud-init cloud-guest-utils sudo python3
  ifupdown isc-dhcp-client iproute2 iputils-ping netbase
  locales ca-certificates apt-utils systemd-timesyncd
  cron logrotate procps less kmod e2fsprogs
)

mkdir -p "$(dirname "$outdir")"
exec 9>"$outdir.lock"
flock 9
if [[ -d $outdir ]]; then
  echo "build-image: $outdir already built" >&2
  exit 0
fi

# Holding the lock, any temporary directory left beside OUTDIR is from a killed build.
find "$(dirname "$outdir")" -maxdepth 1 -name "${outdir##*/}.tmp.*" -exec rm -rf --one-file-system {} +

started=$SECONDS
work=$(mktemp -d "$outdir.tmp.XXXXXX")
root=$work/rootfs

unmount_chroot() {
  local m
  for m in dev/pts proc sys; do
    if mountpoint -q "$root/$m" 2>/dev/null; then umount -l "$root/$m"; fi
  done
}

cleanup() {
  unmount_chroot
  # --one-file-system: never descend into anything still mounted inside the chroot.
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
# A TERM or INT ends the build through the EXIT trap, so the temporary directory goes too.
trap 'exit 143' TERM INT

in_chroot() {
  DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 chroot "$root" "$@"
}

echo "build-image: debootstrap $release (minbase) from $MIRROR" >&2
# A small base only: debootstrap's resolver fails on virtual packages (cloud-init ->
# python3-cryptography -> python3-cffi-backend-api-*), apt in the chroot resolves the rest.
debootstrap --variant=minbase "$release" "$root" "$MIRROR"

# Before the kernel's initramfs is made, so it includes fsck for the root filesystem.
cat >"$root/etc/fstab" <<EOF
LABEL=$ROOT_LABEL / ext4 errors=remount-ro 0 1
EOF

cat >"$root/etc/apt/sources.list" <<EOF
deb $MIRROR $release main
deb $MIRROR $release-updates main
deb $SECURITY_MIRROR $release-security main
EOF

# No daemon starts inside the chroot.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount -t devpts -o newinstance devpts "$root/dev/pts"

echo "build-image: installing the base packages" >&2
in_chroot apt-get update
in_chroot apt-get -y dist-upgrade
in_chroot apt-get -y install --no-install-recommends "${base_packages[@]}"

sed -i 's/^# *\(en_US.UTF-8 UTF-8\)/\1/' "$root/etc/locale.gen"
in_chroot locale-gen
in_chroot update-locale LANG=en_US.UTF-8

echo "build-image: offline repository with ${#} requested packages" >&2
mkdir -p "$root$REPO_DIR"
if [[ $# -gt 0 ]]; then
  in_chroot apt-get clean
  # Dependencies not yet installed, as cloud-init's `apt-get install` would fetch them ...
  in_chroot apt-get -y install --download-only "$@"
  find "$root/var/cache/apt/archives" -maxdepth 1 -name '*.deb' -exec mv -t "$root$REPO_DIR" {} +
  # ... and every requested package itself, even when the base already has it.
  # shellcheck disable=SC2016 # expanded by the inner sh
  in_chroot sh -c 'cd "$0" && apt-get download "$@"' "$REPO_DIR" "$@"
fi
(
  cd "$root$REPO_DIR"
  dpkg-scanpackages --multiversion . /dev/null >Packages 2>/dev/null
  gzip -9nk Packages
  apt-ftparchive release . >"$work/Release"
  mv "$work/Release" Release
)
chown -R root:root "$root$REPO_DIR"

# Only the offline repository from now on: the VM has no network.
rm -f "$root/etc/apt/sources.list" "$root"/etc/apt/sources.list.d/*
cat >"$root/etc/apt/sources.list.d/keel-offline.sources" <<EOF
Types: deb
URIs: file:$REPO_DIR
Suites: ./
Trusted: yes
EOF
rm -rf "$root"/var/lib/apt/lists/*
in_chroot apt-get update
in_chroot apt-get clean

# The VM's time source (docs/VM.md "Time"): keel-vm-time relays timesyncd's NTP requests to the
# responder qemu forwards to on the machine running the VM, and steps the clock after a pause or a
# resume from a snapshot. timesyncd asks it only; a cloud image asks its vendor's NTP servers.
install -D -m 0755 "$guest_dir/keel-vm-time.py" "$root/usr/local/lib/keel-vm/keel-vm-time"
install -D -m 0644 "$guest_dir/keel-vm-time.service" "$root/etc/systemd/system/keel-vm-time.service"
install -D -m 0644 "$guest_dir/timesyncd-keel-vm.conf" "$root/etc/systemd/timesyncd.conf.d/90-keel-vm.conf"
mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
ln -sf ../keel-vm-time.service "$root/etc/systemd/system/multi-user.target.wants/keel-vm-time.service"

# Settings the real Hetzner image does not need but this offline VM does, kept out of the
# user-data so the VM gets exactly the user-data Hetzner would get.
cat >"$root/etc/cloud/cloud.cfg.d/90-keel-local-vm.cfg" <<EOF
# keel local VM: the seed is a NoCloud drive, and apt keeps the offline repository source.
datasource_list: [NoCloud, None]
apt:
  preserve_sources_list: true
EOF

kernel=$(find "$root/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n1)
[[ -n $kernel ]] || die "no kernel in $root/boot"
version=${kernel##*/vmlinuz-}
[[ -f $root/boot/initrd.img-$version ]] || die "no initrd for kernel $version"
install -m 0644 "$kernel" "$work/vmlinuz"
install -m 0644 "$root/boot/initrd.img-$version" "$work/initrd.img"
echo "$version" >"$work/kernel-version"
# shellcheck disable=SC2016 # dpkg-query's own format fields
in_chroot dpkg-query -W -f '${Package} ${Version}\n' >"$work/packages.txt"
(cd "$root$REPO_DIR" && find . -maxdepth 1 -name '*.deb' -printf '%f\n' | sort) >"$work/repo-packages.txt"

# Reset what the build baked in, as a cloud image does: the first boot makes these anew.
rm -f "$root/usr/sbin/policy-rc.d"
echo localhost >"$root/etc/hostname"
rm -f "$root/etc/resolv.conf"
: >"$root/etc/resolv.conf"
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
rm -f "$root"/etc/ssh/ssh_host_*
rm -rf "$root"/var/lib/cloud/* "$root"/var/log/cloud-init*
find "$root/var/log" -type f -delete
rm -rf "${root:?}"/tmp/* "${root:?}"/var/tmp/*
unmount_chroot

echo "build-image: writing the disk image" >&2
used_mib=$(du -sm --one-file-system "$root" | cut -f1)
size_mib=$((used_mib * 13 / 10 + 512))
mke2fs -q -t ext4 -L "$ROOT_LABEL" -d "$root" "$work/root.raw" "${size_mib}M"
qemu-img convert -f raw -O qcow2 "$work/root.raw" "$work/image.qcow2"
rm -f "$work/root.raw"
rm -rf --one-file-system "$root"

chmod 0755 "$work"
echo $((SECONDS - started)) >"$work/build-seconds"
mv -T "$work" "$outdir"
trap - EXIT
echo "build-image: built $outdir in $((SECONDS - started)) s" >&2
