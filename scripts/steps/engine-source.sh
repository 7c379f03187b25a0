#!/usr/bin/env bash
# keel engine source (seed 000 §3): clone or fetch the engine's repository with the read-only deploy
# key, check out the pinned commit (detached) and verify it. Runs as the deploy user, who owns DIR.
# The git host's keys are pinned in KNOWN_HOSTS: an unknown or changed host key is refused, never
# trusted on first use. A file:/// URL works too (no ssh involved).
# Usage: engine-source.sh REPO_URL COMMIT DIR DEPLOY_KEY KNOWN_HOSTS
# Exit: 0 DIR is a clean checkout of COMMIT (says what changed, or that nothing did); 1 a fetch or
#       checkout failed (what to do on stderr); 2 usage.
set -euo pipefail

usage() {
  echo "usage: engine-source.sh REPO_URL COMMIT DIR DEPLOY_KEY KNOWN_HOSTS" >&2
  exit 2
}
fail() {
  echo "keel source: $*" >&2
  exit 1
}

[[ $# -eq 5 && $2 =~ ^[0-9a-f]{40}$ && $3 == /* && $4 == /* && $5 == /* ]] || usage
url=$1
commit=$2
dir=$3
key=$4
known_hosts=$5

# Files the deploy user writes here are not writable by anyone else (the engine's user included).
umask 022
export GIT_TERMINAL_PROMPT=0
export GIT_SSH_COMMAND="ssh -i $key -o IdentitiesOnly=yes -o UserKnownHostsFile=$known_hosts -o StrictHostKeyChecking=yes -o BatchMode=yes"
if [[ $url != file://* ]]; then
  [[ -r $key ]] || fail "the deploy key $key is missing; the deploy-key step installs it. Run pulumi up again from the start"
  [[ -s $known_hosts ]] || fail "no pinned host keys in $known_hosts; set keel:gitKnownHosts to the git host's known_hosts lines"
fi

[[ -d $dir ]] || fail "$dir does not exist; the layout step creates it. Run pulumi up again from the start"
cd "$dir"
changed=()

if [[ ! -d .git ]]; then
  [[ -z $(ls -A) ]] || fail "$dir holds files but no git checkout; move them away (keel owns this directory), then run pulumi up again"
  git init -q .
  git remote add origin "$url"
  changed+=("created the checkout")
elif [[ $(git config --get remote.origin.url || true) != "$url" ]]; then
  git remote remove origin 2>/dev/null || true
  git remote add origin "$url"
  changed+=("origin set to $url")
fi

has_commit() { git cat-file -e "$commit^{commit}" 2>/dev/null; }
if ! has_commit; then
  if ! git fetch -q --prune origin '+refs/heads/*:refs/remotes/origin/*' '+refs/tags/*:refs/tags/*'; then
    [[ $url != file://* ]] ||
      fail "cannot fetch $url (error above). It must be a git repository the deploy user can read and owns (git refuses other users' repositories)"
    # The usual cause on a first deploy: the key was made by this very `pulumi up` (the stack's
    # tls.PrivateKey) and the repository does not know it yet. Name the key here: the step's output
    # is what the operator reads, and stack outputs may not be written by a failed up.
    public=$(ssh-keygen -y -f "$key" 2>/dev/null) || public="(unreadable: $key)"
    fail "cannot fetch $url (error above). On a first deploy (or a rebuilt stack, which has a new key) the repository does not know this server's deploy key yet: add it as a read-only deploy key (GitHub: the repository's Settings > Deploy keys > Add deploy key, 'Allow write access' off), or let keel register it on GitHub (keel:githubDeployKey, docs/CONFIG.md; if that is on and the key was removed on GitHub, pulumi up --refresh registers it again), then run pulumi up again; this step and the ones after it run again. The key: $public
If the key is registered, check that keel:gitKnownHosts holds the git host's keys"
  fi
  # A commit on no branch or tag: ask for it by id (GitHub serves reachable commits this way).
  has_commit || git fetch -q origin "$commit" 2>/dev/null || true
  has_commit || fail "commit $commit is not in $url; push it, or set keel:repoRef to a commit that is, then run pulumi up again"
  changed+=("fetched $commit")
fi

head=$(git rev-parse -q --verify HEAD || true)
if [[ $head != "$commit" ]]; then
  git -c advice.detachedHead=false checkout -q --force --detach "$commit"
  changed+=("checked out $commit (was ${head:-nothing})")
fi
if [[ -n $(git --no-optional-locks status --porcelain --ignored --untracked-files=all) ]]; then
  git reset -q --hard "$commit"
  git clean -q -ffdx
  changed+=("put back files edited or added by hand")
fi
if [[ -n $(find . ! -type l -perm /022 -print -quit) ]]; then
  chmod -R go-w .
  changed+=("removed group/other write permission")
fi

head=$(git rev-parse HEAD)
[[ $head == "$commit" ]] || fail "$dir is at $head after checkout, expected $commit; inspect it by hand"
if ((${#changed[@]})); then
  printf 'source: %s\n' "${changed[@]}"
  echo "source: $dir is at $commit"
else
  echo "source: $dir already at $commit, nothing changed"
fi
