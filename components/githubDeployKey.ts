import * as github from "@pulumi/github";
import * as pulumi from "@pulumi/pulumi";

/** github.com's API: never one from the environment. */
export const GITHUB_API = "https://api.github.com/";

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
 * An explicit provider, its owner and API taken from keel:repoUrl, nothing from the operator's
 * environment. The default provider would take the owner from `github:owner` or the token's own
 * account (pulumi-github v6.15.0 provider/cmd/pulumi-resource-github/schema.json, config `owner`).
 * The upstream provider (integrations/terraform-provider-github at the commit pulumi-github v6.15.0
 * builds, github/provider.go) takes the owner from `organization` first, then env GITHUB_OWNER,
 * and only then `owner`, so keel sets `organization` (deprecated, still read first) as well; the
 * SDK would take `baseUrl` from env GITHUB_BASE_URL (@pulumi/github 6.15.0 provider.js), so it is
 * set; GitHub App variables in the environment would log in as the App instead of the token, so
 * config.ts refuses them (githubEnvProblems).
 *
 * A repository of another owner or name: every input of RepositoryDeployKey replaces it on a
 * change (the same schema: `willReplaceOnChanges` on key, readOnly, repository and title), and the
 * title names the repository, owner included, so a new owner replaces the key too (the owner is
 * provider configuration, which alone would not: a changed provider reference replaces a resource
 * only when the new provider's DiffConfig says so, pulumi/pulumi v3.248.0
 * pkg/resource/deploy/step_generator.go providerChanged). The old key is deleted through the
 * provider it was created with (step.go DeleteStep.Provider is the old state's), so each owner has a
 * provider of its own name, and before its replacement is created: GitHub refuses a key already
 * registered ("key is already in use").
 */
export function githubDeployKey(name: string, args: GithubDeployKeyArgs, opts: { parent: pulumi.Resource }): github.RepositoryDeployKey {
  const { owner } = args.repo;
  const provider = new github.Provider(
    `${name}-provider-${owner.toLowerCase()}`,
    { owner, organization: owner, baseUrl: GITHUB_API, token: pulumi.secret(args.token) },
    { parent: opts.parent },
  );
  return new github.RepositoryDeployKey(
    name,
    {
      repository: args.repo.name,
      title: args.title,
      key: pulumi.all([args.publicKey, args.after]).apply(([key]) => key),
      readOnly: true,
    },
    { parent: opts.parent, provider, deleteBeforeReplace: true },
  );
}
