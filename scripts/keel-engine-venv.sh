#!/usr/bin/env bash
# keel-engine-venv (seed 000 §2): the engine's venv from the system Python and the repository's
# requirements lock file. Installed as /usr/local/sbin/keel-engine-venv; runs as root only to
# swap directories: python and pip run as BUILD_USER, never as root.
#
# Usage: keel-engine-venv BUILD_USER APP_DIR COMMIT REQUIREMENTS VENV PYTHON_VERSION
#   BUILD_USER      owns APP_DIR and VENV (the deploy user); builds the venv
#   APP_DIR         the checkout, which must be at COMMIT
#   REQUIREMENTS    the lock file, relative to APP_DIR
#   VENV            the venv's path; its parent holds the build while it runs
#   PYTHON_VERSION  major.minor the system python3 must be
#
# VENV/keel-venv.txt records what the venv was built from (Python, the lock file's sha256, the pip
# options) and VENV/keel-freeze.txt what `pip freeze` found in it. When the record matches, the
# venv is left alone. Otherwise a new venv is built beside VENV and swapped in, so the running
# engine keeps a whole venv until the start step restarts it. The build runs in a private mount
# namespace with the new directory mounted on VENV, so every path pip writes (script shebangs,
# pyvenv.cfg) is already the final one. A lock file with hashes is installed with
# --require-hashes --no-deps: nothing unpinned, nothing unhashed.
#
# Exit: 0 the venv matches the lock file (says whether it was rebuilt); 1 the build failed (the old
#       venv stays); 2 usage; 3 the checkout is not at COMMIT or lacks REQUIREMENTS (the source
#       step must run first); 4 the system python3 is not PYTHON_VERSION.
set -euo pipefail

PROG=keel-engine-venv
usage() {
  echo "usage: $PROG BUILD_USER APP_DIR COMMIT REQUIREMENTS VENV PYTHON_VERSION" >&2
  exit 2
}
fail() {
  local code=$1
  shift
  echo "$PROG: $*" >&2
  exit "$code"
}
# Runs a command as the build user with a clean environment.
as_user() {
  runuser -u "$user" -- env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$home" LANG=C.UTF-8 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_NO_CACHE_DIR=1 "$@"
}

self=$(readlink -f -- "${BASH_SOURCE[0]}")
# The engine's user reads the venv: whatever umask sudo passed on, the venv is world-readable.
umask 022

# Phase 2, inside the private mount namespace: the empty new directory is mounted on VENV.
if [[ ${1:-} == --build-in-namespace ]]; then
  shift
  new=$1 venv=$2 user=$3 home=$4 req=$5 install_opts=$6 record=$7
  mount --bind -- "$new" "$venv"
  as_user python3 -m venv -- "$venv"
  if grep -Eq '^[[:space:]]*[^#[:space:]]' -- "$req"; then
    # shellcheck disable=SC2086 # install_opts is a fixed list of plain flags
    as_user "$venv/bin/python" -m pip install --quiet $install_opts --requirement "$req"
  fi
  as_user "$venv/bin/python" -m pip freeze | as_user tee -- "$venv/keel-freeze.txt" >/dev/null
  printf '%s' "$record" | as_user tee -- "$venv/keel-venv.txt" >/dev/null
  exit 0
fi

[[ $# -eq 6 && $3 =~ ^[0-9a-f]{40}$ && $2 == /* && $5 == /* && $6 =~ ^3\.[0-9]+$ ]] || usage
[[ $4 =~ ^[A-Za-z0-9._/-]+$ && $4 != /* && ! $4 =~ (^|/)\.\.(/|$) ]] || usage
user=$1 app_dir=$2 commit=$3 requirements=$4 venv=$5 python_version=$6
[[ $(id -u) -eq 0 ]] || fail 2 "run as root (sudo $PROG ...): it swaps directories it does not own"
uid=$(id -u -- "$user" 2>/dev/null) || fail 2 "no user $user on this host"
[[ $uid -ne 0 ]] || fail 2 "refusing to build as root: pip would run the repository's code as root"
home=$(getent passwd "$user" | cut -d: -f6)
[[ -d $venv && $(stat -c %U -- "$venv") == "$user" && $(stat -c %U -- "$app_dir") == "$user" ]] ||
  fail 3 "$venv and $app_dir must exist and belong to $user; the layout step creates them. Run pulumi up again from the start"

found=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[[ $found == "$python_version" ]] ||
  fail 4 "the system python3 is $found, keel:pythonVersion pins $python_version; the venv is left as it is. Fix keel:pythonVersion or the image, then run pulumi up again"

# The checkout's HEAD, read as a file: root runs nothing from the deploy user's repository.
head=$(cat -- "$app_dir/.git/HEAD" 2>/dev/null || true)
[[ $head == "$commit" ]] ||
  fail 3 "$app_dir is at ${head:-no commit}, expected $commit; the engine-source step must run first (run pulumi up again)"
req=$app_dir/$requirements
[[ -f $req && ! -L $req ]] ||
  fail 3 "$requirements is not a file in $commit; fix keel:requirementsFile or add the lock file to the repository"

install_opts=""
mode="no hashes"
if grep -Eq -- '--hash[= ]' "$req"; then
  install_opts="--require-hashes --no-deps"
  mode="--require-hashes --no-deps"
fi
record="# Written by keel-engine-venv: the venv is rebuilt when this changes.
python $python_version
requirements $requirements sha256 $(sha256sum -- "$req" | cut -d' ' -f1)
install $mode
"

if [[ -f $venv/keel-venv.txt && $(cat -- "$venv/keel-venv.txt") == "${record%$'\n'}" ]] &&
  as_user "$venv/bin/python" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)' 2>/dev/null; then
  echo "venv: $venv already built from $requirements ($mode), nothing changed"
  exit 0
fi

parent=$(dirname -- "$venv")
new=$parent/.$(basename -- "$venv").new
old=$parent/.$(basename -- "$venv").old
rm -rf -- "$new" "$old"
install -d -o "$user" -g "$(id -gn -- "$user")" -m 0755 -- "$new"
if ! unshare --mount --propagation private -- bash "$self" --build-in-namespace "$new" "$venv" "$user" "$home" "$req" "$install_opts" "$record"; then
  rm -rf -- "$new"
  fail 1 "building the venv from $requirements failed (pip's error above); the previous venv is unchanged. Fix the lock file in the repository, then run pulumi up again"
fi

# Swap: the old venv moves aside, the new one takes its path, the old one goes.
mv -T -- "$venv" "$old"
mv -T -- "$new" "$venv"
rm -rf -- "$old"
echo "venv: built $venv from $requirements ($mode) with python $found:"
sed 's/^/  /' -- "$venv/keel-freeze.txt"
echo "venv: $(grep -c . -- "$venv/keel-freeze.txt" || true) package(s) installed"
