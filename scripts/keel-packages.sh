#!/bin/bash
# keel-packages PACKAGE...: installs those of the given packages the host lacks, from its own apt
# sources; runs no apt at all when every one is installed. The "packages" step passes keel's
# first-boot packages (FIRST_BOOT_PACKAGES, cloud-init/hardening.ts), so a server first booted by
# an older keel, or one where somebody removed a package, gets what the hardening steps after it
# rely on (augenrules, debsums, ...). Run as root through sudo; prints what it did.
set -euo pipefail

PROG=keel-packages
die() {
  echo "$PROG: $*" >&2
  exit 1
}

[ $# -gt 0 ] || die "usage: $PROG PACKAGE... (Debian package names)"
for pkg in "$@"; do
  [[ $pkg =~ ^[a-z0-9][a-z0-9+.-]+$ ]] || die "'$pkg' is not a Debian package name"
done

# "ii " is installed and configured; "rc " (removed, config kept), a half-installed package or an
# unknown name count as missing.
installed() { [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null)" = "ii " ]; }

missing=()
for pkg in "$@"; do
  installed "$pkg" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "$PROG: all $# packages installed, nothing to do"
  exit 0
fi

[ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}; installing them needs root (sudo $PROG)"
echo "$PROG: missing ${missing[*]}; installing"
export DEBIAN_FRONTEND=noninteractive
# Wait up to 10 minutes for a running unattended-upgrades to let go of the dpkg lock; keep every
# configuration file as it is (keel's own files are placed by the steps after this one).
apt=(apt-get -q -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
"${apt[@]}" update || die "apt-get update failed; its messages above say why (an unreachable mirror, a full disk). Fix that, then run pulumi up again"
"${apt[@]}" install -y "${missing[@]}" || die "apt-get install ${missing[*]} failed; its messages above say why (a full disk, a held package, the dpkg lock). Fix that, then run pulumi up again"

still=()
for pkg in "${missing[@]}"; do
  installed "$pkg" || still+=("$pkg")
done
[ ${#still[@]} -eq 0 ] || die "apt-get succeeded but ${still[*]} is still not installed"
echo "$PROG: installed ${missing[*]}"
