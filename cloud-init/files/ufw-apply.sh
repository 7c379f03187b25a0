#!/usr/bin/env bash
# keel: makes UFW deny every inbound connection except SSH from the allowed sources (and, with
# keel:https, Caddy's ports from anywhere), allow outgoing, and be enabled. Keel owns UFW's rule list: a rule added by hand is removed on the next run.
# Installed as /usr/local/lib/keel/ufw-apply; run by cloud-init on first boot and by `pulumi up`
# whenever /etc/keel/ufw-ssh.conf changes. Idempotent: a second run changes nothing.
# Usage: ufw-apply FILE   (FILE: a "port N" line per SSH port (two while the port moves:
#                          keel:sshPortNext), then one "allow CIDR" line per source, then with
#                          keel:https an "open N" line per port open to anyone)
# Exit: 0 applied; 1 ufw failed; 2 usage or a malformed FILE.
set -euo pipefail

fail() {
  echo "keel ufw-apply: $*" >&2
  exit 2
}

[[ $# -eq 1 ]] || fail "usage: ufw-apply FILE (see /etc/keel/ufw-ssh.conf)"
[[ -r $1 ]] || fail "cannot read $1; it is placed by keel (cloud-init or pulumi up)"

ports=()
sources=()
opens=()
while read -r word value extra; do
  [[ -z $word || $word == \#* ]] && continue
  [[ -z $extra ]] || fail "$1: unexpected text after '$word $value'"
  case $word in
    port)
      if ! [[ $value =~ ^[0-9]{1,5}$ ]] || ((value < 1 || value > 65535)); then
        fail "$1: bad port '$value'"
      fi
      ports+=("$value")
      ;;
    allow)
      [[ $value =~ ^[0-9A-Fa-f.:]+/[0-9]{1,3}$ ]] || fail "$1: bad source '$value' (a CIDR such as 203.0.113.7/32)"
      sources+=("$value")
      ;;
    open)
      # keel:https's ports only: any other port open to anyone is refused here too.
      [[ $value == 80 || $value == 443 ]] || fail "$1: bad open port '$value' (keel:https opens 80 and 443 only)"
      opens+=("$value")
      ;;
    *) fail "$1: unknown line '$word'" ;;
  esac
done <"$1"
((${#ports[@]})) || fail "$1: no 'port' line"
((${#ports[@]} <= 2)) || fail "$1: ${#ports[@]} 'port' lines; SSH is served on one port, two while it moves"
((${#sources[@]})) || fail "$1: no 'allow' line; refusing to lock SSH out"

# The rules as `ufw show added` prints them, so what exists can be compared with what is wanted.
# ufw prints sources in its own form (no /32 or /128, IPv4 networks without host bits): ask ufw's
# own code, with the interpreter ufw itself runs on.
# One Python start for all of them.
mapfile -t forms < <(/usr/bin/python3 -c '
import sys
from ufw.util import normalize_address
for a in sys.argv[1:]:
    print(normalize_address(a, ":" in a)[0])' "${sources[@]}")
((${#forms[@]} == ${#sources[@]})) || { echo "keel ufw-apply: ufw could not read the sources ${sources[*]}" >&2; exit 1; }
wanted=()
for port in "${ports[@]}"; do
  for form in "${forms[@]}"; do
    wanted+=("allow from $form to any port $port proto tcp comment 'keel-ssh'")
  done
done
for port in "${opens[@]}"; do
  wanted+=("allow $port/tcp comment 'keel-https'")
done

# Each ufw command is a Python start, and on an active firewall `ufw default` reloads it: ask only
# for what is not so already (a slow small server, and every first boot, feel each one).
# ufw reads the file's last assignment of each key.
default_is() { [[ $(sed -n "s/^$1=//p" /etc/default/ufw 2>/dev/null | tail -n 1) == "\"$2\"" ]]; }
default_is DEFAULT_INPUT_POLICY DROP || ufw default deny incoming >/dev/null
default_is DEFAULT_OUTPUT_POLICY ACCEPT || ufw default allow outgoing >/dev/null
default_is DEFAULT_FORWARD_POLICY DROP || ufw default deny routed >/dev/null

# The rules there are now, into `existing`, as `ufw show added` prints them.
read_rules() { mapfile -t existing < <(ufw show added | sed -n 's/^ufw //p'); }
read_rules
has_rule() {
  local rule
  for rule in "${existing[@]}"; do [[ $rule == "$1" ]] && return 0; done
  return 1
}
# The wanted rules first, so SSH is never without one while others are removed.
i=0 added=0
for port in "${ports[@]}"; do
  for src in "${sources[@]}"; do
    if ! has_rule "${wanted[i]}"; then
      ufw allow proto tcp from "$src" to any port "$port" comment keel-ssh >/dev/null
      added=1
    fi
    i=$((i + 1))
  done
done
for port in "${opens[@]}"; do
  if ! has_rule "${wanted[i]}"; then
    ufw allow proto tcp to any port "$port" comment keel-https >/dev/null
    added=1
  fi
  i=$((i + 1))
done
# An allow may have rewritten a rule in place (the same rule without keel's comment): what is
# removed below is read after the adds, never from before them.
((added == 0)) || read_rules

for rule in "${existing[@]}"; do
  keep=no
  for want in "${wanted[@]}"; do
    [[ $rule == "$want" ]] && keep=yes
  done
  if [[ $keep == no ]]; then
    echo "keel ufw-apply: removing a rule that is not keel's: ufw $rule" >&2
    # ufw matches a rule without its comment; the rest is ufw's own printout, one word per field.
    read -ra words <<<"${rule% comment *}"
    ufw delete "${words[@]}" >/dev/null
  fi
done

ufw --force enable >/dev/null
# Enabling (re)loads UFW, which applies its own /etc/ufw/sysctl.conf and turns log_martians off
# again: put the sysctl.d values back (keel's sorts last), as ufw.service's keel drop-in does at boot.
/usr/lib/systemd/systemd-sysctl
echo "keel ufw-apply: inbound denied except tcp/${ports[*]} from ${sources[*]}${opens[*]:+ and tcp/${opens[*]} from anywhere}; UFW enabled"
