#!/usr/bin/env bash
# compliance.sh — keel compliance: OpenSCAP with the ANSSI BP-028 profile as keel tailors it
# (compliance/keel-anssi-bp28.tailoring.xml), evaluated on the live host of the stack outputs by
# keel-compliance, as root through the deploy user's sudo. docs/COMPLIANCE.md "On a live host".
#
# The content is the pinned ssg-debian package (compliance/content.ts); the host's keel-compliance
# must name the same (keel-compliance content). This script downloads it once into
# ~/.cache/keel/compliance/ (the benchmark's cache too), checks its sha256 and sends it to the
# host on stdin; the host checks it again and refuses any other bytes. The host installs openscap-scanner from its own apt sources the first time, evaluates,
# records the result under /var/lib/keel/compliance/ (keel verify's compliance check reads it) and
# prints the counts and each rule that failed. The engine keeps running; the scan takes some
# minutes of one CPU.
#
# Usage: scripts/runbook/compliance.sh [--stack FILE|-] [--level intermediary|enhanced] [--content FILE]
#   --level    the ANSSI BP-028 level (default intermediary, the one keel verify reports)
#   --content  the ssg-debian package, already downloaded (checked against the host's sha256)
# Exit: 0 every rule the tailored profile selects was decided and none failed; 1 a rule failed or
#       was not decided (the result is recorded on the host); 2 usage, or the content or the host
#       refused (nothing changed); 3 stack outputs missing, the host without keel-compliance or
#       with another keel's, the download failed, or the evaluation broke; 255 ssh failed.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# Exit 1 means a rule failed on the host: any command of this script's own that fails exits 3.
trap 'rb_die 3 "failed at line $LINENO (above); nothing was evaluated"' ERR

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
      [[ $# -ge 2 && -f $2 && -r $2 ]] || rb_die 2 "--content needs a readable file (the ssg-debian package)"
      content=$2
      shift
      ;;
    *) rb_die 2 "usage: $RB_PROG [--stack FILE|-] [--level intermediary|enhanced] [--content FILE]" ;;
  esac
  shift
done
rb_load_stack

# The content keel was measured with (compliance/content.ts SSG_PACKAGE; test/unit/compliance.test.ts
# keeps these equal). The host must name the same: this machine downloads nothing a host chooses.
SSG="ssg-debian 0.1.76-1 http://deb.debian.org/debian/pool/main/s/scap-security-guide/ssg-debian_0.1.76-1_all.deb f6880719015c16e8e221bc2503c0e5a9f83d6a09fc6f9292d3522e46bf4fc9d7"
read -r name version url sha256 <<<"$SSG"
want=$(rb_ssh -- "$(rb_tool compliance)" content </dev/null) && rc=0 || rc=$?
[[ $rc -ne 255 ]] || exit 255
[[ $rc -eq 0 ]] || rb_die 3 "$(rb_tool compliance) did not answer: a host last converged by a keel without it (pulumi up first)"
[[ $want == "$SSG" ]] || rb_die 3 "the host's keel-compliance takes '$want', this keel '$SSG': the host was converged by another keel (pulumi up with this one first)"

if [[ -z $content ]]; then
  cache="$HOME/.cache/keel/compliance"
  content="$cache/${url##*/}"
  if [[ ! -f $content ]]; then
    mkdir -p "$cache"
    echo "$RB_PROG: downloading $name $version from $url" >&2
    curl -fsS --max-time 300 -o "$content.part" "$url" || rb_die 3 "could not download $url (curl above); or give the package with --content FILE"
    got=$(rb_sha256 "$content.part")
    if [[ $got != "$sha256" ]]; then
      rm -f "$content.part"
      rb_die 3 "$url gave a file with sha256 $got, not $sha256 ($name $version): not kept; try again, or give the package with --content FILE"
    fi
    mv "$content.part" "$content"
  fi
  got=$(rb_sha256 "$content")
  [[ $got == "$sha256" ]] || rb_die 2 "$content (the cache) is not $name $version (sha256 $got, expected $sha256): remove it and run again to download it anew"
else
  got=$(rb_sha256 "$content")
  [[ $got == "$sha256" ]] || rb_die 2 "--content $content is not $name $version (sha256 $got, expected $sha256): give $url"
fi

echo "$RB_PROG: evaluating ANSSI BP-028 $level as keel tailors it on $RB_ADDRESS (some minutes)" >&2
out=$(mktemp)
trap 'rm -f "$out"' EXIT
rb_ssh -- sudo "$(rb_tool compliance)" run --level "$level" <"$content" | tee "$out" && rc=0 || rc=${PIPESTATUS[0]}
case $rc in
  0) exit 0 ;;
  # keel-compliance exits 1 with its result recorded; without the record, sudo or the tool broke.
  1) grep -q "^keel-compliance: recorded in " "$out" || rb_die 3 "keel-compliance on the host failed (exit 1, above)"
     rb_die 1 "the tailored profile does not pass on $RB_ADDRESS (the rules above); docs/COMPLIANCE.md says what each decision covers" ;;
  2) rb_die 2 "the host refused to evaluate (above); nothing was changed" ;;
  255) exit 255 ;;
  *) rb_die 3 "keel-compliance on the host failed (exit $rc, above); nothing was recorded" ;;
esac
