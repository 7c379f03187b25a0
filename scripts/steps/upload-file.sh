#!/usr/bin/env bash
# keel upload (the Pulumi executor's upload steps, on the operator's machine): copies the file a
# local step chose to the host over SSH, as the deploy user, with the keys in ssh-agent and the
# server's pinned host key only; the same connection every remote step makes. A local.Command
# rather than a CopyToRemote: a FileAsset's file is read and hashed by every later preview and
# up, long after the copy, so a moved or deleted source (or another machine, CI) breaks them all.
#
# Usage: upload-file.sh HOST PORT USER REMOTE_PATH
#   stdin:          the local step's result, "<sha256>  <absolute path>" (its last line)
#   KEEL_HOST_KEY:  the pinned host public key, "ssh-ed25519 AAAA…"
# The file must still have that sha256 (it was proven by the local step; a file changed since is
# refused). On the host it is written to REMOTE_PATH.partial (umask 077), its sha256 compared, and
# only then renamed to REMOTE_PATH; a mismatch removes it.
# Exit: 0 copied and verified; 1 the copy failed (why on stderr); 2 usage; 3 the local file is
#       missing or changed since the local step chose it.
set -euo pipefail

PROG=keel-upload
fail() {
  local code=$1
  shift
  echo "$PROG: $*" >&2
  exit "$code"
}
# HOST is the server's address from Hetzner (IPv4 or IPv6), USER a config-checked user name: both
# are checked again here, since they reach ssh's argv and REMOTE_PATH the remote shell.
[[ $# -eq 4 && $1 =~ ^[0-9A-Fa-f.:]+$ && $2 =~ ^[0-9]+$ && $3 =~ ^[a-z_][a-z0-9_-]*$ && $4 == /* && $4 =~ ^[A-Za-z0-9_./-]+$ ]] ||
  fail 2 "usage: upload-file.sh HOST PORT USER REMOTE_PATH (stdin: '<sha256>  <path>'; KEEL_HOST_KEY: the pinned host key)"
host=$1 port=$2 user=$3 remote=$4
[[ ${KEEL_HOST_KEY:-} =~ ^ssh-ed25519\ [A-Za-z0-9+/=]+$ ]] || fail 2 "KEEL_HOST_KEY must be the pinned host key, 'ssh-ed25519 AAAA…'"

result=$(tail -n 1)
[[ $result =~ ^([0-9a-f]{64})\ \ (/.*)$ ]] || fail 2 "stdin: expected the local step's result '<sha256>  <absolute path>'"
want=${BASH_REMATCH[1]} file=${BASH_REMATCH[2]}
# The step before this one runs again only when its own inputs change, not when this one fails.
again="put the file back, or have that step choose again: pulumi up --replace <URN of the step before this one> (pulumi stack --show-urns | grep -- '-db-migrate-source\$'); if the DB was adopted already, pulumi config rm keel:migrateFrom instead (docs/DATABASE.md)"
[[ -f $file ]] || fail 3 "$file is gone; it was chosen by the step before this one, and nothing was copied. To go on: $again"
have=$(sha256sum -- "$file") have=${have%% *}
[[ $have == "$want" ]] || fail 3 "$file changed since the step before this one proved it (sha256 $have, proven $want); nothing was copied. To go on: $again"

known_hosts=$(mktemp)
trap 'rm -f "$known_hosts"' EXIT
if [[ $port == 22 ]]; then echo "$host $KEEL_HOST_KEY" >"$known_hosts"; else echo "[$host]:$port $KEEL_HOST_KEY" >"$known_hosts"; fi

# On the host: write, compare, rename; a failed write or a mismatch removes the partial file
# (a dropped connection may leave it: the next copy overwrites it).
remote_cmd="umask 077 && { cat > $remote.partial || { rm -f $remote.partial; exit 1; }; } && set -- \$(sha256sum $remote.partial) && if [ \"\$1\" = $want ]; then mv -f $remote.partial $remote; else rm -f $remote.partial; echo \"sha256 on the host is \$1, expected $want\" >&2; exit 1; fi"
# Keepalives: a stalled connection ends in about a minute rather than holding the step (and its
# customTimeouts, which end only the provider's /bin/sh) forever.
if ! ssh -F /dev/null -p "$port" -o BatchMode=yes -o ConnectTimeout=15 -o ServerAliveInterval=15 -o ServerAliveCountMax=4 \
  -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$known_hosts" -o GlobalKnownHostsFile=/dev/null -o LogLevel=ERROR \
  -- "$user@$host" "$remote_cmd" <"$file"; then
  fail 1 "copying $file to $remote on $host failed (error above); nothing was put in place. Run pulumi up again"
fi
echo "upload: $file ($have) is $remote on the host"
