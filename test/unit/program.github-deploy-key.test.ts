// keel:githubDeployKey under Pulumi's mock runtime: what the program asks the GitHub provider for
// (an explicit provider whose owner is keel:repoUrl's, a read-only RepositoryDeployKey of the
// stack's deploy key) and that the clone step waits for it. The ordering itself is the engine's: a
// resource is created after everything in its dependsOn (pulumi/pulumi v3.248.0
// pkg/resource/deploy/step_generator.go and the step executor's dependency-ordered chains); the mock
// shows the dependency the program declares.
import { beforeAll, describe, expect, it } from "vitest";
import { ConfigError, githubEnvProblems, githubRepo, parseConfig } from "../../config";
import { GITHUB_DEPLOY_KEY, keelPolicies } from "../../policy/policies";
import { allViolations, plainResource } from "../../policy/testing";
import { FAKE_DEPLOY_PUBLIC } from "../support/mocks";
import { isSecret, resolved, runProgram, type ProgramRun } from "../support/program";
import { expectCommonShape } from "../support/programShape";
import { stackConfig } from "../support/stack";

const TOKEN = "github_pat_test-token-not-real";

describe("the staging stack with keel:githubDeployKey, under Pulumi mocks", () => {
  let run: ProgramRun;
  beforeAll(async () => {
    run = await runProgram("staging", { "keel:githubDeployKey": "true" }, { "github:token": TOKEN });
  });

  it("has the common shape (names, parents, pinned host key, secrets)", async () => {
    await expectCommonShape(run, "staging");
  });

  it("registers the stack's deploy key, read-only, on keel:repoUrl's repository, through a provider of the URL's owner and the secret token", async () => {
    const key = run.one("github:index/repositoryDeployKey:RepositoryDeployKey");
    expect(key.name).toBe("keel-deploy-key");
    expect(await resolved(key.inputs.repository)).toBe("engine");
    expect(await resolved(key.inputs.readOnly)).toBe(true);
    expect(await resolved(key.inputs.key)).toBe(FAKE_DEPLOY_PUBLIC);
    expect(await resolved(key.inputs.title)).toBe("keel keel/staging (example-org/engine)");
    // Deleted before a replacement is created (GitHub refuses a key it already has).
    expect(key.opts.deleteBeforeReplace).toBe(true);
    const provider = run.one("pulumi:providers:github");
    expect(provider.name).toBe("keel-deploy-key-provider-example-org");
    expect(key.opts.provider).toBe(provider.resource);
    // The owner (also as `organization`, which the provider reads before env GITHUB_OWNER) and the
    // API from keel:repoUrl, not from the environment.
    expect(await resolved(provider.inputs.owner)).toBe("example-org");
    expect(await resolved(provider.inputs.organization)).toBe("example-org");
    expect(await resolved(provider.inputs.baseUrl)).toBe("https://api.github.com/");
    expect(await resolved(provider.inputs.token)).toBe(TOKEN);
    expect(await isSecret(provider.inputs.token)).toBe(true);
  });

  it("makes the clone (engine-source) wait for the registration, and no other step", () => {
    const key = run.one("github:index/repositoryDeployKey:RepositoryDeployKey");
    const steps = [...run.byType("command:remote:Command"), ...run.byType("command:local:Command")];
    const waiting = steps.filter((s) => ((s.opts.dependsOn ?? []) as unknown[]).includes(key.resource)).map((s) => s.name);
    expect(waiting).toEqual(["keel-step-engine-source"]);
  });

  it("passes every policy of the pack, and the read-only rule fails a key that can write", async () => {
    const resources = await Promise.all(run.resources.map(plainResource));
    expect(await allViolations(keelPolicies(), resources)).toEqual([]);
    const writable = resources.map((r) => (r.type === GITHUB_DEPLOY_KEY ? { ...r, props: { ...r.props, readOnly: false } } : r));
    expect(await allViolations(keelPolicies(), writable)).toEqual([expect.stringContaining("github-deploy-key-read-only: keel-deploy-key: the GitHub deploy key has readOnly false")]);
  });

  it("puts the token in no output", () => {
    expect(JSON.stringify(run.outputs)).not.toContain(TOKEN);
  });
});

describe("keel:githubDeployKey's config", () => {
  const parse = (extra: Record<string, string>, secret: string[] = []) => {
    const { raw, secretKeys } = stackConfig("staging");
    return () => parseConfig({ ...raw, ...extra }, (k) => [...secretKeys, ...secret].includes(k));
  };
  const problems = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      if (e instanceof ConfigError) return e.message;
      throw e;
    }
    return "";
  };

  it("is off by default", () => {
    expect(parse({})().githubDeployKey).toBe(false);
  });

  it("needs the secret github:token, and says how to set it", () => {
    expect(problems(parse({ "keel:githubDeployKey": "true" }))).toContain(
      "keel:githubDeployKey: true needs a GitHub token that may add deploy keys to example-org/engine",
    );
    expect(problems(parse({ "keel:githubDeployKey": "true" }))).toContain("fix: pulumi config set --secret github:token <token>");
    expect(parse({ "keel:githubDeployKey": "true", "github:token": TOKEN }, ["github:token"])().githubDeployKey).toBe(true);
  });

  it("refuses a plaintext github:token, whether the option is on or not, without showing it", () => {
    const cases: Array<Record<string, string>> = [{ "github:token": TOKEN }, { "github:token": TOKEN, "keel:githubDeployKey": "true" }];
    for (const extra of cases) {
      const message = problems(parse(extra));
      expect(message).toContain("github:token: must be a secret, found a plaintext value (not shown)");
      expect(message).not.toContain(TOKEN);
    }
  });

  it("refuses a repository that is not on github.com", () => {
    const message = problems(
      parse(
        { "keel:githubDeployKey": "true", "keel:repoUrl": "git@gitlab.com:acme/engine.git", "keel:gitKnownHosts": JSON.stringify(["gitlab.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOnlyForThisTest"]) },
        ["github:token"],
      ),
    );
    expect(message).toContain(`keel:githubDeployKey: true, but keel:repoUrl "git@gitlab.com:acme/engine.git" is not a github.com repository`);
  });

  it("refuses GitHub App credentials and another owner in the environment, which would steer the provider", () => {
    expect(githubEnvProblems({ GITHUB_OWNER: "example-org", PATH: "/usr/bin" }, "example-org")).toEqual([]);
    expect(githubEnvProblems({ GITHUB_OWNER: "other", GITHUB_APP_ID: "1" }, "example-org")).toEqual([
      "keel:githubDeployKey: GITHUB_APP_ID is set in this environment; the GitHub provider would log in as that GitHub App, not with github:token. fix: unset GITHUB_APP_ID for pulumi",
      "keel:githubDeployKey: GITHUB_OWNER is set in this environment to another owner than keel:repoUrl's (example-org). fix: unset GITHUB_OWNER for pulumi",
    ]);
  });

  it("reads the owner and name from both URL forms keel accepts", () => {
    expect(githubRepo("git@github.com:acme/engine.git")).toEqual({ owner: "acme", name: "engine", full: "acme/engine" });
    expect(githubRepo("ssh://git@github.com/acme/my.engine")).toEqual({ owner: "acme", name: "my.engine", full: "acme/my.engine" });
    expect(githubRepo("ssh://git@github.com:22/acme/engine.git")?.full).toBe("acme/engine");
    expect(githubRepo("ssh://git@github.com:2222/acme/engine.git")).toBeUndefined();
    expect(githubRepo("git@github.example.com:acme/engine.git")).toBeUndefined();
    expect(githubRepo("file:///srv/engine.git")).toBeUndefined();
  });
});
