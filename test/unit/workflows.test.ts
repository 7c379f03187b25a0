import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { register } from "node:module";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { parseConfig } from "../../config";
import { IMAGE_FACTS, IMAGES } from "../../images";
import { withImage } from "../../scripts/dev/stack-image";
import { REPO, stackConfig } from "../support/stack";

// The workflows, checked two ways: GitHub's own parser (the one behind the Actions editor) must accept
// every file with zero errors, and the properties a reviewer cares about are asserted on the parsed
// YAML by small checkers that are themselves shown to catch a bad workflow.

const DIR = join(REPO, ".github", "workflows");
const FILES = ["deploy-prod.yml", "preview.yml", "staging.yml"];

type Step = { name?: string; uses?: string; run?: string; if?: string; with?: Record<string, unknown>; env?: Record<string, string> };
type Job = { if?: string; environment?: string | { name: string }; permissions?: unknown; steps: Step[]; env?: Record<string, string> };
type Workflow = { on: Record<string, unknown>; permissions?: Record<string, string> | string; concurrency?: { group: string; "cancel-in-progress"?: boolean }; jobs: Record<string, Job> };

const read = (file: string) => readFileSync(join(DIR, file), "utf8");
const load = (file: string) => parseYaml(read(file)) as Workflow;
const steps = (w: Workflow) => Object.entries(w.jobs).flatMap(([id, job]) => job.steps.map((step) => ({ id, job, step })));
const pulumiSteps = (w: Workflow) => steps(w).filter(({ step }) => step.uses?.startsWith("pulumi/actions@"));

// ---------------------------------------------------------------------------------------------
// Checkers: each returns what is wrong, so a test can show it fires on a bad workflow.

/** Triggers that hand secrets to code from a fork's pull request. */
function forkTriggerProblems(w: Workflow): string[] {
  return ["pull_request_target", "workflow_run"].filter((t) => t in w.on).map((t) => `triggers on ${t}, which runs with secrets for forks' pull requests`);
}

const READ_ONLY = { contents: "read" };
/**
 * Least privilege: the workflow's token can only read the repository; a job may be granted more
 * only where `grants` says so, and exactly that.
 */
function permissionProblems(w: Workflow, grants: Record<string, Record<string, string>> = {}): string[] {
  const problems: string[] = [];
  if (JSON.stringify(w.permissions) !== JSON.stringify(READ_ONLY)) problems.push(`permissions are ${JSON.stringify(w.permissions)}, expected ${JSON.stringify(READ_ONLY)}`);
  for (const [id, job] of Object.entries(w.jobs)) {
    if (JSON.stringify(job.permissions) !== JSON.stringify(grants[id])) problems.push(`job ${id} has permissions ${JSON.stringify(job.permissions)}, expected ${JSON.stringify(grants[id])}`);
  }
  return problems;
}

/** `uses:` pinned to a full commit SHA, or to an exact release tag (recorded in docs/CI.md). */
function pinProblems(w: Workflow): string[] {
  return steps(w)
    .map(({ step }) => step.uses)
    .filter((uses): uses is string => uses !== undefined && !uses.startsWith("./"))
    .filter((uses) => !/^[A-Za-z0-9-]+\/[A-Za-z0-9._/-]+@([0-9a-f]{40}|v[0-9]+\.[0-9]+\.[0-9]+)$/.test(uses))
    .map((uses) => `${uses} is not pinned to a commit SHA or an exact release tag`);
}

/**
 * Secrets reach a script only through `env:`, never expanded into its text, never traced, and each
 * secret variable is used only in the one way listed here (so an `echo "$SECRET"` fails the test).
 */
