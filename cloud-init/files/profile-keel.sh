# shellcheck shell=sh
# keel: settings for interactive login shells. Installed as /etc/profile.d/keel.sh.
# Source: cloud-init/files/profile-keel.sh in the keel repository; edit it there, not here.

# An interactive shell left idle for 10 minutes logs out, so a forgotten session does not stay
# open (ANSSI BP-028's 600 s). Read-only and exported (declare -xr, the form its check reads): the
# login shell cannot switch it off, and a shell it starts inherits the value (not the read-only
# mark). Trade-off: bash's `read` and `select` take TMOUT as their default timeout too. Only bash
# has TMOUT and `declare`; dash, the other login shell here, reads this file too and skips it. The
# guard keeps a second reading of this file (a nested login shell) from tripping over the
# read-only value.
# Commands run over SSH without a terminal (every `pulumi up` step) never read this file.
if [ -n "${BASH_VERSION-}" ] && ! readonly -p | grep -qw TMOUT; then
  # shellcheck disable=SC3044 # bash only, guarded above.
  declare -xr TMOUT=600
fi

# No core files from login sessions either (limits.d already sets the hard limit to 0).
# shellcheck disable=SC3045 # dash and bash, the login shells here, both have ulimit -c.
ulimit -c 0
