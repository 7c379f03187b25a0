#!/usr/bin/env bash
# setup-bare-debian.sh — shows that scripts/dev/setup.js sets a bare Debian system up for keel's
# two commands: a debootstrap minbase of RELEASE (nothing but Debian's required packages) with this
# machine's Node.js and npm copied in, a copy of the repository, then `node scripts/dev/setup.js
# test` as root in that chroot. Prints what was missing before, what the set-up installed, the
# seconds it took, and what a second run says; fails if any listed package is missing afterwards
# or node_modules does not match the lockfile. Also checks the refusal as a user who is not root.
#
# Usage: bench/setup-bare-debian.sh [bookworm|trixie]     (npm run bench:setup)
# Needs root, debootstrap, and the Debian mirror and npm registry (it downloads both).
# Exit codes: 0 shown; 1 the set-up did not leave the chroot ready; 2 usage.
set -euo pipefail

release=${1:-bookworm}
case $release in bookworm | trixie) ;; *) echo "usage: bench/setup-bare-debian.sh [bookworm|trixie]" >&2; exit 2 ;; esac
[[ $EUID -eq 0 ]] || { echo "setup-bare-debian: needs root (debootstrap, chroot); run: sudo npm run bench:setup" >&2; exit 2; }

# Mounts live in a private mount namespace and vanish with this process.
if [[ -z ${KEEL_BENCH_IN_NAMESPACE:-} ]]; then
  KEEL_BENCH_IN_NAMESPACE=1 exec unshare --mount --propagation private -- bash "$0" "$@"
fi

repo=$(cd -P -- "$(dirname -- "$0")/.." && pwd)
work=$(mktemp -d /var/tmp/keel-bare-debian.XXXXXX)
root=$work/rootfs
cleanup() {
  local m
  for m in dev/pts dev proc sys; do mountpoint -q "$root/$m" 2>/dev/null && umount -l "$root/$m"; done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

echo "setup-bare-debian: debootstrap $release (minbase)" >&2
started=$SECONDS
debootstrap --variant=minbase "$release" "$root" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 ||
  { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
echo "setup-bare-debian: base system in $((SECONDS - started)) s" >&2
cat >"$root/etc/apt/sources.list" <<EOF
deb http://deb.debian.org/debian $release main
deb http://deb.debian.org/debian $release-updates main
deb http://deb.debian.org/debian-security $release-security main
EOF
cp /etc/resolv.conf "$root/etc/resolv.conf"
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount --rbind /dev "$root/dev"

# "Only Node.js and npm": this machine's node binary and npm package, nothing else of its.
node=$(command -v node)
npm_dir=$(cd -P -- "$(dirname -- "$(readlink -f "$(command -v npm)")")/.." && pwd)
install -D -m 0755 "$node" "$root/usr/local/bin/node"
mkdir -p "$root/usr/local/lib/node_modules"
cp -a "$npm_dir" "$root/usr/local/lib/node_modules/npm"
ln -s ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/local/bin/npm"
# A clone of the committed repository: what a newcomer has.
git clone -q "$repo" "$root/keel"
# A network that inspects TLS with a CA of its own (NODE_EXTRA_CA_CERTS here) needs the same trust in
# the chroot, or npm fails with SELF_SIGNED_CERT_IN_CHAIN; nothing else of this machine goes in.
extra_ca=()
if [[ -n ${NODE_EXTRA_CA_CERTS:-} && -r $NODE_EXTRA_CA_CERTS ]]; then
  install -D -m 0644 "$NODE_EXTRA_CA_CERTS" "$root/etc/keel-bench/extra-ca.pem"
  extra_ca=(NODE_EXTRA_CA_CERTS=/etc/keel-bench/extra-ca.pem)
fi
in_root() { chroot "$root" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "${extra_ca[@]}" "$@"; }

echo "setup-bare-debian: node $(in_root node --version), npm $(in_root npm --version)" >&2
# shellcheck disable=SC2016 # the $ fields are dpkg-query's, inside node's string
missing=$(in_root sh -c 'cd /keel && node -e "
  const s = require(\"./scripts/dev/setup.js\");
  const list = s.packagesFor(require(\"fs\").readFileSync(s.PACKAGE_LIST, \"utf8\"), \"test\");
  const q = require(\"child_process\").spawnSync(\"dpkg-query\", [\"-W\", \"-f\", \"\${Package} \${db:Status-Status}\\n\", ...list], { encoding: \"utf8\" });
  console.log(s.missingFrom(list, q.stdout).join(\" \"));
"')
echo "missing before: $(wc -w <<<"$missing") of the listed packages: $missing"

# As a user who is not root: refused, nothing changed.
in_root useradd -m newcomer
refusal=$(in_root setpriv --reuid=newcomer --regid=newcomer --init-groups sh -c 'cd /keel && HOME=/home/newcomer node scripts/dev/setup.js test' 2>&1) && { echo "setup-bare-debian: the set-up did not refuse a user who is not root" >&2; exit 1; }
echo "as a user who is not root: $(head -n1 <<<"$refusal")"
[[ ! -e $root/keel/node_modules ]] || { echo "setup-bare-debian: the refused run left node_modules behind" >&2; exit 1; }

started=$SECONDS
in_root sh -c 'cd /keel && node scripts/dev/setup.js test' >"$work/setup.log" 2>&1 || { tail -n 30 "$work/setup.log" >&2; exit 1; }
echo "set-up as root: $((SECONDS - started)) s; $(grep -c '^Setting up ' "$work/setup.log") packages set up by apt"
grep '^setup: ' "$work/setup.log"

again=$(in_root sh -c 'cd /keel && node scripts/dev/setup.js test' 2>&1)
echo "a second run: $again"
[[ $again == "setup: ready for npm test: "* ]] || { echo "setup-bare-debian: the second run still had work to do" >&2; exit 1; }
echo "setup-bare-debian: ok ($release)"
