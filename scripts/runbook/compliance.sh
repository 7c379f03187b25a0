#!/usr/bin/env bash
# compliance.sh — keel compliance: OpenSCAP with the ANSSI BP-028 profile as keel tailors it
# (compliance/keel-anssi-bp28.tailoring.xml), evaluated on the live host of the stack outputs by
# keel-compliance, as root through the deploy user's sudo. docs/COMPLIANCE.md "On a live host".
#
# The host names the content it takes (ssg-debian, version, URL, sha256; keel-compliance content).
# This script downloads it once into ~/.cache/keel/compliance/ (the benchmark's cache too), checks
# its sha256 and sends it to the host on stdin; the host checks it again and refuses any other
# bytes. The host installs openscap-scanner from its own apt sources the first time, evaluates,
# records the result under /var/lib/keel/compliance/ (keel verify's compliance check reads it) and
# prints the counts and each rule that failed. The engine keeps running; the scan takes some
# minutes of one CPU.
#
# Usage: scripts/runbook/compliance.sh [--stack FILE|-] [--level intermediary|enhanced] [--content FILE]
#   --level    the ANSSI BP-028 level (default intermediary, the one keel verify reports)
#   --content  the ssg-debian package, already downloaded (checked against the host's sha256)
# Exit: 0 every rule the tailored profile selects was decided and none failed; 1 a rule failed or
#       was not decided, or the evaluation broke; 2 usage, or the content refused; 3 stack outputs
#       missing; 255 ssh failed.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

rb_common_args "$@"
set -- ${RB_ARGS[@]+"${RB_ARGS[@]}"}
level=intermediary content=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --level)
      [[ $# -ge 2 && ($2 == intermediary || $2 == enhanced) ]] || rb_die 2 "--level takes intermediary or enhanced"
      level=$2
      shift
      ;;
    --content)
      [[ $# -ge 2 && -r $2 ]] || rb_die 2 "--content needs a readable file (the ssg-debian package)"
      content=$2
      shift
      ;;
    *) rb_die 2 "usage: $RB_PROG [--stack FILE|-] [--level intermediary|enhanced] [--content FILE]" ;;
  esac
  shift
done
rb_load_stack

# What the host takes: NAME VERSION URL SHA256.
want=$(rb_ssh -- "$(rb_tool compliance)" content </dev/null) ||
  rb_die 3 "$(rb_tool compliance) did not answer: a host last converged by a keel without it (pulumi up first), or ssh failed (above)"
read -r name version url sha256 <<<"$want"
[[ $sha256 =~ ^[0-9a-f]{64}$ && $url == http*://* ]] || rb_die 3 "$(rb_tool compliance) content gave '$want', not NAME VERSION URL SHA256"

if [[ -z $content ]]; then
  cache="$HOME/.cache/keel/compliance"
  content="$cache/${url##*/}"
  if [[ ! -f $content ]]; then
    mkdir -p "$cache"
    echo "$RB_PROG: downloading $name $version from $url" >&2
    curl -fsS --max-time 300 -o "$content.part" "$url" || rb_die 1 "could not download $url (curl above); or give the package with --content FILE"
    mv "$content.part" "$content"
  fi
fi
got=$(rb_sha256 "$content")
if [[ $got != "$sha256" ]]; then
  rb_die 2 "$content is not $name $version (sha256 $got; the host takes $sha256): remove it and run again to download $url, or give the right file with --content"
fi

echo "$RB_PROG: evaluating ANSSI BP-028 $level as keel tailors it on $RB_ADDRESS (some minutes)" >&2
rb_ssh -- sudo "$(rb_tool compliance)" run --level "$level" <"$content" && rc=0 || rc=$?
case $rc in
  0) exit 0 ;;
  1) rb_die 1 "the tailored profile does not pass on $RB_ADDRESS (the rules above); docs/COMPLIANCE.md says what each decision covers" ;;
  2) rb_die 2 "the host refused to evaluate (above); nothing was changed" ;;
  255) exit 255 ;;
  *) rb_die 1 "keel-compliance on the host failed (exit $rc, above)" ;;
esac
