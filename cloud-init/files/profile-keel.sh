# shellcheck shell=sh
# keel: settings for interactive login shells. Installed as /etc/profile.d/keel.sh.
# Source: cloud-init/files/profile-keel.sh in the keel repository; edit it there, not here.

# An interactive shell left idle for 15 minutes logs out, so a forgotten session does not stay
# open. Read-only: a session cannot switch it off. The guard keeps a second reading of this file
# (a nested login shell) from tripping over the read-only value.
# Commands run over SSH without a terminal (every `pulumi up` step) never read this file.
if ! readonly -p | grep -qw TMOUT; then
  TMOUT=900
  readonly TMOUT
  export TMOUT
fi

# No core files from login sessions either (limits.d already sets the hard limit to 0).
# shellcheck disable=SC3045 # dash and bash, the login shells here, both have ulimit -c.
ulimit -c 0
