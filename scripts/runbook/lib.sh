# shellcheck shell=bash
# lib.sh — sourced by the runbook's operator scripts (docs/RUNBOOK.md), never run.
#
# Everything about the host comes from the stack outputs (`pulumi stack output --json`), read from
#   --stack FILE     a file holding that JSON ("-": standard input), else
#   $KEEL_STACK_OUTPUT  the same, as a file path, else
#   pulumi stack output --json [--stack $KEEL_STACK]   run here (needs the Pulumi CLI and a login).
# SSH trusts only the pinned host key: the stack output knownHosts is written to keel_known_hosts
# ($KEEL_KNOWN_HOSTS to put it elsewhere) and ssh runs with StrictHostKeyChecking=yes against that
# file alone. A host presenting any other key is refused; nothing is ever trusted on first use.
# $KEEL_SSH_IDENTITY names a private key to log in with (default: ssh-agent / ssh's defaults).
#
# Exit codes shared by the scripts: 0 ok; 1 the remote action failed; 2 usage; 3 the stack outputs
# are missing or not what keel exports; 255 ssh could not connect (or the host key did not match).

RB_PROG=$(basename -- "$0")
RB_DIR=$(cd -P -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck disable=SC2034 # used by the scripts that source this file
RB_REPO=$(cd -P -- "$RB_DIR/../.." && pwd)

rb_die() { # rb_die CODE MESSAGE
  echo "$RB_PROG: $2" >&2
  exit "$1"
}

# rb_common_args "$@": takes --stack FILE off the front and answers -h/--help with the script's usage;
# sets RB_ARGS to the rest.
RB_STACK_FILE=""
rb_common_args() {
  RB_ARGS=()
  while [[ $# -gt 0 ]]; do
    case $1 in
      --stack)
        [[ $# -ge 2 ]] || rb_die 2 "--stack needs a file (or - for standard input)"
        RB_STACK_FILE=$2
        shift 2
        ;;
      # The script's usage: its header from "Usage:" to "Exit".
      -h | --help) sed -n 's/^# \{0,1\}//; /^Usage:/,/^Exit/p' "$0" >&2; exit 0 ;;
      # What follows -- is the script's (a command for connect.sh), as it is.
      --)
        RB_ARGS+=("$@")
        return
        ;;
      *)
        RB_ARGS+=("$1")
        shift
        ;;
    esac
  done
}

# Reads the stack outputs into RB_ADDRESS, RB_PORT, RB_USER, RB_SERVICE, RB_DB, RB_BACKUP_DIR,
# RB_TOOLS and writes the pinned known_hosts file RB_KNOWN_HOSTS.
rb_load_stack() {
  local json source=${RB_STACK_FILE:-${KEEL_STACK_OUTPUT:-}}
  if [[ $source == - ]]; then
    json=$(cat)
  elif [[ -n $source ]]; then
    [[ -r $source ]] || rb_die 3 "cannot read the stack outputs file $source"
    json=$(<"$source")
  else
    command -v pulumi >/dev/null || rb_die 3 "no stack outputs: give --stack FILE or KEEL_STACK_OUTPUT, or install the Pulumi CLI"
    json=$(pulumi stack output --json ${KEEL_STACK:+--stack "$KEEL_STACK"}) || rb_die 3 "pulumi stack output failed (logged in? right stack? KEEL_STACK=${KEEL_STACK:-unset})"
  fi
  command -v node >/dev/null || rb_die 3 "node is needed to read the stack outputs (keel's Pulumi program runs on it)"
  local fields=()
  # One value per NUL-terminated field, in this order; a missing output is an empty field.
  mapfile -d '' -t fields < <(node -e '
    let o;
    try {
      o = JSON.parse(require("fs").readFileSync(0, "utf8"));
    } catch {
      process.exit(1);
    }
    if (o === null || typeof o !== "object") process.exit(1);
    const p = o.paths || {};
    const v = [o.ipv4 || o.ipv6 || "", o.sshPort, o.deployUser, o.knownHosts, o.serviceName, p.db, p.backupDir, p.toolsDir];
    process.stdout.write(v.map((x) => (x === undefined || x === null ? "" : String(x)) + "\0").join(""));
  ' <<<"$json") || true
  [[ ${#fields[@]} -eq 8 ]] || rb_die 3 "the stack outputs are not JSON from keel's program (pulumi stack output --json)"
  RB_ADDRESS=${fields[0]} RB_PORT=${fields[1]} RB_USER=${fields[2]} RB_SERVICE=${fields[4]}
  RB_DB=${fields[5]} RB_BACKUP_DIR=${fields[6]} RB_TOOLS=${fields[7]}
  local known=${fields[3]}
  [[ $RB_ADDRESS =~ ^[0-9A-Fa-f.:]+$ ]] || rb_die 3 "the stack has no ipv4/ipv6 output (found '${RB_ADDRESS}'); has pulumi up finished?"
  [[ $RB_PORT =~ ^[0-9]+$ ]] || rb_die 3 "sshPort output '$RB_PORT' is not a port"
  [[ $RB_USER =~ ^[a-z_][a-z0-9_-]*$ ]] || rb_die 3 "deployUser output '$RB_USER' is not a user name"
  [[ $RB_SERVICE =~ ^[a-z][a-z0-9-]*\.service$ ]] || rb_die 3 "serviceName output '$RB_SERVICE' is not a unit name"
  local p
  for p in "$RB_DB" "$RB_BACKUP_DIR" "$RB_TOOLS"; do
    [[ $p =~ ^/[A-Za-z0-9._/-]+$ ]] || rb_die 3 "the paths output is incomplete (found '$p')"
  done
  [[ $known =~ ^[^[:space:]]+\ ssh-ed25519\ [A-Za-z0-9+/=]+(\ .*)?$ ]] ||
    rb_die 3 "knownHosts output is not a 'host ssh-ed25519 KEY' line; the host key must come from the stack, never from the host"
  RB_KNOWN_HOSTS=${KEEL_KNOWN_HOSTS:-keel_known_hosts}
  if [[ ! -f $RB_KNOWN_HOSTS || $(<"$RB_KNOWN_HOSTS") != "$known" ]]; then
    [[ ! -f $RB_KNOWN_HOSTS ]] || echo "$RB_PROG: $RB_KNOWN_HOSTS differs from the stack's knownHosts; rewriting it from the stack" >&2
    printf '%s\n' "$known" >"$RB_KNOWN_HOSTS.tmp"
    mv -f -- "$RB_KNOWN_HOSTS.tmp" "$RB_KNOWN_HOSTS"
  fi
}

# rb_ssh [SSH-OPTION…] -- [REMOTE COMMAND WORDS…]: ssh to the deploy user, the host key pinned.
rb_ssh() {
  local opts=()
  while [[ $# -gt 0 && $1 != -- ]]; do
    opts+=("$1")
    shift
  done
  [[ $# -eq 0 ]] || shift
  local id=()
  [[ -z ${KEEL_SSH_IDENTITY:-} ]] || id=(-i "$KEEL_SSH_IDENTITY" -o IdentitiesOnly=yes)
  # LogLevel=ERROR: the host's pre-login banner (sshd Banner) would precede every command's output;
  # errors, a refused host key among them, still print.
  ssh -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$RB_KNOWN_HOSTS" -o GlobalKnownHostsFile=/dev/null \
    -o UpdateHostKeys=no -o ConnectTimeout=20 -o ServerAliveInterval=15 -o LogLevel=ERROR \
    ${id[@]+"${id[@]}"} ${opts[@]+"${opts[@]}"} -p "$RB_PORT" "$RB_USER@$RB_ADDRESS" "$@"
}

# rb_tool NAME: the path of a keel tool on the host (run it with sudo).
rb_tool() { printf '%s/keel-%s' "$RB_TOOLS" "$1"; }

# rb_sha256 FILE: the hex sha256 of a local file (GNU coreutils or macOS).
rb_sha256() {
  if command -v sha256sum >/dev/null; then
    sha256sum -- "$1" | cut -d' ' -f1
  else
    shasum -a 256 -- "$1" | cut -d' ' -f1
  fi
}

# rb_confirm QUESTION: asks on a terminal (unless --yes was given: RB_YES=1); stops on anything but "yes".
RB_YES=0
rb_confirm() {
  [[ $RB_YES == 1 ]] && return 0
  [[ -t 0 ]] || rb_die 2 "$1 — not asked without a terminal; add --yes"
  local answer
  read -r -p "$1 Type yes to go on: " answer
  [[ $answer == yes ]] || rb_die 2 "stopped; nothing was changed"
}