const SECRET_USES: Record<string, RegExp> = {
  // The key goes to ssh-add on stdin.
  KEEL_SSH_PRIVATE_KEY: /ssh-add -q - <<<"\$KEEL_SSH_PRIVATE_KEY"$/,
  // The passphrase is printed by the askpass helper to ssh-add, never to the log.
  KEEL_SSH_KEY_PASSPHRASE: /^printf '%s\\n' "\$KEEL_SSH_KEY_PASSPHRASE"$/,
};
function secretLeakProblems(w: Workflow): string[] {
  const problems: string[] = [];
  for (const { id, job, step } of steps(w)) {
    if (step.run === undefined) continue;
    const where = `job ${id}, step ${step.name ?? step.run.split("\n")[0]}`;
    if (/\$\{\{\s*secrets\./.test(step.run)) problems.push(`${where}: a secret is expanded into the script text`);
    if (/(^|\s)(set -[a-z]*x|bash -[a-z]*x)/m.test(step.run)) problems.push(`${where}: shell tracing prints expanded secrets`);
    const secretVars = Object.entries({ ...job.env, ...step.env })
      .filter(([, v]) => /\$\{\{\s*secrets\./.test(String(v)))
      .map(([k]) => k);
    for (const name of secretVars) {
      for (const line of step.run.split("\n").filter((l) => l.includes(name))) {
        if (!SECRET_USES[name]?.test(line.trim())) problems.push(`${where}: ${name} is used outside its one allowed use: ${line.trim()}`);
      }
    }
  }
  return problems;
}

/** A step that changes prod runs only from main, behind the approval environment. */
function prodProblems(w: Workflow): string[] {
  const problems: string[] = [];
  for (const { id, job, step } of pulumiSteps(w)) {
    if (step.with?.["stack-name"] !== "prod" || step.with?.command === "preview") continue;
    const env = typeof job.environment === "object" ? job.environment.name : job.environment;
    if (env !== "production") problems.push(`job ${id} runs pulumi ${String(step.with?.command)} on prod outside the production environment`);
    if (job.if !== "github.ref == 'refs/heads/main'") problems.push(`job ${id} is not limited to refs/heads/main`);
    const triggers = Object.keys(w.on).sort();
    if (JSON.stringify(triggers) !== JSON.stringify(["push", "workflow_dispatch"])) problems.push(`prod is changed on ${triggers.join(", ")}`);
    const branches = (w.on.push as { branches?: string[] } | null)?.branches;
    if (JSON.stringify(branches) !== JSON.stringify(["main"])) problems.push(`prod is changed on pushes to ${JSON.stringify(branches ?? "every branch")}`);
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------

describe("the GitHub workflows", () => {
  let parser: typeof import("@actions/workflow-parser");
  beforeAll(async () => {
    // The parser imports its JSON schema without an import attribute, which Node 20's ESM loader
    // refuses; this hook adds the attribute for .json files, in this test process only.
    register(
      "data:text/javascript," +
        encodeURIComponent(
          'export async function load(url, context, next) { return next(url, url.endsWith(".json") ? { ...context, importAttributes: { ...context.importAttributes, type: "json" } } : context); }',
        ),
    );
    parser = await import("@actions/workflow-parser");
  });

  async function parse(name: string, content: string): Promise<string[]> {
    const result = parser.parseWorkflow({ name, content }, new parser.NoOperationTraceWriter());
    const errors = result.context.errors.getErrors().map((e) => e.message);
    if (errors.length || !result.value) return errors;
    const template = await parser.convertWorkflowTemplate(result.context, result.value);
    return (template.errors ?? []).map((e) => e.Message);
  }

  it("are exactly preview, deploy-prod and staging", () => {
    expect(readdirSync(DIR).sort()).toEqual(FILES);
  });

  it.each(FILES)("%s parses with zero errors in GitHub's workflow parser", async (file) => {
    expect(await parse(file, read(file))).toEqual([]);
  });

  it("the parser catches a broken workflow (the check can fail)", async () => {
    const broken = read("preview.yml").replace("pull-requests: write", "pull-request: write").replace("${{ github.repository }}", "${{ github.repository }").replace("== github.repository", "== ${{ github.repository }");
    const errors = await parse("broken.yml", broken);
    expect(errors).toEqual(expect.arrayContaining([expect.stringContaining("Unexpected value 'pull-request'"), expect.stringContaining("The expression is not closed")]));
  });

  it("never run code from a fork's pull request with secrets", () => {
    for (const file of FILES) expect(forkTriggerProblems(load(file)), file).toEqual([]);
    const preview = load("preview.yml");
    expect(Object.keys(preview.on)).toEqual(["pull_request"]);
    // Forks' pull requests get no secrets from GitHub; the preview job does not even start for them.
    expect(preview.jobs.preview.if).toBe("github.event.pull_request.head.repo.full_name == github.repository");
    expect(forkTriggerProblems({ ...preview, on: { pull_request_target: null } })).toEqual([
      "triggers on pull_request_target, which runs with secrets for forks' pull requests",
    ]);
  });

  it("grant the token the least it needs: read, and pull-request comments for the preview job only", () => {
    expect(permissionProblems(load("preview.yml"), { preview: { contents: "read", "pull-requests": "write" } })).toEqual([]);
    expect(permissionProblems(load("deploy-prod.yml"))).toEqual([]);
    expect(permissionProblems(load("staging.yml"))).toEqual([]);
    const wide = { ...load("staging.yml"), permissions: "write-all" as const };
    expect(permissionProblems(wide)).toEqual(['permissions are "write-all", expected {"contents":"read"}']);
    const tests = load("preview.yml");
    tests.jobs.test.permissions = { contents: "read", "pull-requests": "write" };
    expect(permissionProblems(tests, { preview: { contents: "read", "pull-requests": "write" } })).toEqual([
      'job test has permissions {"contents":"read","pull-requests":"write"}, expected undefined',
    ]);
  });

  it("pin every action, and docs/CI.md lists every tag pin", () => {
    const docs = readFileSync(join(REPO, "docs", "CI.md"), "utf8");
    for (const file of FILES) {
      const w = load(file);
      expect(pinProblems(w), file).toEqual([]);
      for (const { step } of steps(w)) {
        if (step.uses && !/@[0-9a-f]{40}$/.test(step.uses)) expect(docs, `${step.uses} in docs/CI.md`).toContain(`\`${step.uses}\``);
      }
    }
    const floating = load("preview.yml");
    floating.jobs.test.steps[0].uses = "actions/checkout@v4";
    floating.jobs.test.steps[1].uses = "actions/setup-node@main";
    expect(pinProblems(floating)).toEqual([
      "actions/checkout@v4 is not pinned to a commit SHA or an exact release tag",
      "actions/setup-node@main is not pinned to a commit SHA or an exact release tag",
    ]);
  });

  it("never echo a secret in a run: step", () => {
    for (const file of FILES) expect(secretLeakProblems(load(file)), file).toEqual([]);
    const leaky = load("deploy-prod.yml");
    const agent = leaky.jobs.up.steps.find((s) => s.name === "Load the admin SSH key into ssh-agent")!;
    agent.run = `echo "$KEEL_SSH_PRIVATE_KEY" >key\n${agent.run}`;
    leaky.jobs.up.steps.push({ name: "debug", run: "set -x\necho ${{ secrets.PULUMI_ACCESS_TOKEN }}" });
    expect(secretLeakProblems(leaky)).toEqual([
      'job up, step Load the admin SSH key into ssh-agent: KEEL_SSH_PRIVATE_KEY is used outside its one allowed use: echo "$KEEL_SSH_PRIVATE_KEY" >key',
      "job up, step debug: a secret is expanded into the script text",
      "job up, step debug: shell tracing prints expanded secrets",
    ]);
  });

  it("take Pulumi credentials from the secret store only", () => {
    for (const file of FILES) {
      for (const { step } of pulumiSteps(load(file))) {
        expect(step.env, file).toEqual({
          PULUMI_ACCESS_TOKEN: "${{ secrets.PULUMI_ACCESS_TOKEN }}",
          PULUMI_CONFIG_PASSPHRASE: "${{ secrets.PULUMI_CONFIG_PASSPHRASE }}",
        });
      }
    }
  });

  it("change prod only from main, through the production approval environment", () => {
    const deploy = load("deploy-prod.yml");
    expect(prodProblems(deploy)).toEqual([]);
    expect(pulumiSteps(deploy).map(({ step }) => [step.with?.command, step.with?.["stack-name"]])).toEqual([["up", "prod"]]);
    expect(deploy.on).toEqual({ push: { branches: ["main"] }, workflow_dispatch: null });
    // No other workflow touches prod except to preview it.
    for (const file of ["preview.yml", "staging.yml"]) {
      for (const { step } of pulumiSteps(load(file))) expect(step.with?.command === "preview" || step.with?.["stack-name"] !== "prod", file).toBe(true);
    }
    const anyBranch = { ...deploy, on: { push: null, workflow_dispatch: null }, jobs: { up: { ...deploy.jobs.up, if: undefined, environment: undefined } } };
    expect(prodProblems(anyBranch)).toEqual([
      "job up runs pulumi up on prod outside the production environment",
      "job up is not limited to refs/heads/main",
      'prod is changed on pushes to "every branch"',
    ]);
  });

  it("load the admin key into ssh-agent before deploying, and stop the agent afterwards", () => {
    for (const [file, job] of [["deploy-prod.yml", "up"], ["staging.yml", "staging"]] as const) {
      const names = load(file).jobs[job].steps.map((s) => s.name ?? s.uses ?? s.run);
      const agent = names.indexOf("Load the admin SSH key into ssh-agent");
      const up = load(file).jobs[job].steps.findIndex((s) => s.with?.command === "up");
      expect(agent, file).toBeGreaterThan(-1);
      expect(agent, file).toBeLessThan(up);
      expect(names.at(-1), file).toBe("Stop ssh-agent");
      expect(load(file).jobs[job].steps.at(-1)?.if).toBe("always()");
    }
  });

  it("run every preview and up with keel's policy pack, and the CLI matching the SDK", () => {
    const pkg = JSON.parse(readFileSync(join(REPO, "package.json"), "utf8")) as { dependencies: Record<string, string> };
    expect(existsSync(join(REPO, "policy", "PulumiPolicy.yaml"))).toBe(true);
    for (const file of FILES) {
      for (const { step } of pulumiSteps(load(file))) {
        if (step.with?.command !== "destroy") expect(step.with?.policyPacks, file).toBe("policy");
        expect(step.with?.["pulumi-version"], file).toBe(pkg.dependencies["@pulumi/pulumi"]);
      }
    }
    expect(pulumiSteps(load("preview.yml")).map(({ step }) => step.with)).toEqual([expect.objectContaining({ command: "preview", "comment-on-pr": true, "stack-name": "staging" })]);
  });

  it("keep prod's credentials in the production environment: pull requests preview staging with the preview environment's token only", () => {
    // A same-repository pull request runs its own workflow file: any repository-level secret, and
    // any environment without branch rules, is readable by its code. Only `production` is closed
    // to branches (docs/CI.md), so every job that reads the Pulumi token names an environment, and
    // nothing outside `production` names prod.
    for (const file of FILES) {
      for (const [id, job] of Object.entries(load(file).jobs)) {
        const text = JSON.stringify(job);
        const env = typeof job.environment === "object" ? job.environment.name : job.environment;
        if (text.includes("secrets.PULUMI_ACCESS_TOKEN") || text.includes("secrets.PULUMI_CONFIG_PASSPHRASE")) expect(env, `${file} job ${id}`).toBeDefined();
        if (env !== "production") expect(text, `${file} job ${id}`).not.toMatch(/stack-name":"(\S+\/)?prod"/);
      }
    }
    expect(load("preview.yml").jobs.preview.environment).toBe("preview");
    expect(JSON.stringify(load("preview.yml"))).not.toContain("prod");
  });

  it("install with npm ci on Node 20, run the unit tests, and only npm scripts that exist", () => {
    const pkg = JSON.parse(readFileSync(join(REPO, "package.json"), "utf8")) as { scripts: Record<string, string> };
    for (const file of FILES) {
      const all = steps(load(file));
      for (const { step } of all.filter(({ step }) => step.uses?.startsWith("actions/setup-node@"))) expect(step.with?.["node-version"], file).toBe(20);
      for (const { step } of all.filter(({ step }) => step.run)) {
        expect(step.run, file).not.toMatch(/npm (install|i)\b/);
        for (const [, script] of step.run!.matchAll(/npm run ([\w:-]+)/g)) expect(pkg.scripts, `${file}: npm run ${script}`).toHaveProperty([script]);
      }
      for (const { step } of all.filter(({ step }) => step.uses?.startsWith("actions/checkout@"))) expect(step.with?.["persist-credentials"], file).toBe(false);
    }
    expect(load("preview.yml").jobs.test.steps.map((s) => s.run).filter(Boolean)).toEqual(["npm ci", "npm run test:unit"]);
    expect(load("deploy-prod.yml").jobs.up.steps.map((s) => s.run).filter(Boolean).slice(0, 2)).toEqual(["npm ci", "npm run test:unit"]);
  });

  it("queue deploys instead of cancelling them, and supersede stale previews", () => {
    expect(load("preview.yml").concurrency).toEqual({ group: "preview-${{ github.event.pull_request.number }}", "cancel-in-progress": true });
    expect(load("deploy-prod.yml").concurrency).toEqual({ group: "pulumi-prod", "cancel-in-progress": false });
    expect(load("staging.yml").concurrency).toEqual({ group: "pulumi-staging", "cancel-in-progress": false });
  });

  it("bring staging up or destroy it on demand", () => {
    const staging = load("staging.yml");
    expect(Object.keys(staging.on)).toEqual(["workflow_dispatch"]);
    expect((staging.on.workflow_dispatch as { inputs: Record<string, unknown> }).inputs.action).toMatchObject({ type: "choice", options: ["up", "destroy"], required: true });
    expect(pulumiSteps(staging).map(({ step }) => [step.if, step.with?.command, step.with?.["stack-name"]])).toEqual([
      ["inputs.action == 'up'", "up", "staging"],
      ["(inputs.action == 'destroy' && success()) || (inputs.action == 'up' && inputs.destroy-after && !cancelled())", "destroy", "staging"],
    ]);
  });

  // Issue 16 #3: the acceptance checks on the production image. After a successful up (a step's
  // `if` without a status function is success() && it), keel verify reads staging's outputs with
  // the CLI pulumi/actions put on the PATH and fails the job on a failed check; destroy-after then
  // removes staging whatever happened, unless the run was cancelled.
  it("run keel verify against the staging server after up, and can destroy staging afterwards", () => {
    const staging = load("staging.yml");
    const inputs = (staging.on.workflow_dispatch as { inputs: Record<string, Record<string, unknown>> }).inputs;
    expect(inputs["destroy-after"]).toMatchObject({ type: "boolean", default: false });
    const all = staging.jobs.staging.steps;
    const up = all.findIndex((st) => st.with?.command === "up");
    const verify = all.findIndex((st) => st.run === "scripts/runbook/verify.sh");
    const destroy = all.findIndex((st) => st.with?.command === "destroy");
    expect(up).toBeGreaterThan(0);
    expect([up < verify, verify < destroy]).toEqual([true, true]);
    expect(all[verify].if).toBe("inputs.action == 'up'");
    expect(all[verify].env).toEqual({
      PULUMI_ACCESS_TOKEN: "${{ secrets.PULUMI_ACCESS_TOKEN }}",
      PULUMI_CONFIG_PASSPHRASE: "${{ secrets.PULUMI_CONFIG_PASSPHRASE }}",
      KEEL_STACK: "staging",
    });
    // The script exists, runs, and takes the stack from KEEL_STACK (scripts/runbook/lib.sh).
    expect(statSync(join(REPO, "scripts", "runbook", "verify.sh")).mode & 0o111).not.toBe(0);
    expect(readFileSync(join(REPO, "scripts", "runbook", "lib.sh"), "utf8")).toContain('pulumi stack output --json ${KEEL_STACK:+--stack "$KEEL_STACK"}');
  });

  // Issue 16 #4: the Ubuntu images are proven only by this run (docs/CONFIG.md "Images"), so it can
  // prove any image keel offers, whatever the stack file names.
  it("prove the image the run picks: every image keel offers, set with its Python before up, from an env var", () => {
    const staging = load("staging.yml");
    const inputs = (staging.on.workflow_dispatch as { inputs: Record<string, Record<string, unknown>> }).inputs;
    expect(inputs.image).toMatchObject({ type: "choice", options: ["as-configured", ...IMAGES], default: "as-configured" });
    const all = staging.jobs.staging.steps;
    const pick = all.findIndex((st) => st.run?.includes("scripts/dev/stack-image.ts"));
    const up = all.findIndex((st) => st.with?.command === "up");
    expect(pick).toBeGreaterThan(0);
    expect(pick).toBeLessThan(up);
    expect(all[pick]).toMatchObject({
      if: "inputs.action == 'up' && inputs.image != 'as-configured'",
      env: { KEEL_IMAGE: "${{ inputs.image }}" },
      run: 'npx ts-node --transpile-only scripts/dev/stack-image.ts staging "$KEEL_IMAGE"',
    });
  });

  it("set an image and its Python in a stack file and nothing else (scripts/dev/stack-image.ts)", () => {
    const text = readFileSync(join(REPO, "Pulumi.staging.yaml"), "utf8");
    for (const image of IMAGES) {
      const out = withImage(text, image);
      const raw = (parseYaml(out) as { config: Record<string, unknown> }).config;
      expect(raw["keel:image"]).toBe(image);
      // A string, as the engine hands it over: 3.10 as a YAML number would be 3.1.
      expect(raw["keel:pythonVersion"]).toBe(IMAGE_FACTS[image].python);
      const changed = out.split("\n").filter((line, i) => line !== text.split("\n")[i]);
      expect(changed.every((line) => /^  keel:(image|pythonVersion): /.test(line)), changed.join("\n")).toBe(true);
      // The result is a stack config keel accepts.
      const { raw: base, secretKeys } = stackConfig("staging");
      expect(parseConfig({ ...base, "keel:image": image, "keel:pythonVersion": String(raw["keel:pythonVersion"]) }, (k) => secretKeys.includes(k)).image).toBe(image);
    }
  });

  it("deploy to stacks that let the CI key in: each stack a workflow ups lists a ci-* admin key", () => {
    // deploy-prod.yml and staging.yml load KEEL_SSH_PRIVATE_KEY into ssh-agent and `pulumi up`
    // connects as the deploy user with it; a stack without its public half fails at the first step.
    for (const [file, stack] of [["deploy-prod.yml", "prod"], ["staging.yml", "staging"]] as const) {
      expect(read(file)).toContain("KEEL_SSH_PRIVATE_KEY");
      const stackFile = parseYaml(readFileSync(join(REPO, `Pulumi.${stack}.yaml`), "utf8")) as { config: Record<string, unknown> };
      const keys = stackFile.config["keel:adminKeys"] as string[];
      expect(keys.filter((k) => / ci-[a-z-]+@github-actions$/.test(k)), `${stack}: keel:adminKeys`).toHaveLength(1);
    }
  });
});
