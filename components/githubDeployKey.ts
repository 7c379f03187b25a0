import * as github from "@pulumi/github";
import * as pulumi from "@pulumi/pulumi";

export interface GithubDeployKeyArgs {
  /** The repository of keel:repoUrl on github.com (config.ts githubRepo). */
  readonly repo: { readonly owner: string; readonly name: string };
  /** The deploy key's public half (components/sshAccess.ts). */
  readonly publicKey: pulumi.Input<string>;
  /** The key's title on GitHub: which project and stack it serves. */
  readonly title: string;
  /** The secret `github:token`: a token that may add deploy keys to the repository. */
  readonly token: pulumi.Input<string>;
  /** Registered only once this resolves (components/connectionGuard.ts). */
  readonly after?: pulumi.Input<unknown>;
}

/**
 * keel:githubDeployKey: the stack's deploy key registered on its github.com repository, read-only,
 * so the first `pulumi up` clones without a hand step and a rebuilt staging stack (a new key)
 * registers its own; `pulumi destroy` removes it from GitHub.
 *
 * An explicit provider, its owner taken from keel:repoUrl: the default provider would take the
 * owner from `github:owner` or, without it, the token's own account ("If the owner is not provided
 * and a token is provided, the provider will attempt to auto-detect the owner associated with the
 * token": pulumi-github v6.15.0 provider/cmd/pulumi-resource-github/schema.json, config `owner`),
 * which is not the repository's organisation. Every input of RepositoryDeployKey replaces it on a
 * change (the same schema: `willReplaceOnChanges` on key, readOnly, repository and title), so a new
 * deploy key (RUNBOOK "Rotate the deploy key") is registered anew and the old one deleted.
 */
export function githubDeployKey(name: string, args: GithubDeployKeyArgs, opts: { parent: pulumi.Resource }): github.RepositoryDeployKey {
  const provider = new github.Provider(`${name}-provider`, { owner: args.repo.owner, token: pulumi.secret(args.token) }, { parent: opts.parent });
  return new github.RepositoryDeployKey(
    name,
    {
      repository: args.repo.name,
      title: args.title,
      key: pulumi.all([args.publicKey, args.after]).apply(([key]) => key),
      readOnly: true,
    },
    { parent: opts.parent, provider },
  );
}
