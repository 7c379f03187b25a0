// The check that keeps a config change from locking `pulumi up` out of a live server (issue 10
// item 3): a change of keel:sshPort or keel:deployUser on a stack whose server exists. The mock
// runtime stands in for the backend (the last up's stack outputs a StackReference to the stack
// reads) and for Hetzner's server list; what the engine does with a failed program (nothing waiting
// on the check is registered, so nothing of it changes) is cited in components/connectionGuard.ts.
import * as pulumi from "@pulumi/pulumi";
import { beforeEach, describe, expect, it } from "vitest";
import { connectionChangeProblems, connectionGuard, ConnectionChangeError, serverSelector } from "../../components/connectionGuard";
import { parseConfig, sshPorts, type KeelConfig } from "../../config";
import { backend, installMocks, runInStack } from "../support/mocks";
import { resolved } from "../support/program";
import { imagePython, stackConfig } from "../support/stack";

/** What components/keel.ts selects the server by: the labels no config change moves. */
const LABELS = { "managed-by": "keel", stack: "prod" };
const SERVER = { id: 4711, name: "engine-prod", image: "ubuntu-24.04", location: "fsn1", labels: { ...LABELS, project: "keel", service: "engine" } };
/** The last up's outputs as this keel exports them (prod: ubuntu-24.04 in fsn1). */
const LAST_UP = { sshPort: 22, sshPorts: [22], deployUser: "deploy", image: "ubuntu-24.04", location: "fsn1" };

/** The prod stack's config with `overrides`; keel:pythonVersion follows a changed keel:image. */
function config(overrides: Record<string, string> = {}): KeelConfig {
  const { raw, secretKeys } = stackConfig("prod");
  const python: Record<string, string> = "keel:image" in overrides ? { "keel:pythonVersion": imagePython(overrides) } : {};
  return parseConfig({ ...raw, ...python, ...overrides }, (k) => secretKeys.includes(k));
}

/** Runs connectionGuard under the mock runtime: resolves true, or rejects with its error. */
async function guard(cfg: KeelConfig, organization?: string): Promise<{ outcome: PromiseSettledResult<unknown>; types: string[]; reference: unknown }> {
  const { raw, secretKeys } = stackConfig("prod");
  await installMocks("prod", raw, secretKeys, organization);
  let outcome!: PromiseSettledResult<unknown>;
  const { registered } = await runInStack(async () => {
    const ok = connectionGuard("keel-last-up", cfg, LABELS, {}) as unknown as { promise(): Promise<unknown>; isKnown: Promise<boolean>; isSecret: Promise<boolean> };
    // Output.promise() is the SDK's own way to await an Output, rejection included. The Output's
    // isKnown and isSecret reject with it; under `pulumi up` nobody handles them either, and the
    // runtime's unhandled-rejection handler prints a RunError's message once and fails the program
    // (@pulumi/pulumi 3.248.0 cmd/run/run.js uncaughtHandler). Here the test handles them.
    ok.isKnown.catch(() => undefined);
    ok.isSecret.catch(() => undefined);
    [outcome] = await Promise.allSettled([ok.promise()]);
    return {};
  });
  const stackReference = registered.find((r) => r.type === "pulumi:pulumi:StackReference");
  return { outcome, types: registered.map((r) => r.type), reference: stackReference && (await resolved(stackReference.inputs.name)) };
}

describe("connectionChangeProblems (pure)", () => {
  const last = { sshPort: 22, sshPorts: [22], deployUser: "deploy" };

  it("lets anything through on a stack with no last up", () => {
    expect(connectionChangeProblems(config({ "keel:sshPort": "2222", "keel:deployUser": "ops" }), {})).toEqual([]);
  });

  it("lets an unchanged connection through, and a move to a port the last up already served", () => {
    expect(connectionChangeProblems(config(), last)).toEqual([]);
    expect(connectionChangeProblems(config({ "keel:sshPortNext": "2222" }), last)).toEqual([]);
    const both = { sshPort: 22, sshPorts: [22, 2222], deployUser: "deploy" };
    expect(connectionChangeProblems(config({ "keel:sshPort": "2222" }), both)).toEqual([]);
    // Back again, before the move ended: 22 is still served.
    expect(connectionChangeProblems(config({ "keel:sshPort": "22", "keel:sshPortNext": "2222" }), both)).toEqual([]);
  });

  it("refuses a port the server does not serve yet, with the two-up procedure", () => {
    const [problem, ...rest] = connectionChangeProblems(config({ "keel:sshPort": "2222" }), last);
    expect(rest).toEqual([]);
    expect(problem).toMatch(/^keel:sshPort: the server serves SSH on 22 \(the last pulumi up's stack outputs\), not on 2222/);
    expect(problem).toContain("fix: move it in two ups: pulumi config set keel:sshPort 22 && pulumi config set keel:sshPortNext 2222 && pulumi up (both ports served), then pulumi config set keel:sshPort 2222 && pulumi config rm keel:sshPortNext && pulumi up (22 closed)");
  });

  it("reads a stack last deployed before keel:sshPortNext existed by its sshPort output alone", () => {
    expect(connectionChangeProblems(config({ "keel:sshPort": "2222" }), { sshPort: 22, deployUser: "deploy" })).toEqual([expect.stringMatching(/^keel:sshPort: the server serves SSH on 22/)]);
  });

  it("refuses another image or location, which would replace the server with the old user-data and an empty disk", () => {
    const was = { ...last, image: "ubuntu-24.04", location: "fsn1" };
    expect(connectionChangeProblems(config(), was)).toEqual([]);
    expect(connectionChangeProblems(config({ "keel:image": "debian-13", "keel:location": "nbg1" }), was)).toEqual([
      expect.stringMatching(/^keel:image: the server was created with image "ubuntu-24.04" .*the database gone\). fix: pulumi config set keel:image ubuntu-24.04 && pulumi config set keel:pythonVersion 3\.12; to move, replace the server \(docs\/RUNBOOK.md "Replace the server"/),
      expect.stringMatching(/^keel:location: the server was created with location "fsn1" .*fix: pulumi config set keel:location fsn1;/),
    ]);
  });

  it("gives a fix that keel accepts: going back to the server's image takes that image's Python back too", () => {
    const was = { ...last, image: "ubuntu-24.04", location: "fsn1" };
    const [problem] = connectionChangeProblems(config({ "keel:image": "ubuntu-26.04" }), was);
    const sets = [...problem.split("; to move")[0].matchAll(/pulumi config set (keel:[A-Za-z]+) (\S+)/g)].map((m) => [m[1], m[2]]);
    expect(sets).toEqual([["keel:image", "ubuntu-24.04"], ["keel:pythonVersion", "3.12"]]);
    const { raw, secretKeys } = stackConfig("prod");
    const fixed = parseConfig({ ...raw, "keel:pythonVersion": "3.14", ...Object.fromEntries(sets) }, (k) => secretKeys.includes(k));
    expect(connectionChangeProblems(fixed, was)).toEqual([]);
    // The Python is named only where it must change.
    expect(connectionChangeProblems(config({ "keel:location": "nbg1" }), was)[0]).not.toContain("pythonVersion");
  });

  it("refuses another appName or dbFile, which would start the engine on an empty DB beside the old one", () => {
    const was = { ...last, paths: { db: "/var/lib/engine/engine.db", unit: "engine.service" } };
    expect(connectionChangeProblems(config(), was)).toEqual([]);
    for (const change of [{ "keel:appName": "trader" }, { "keel:dbFile": "main.db" }] as Record<string, string>[]) {
      expect(connectionChangeProblems(config(change), was)).toEqual([
        expect.stringMatching(/^keel:appName \/ keel:dbFile: the live database is \/var\/lib\/engine\/engine.db .*this config names \/var\/lib\/(trader\/trader|engine\/main).db/),
      ]);
    }
  });

  it("refuses another deploy user, naming the one the server has and the replace procedure", () => {
    expect(connectionChangeProblems(config({ "keel:deployUser": "ops" }), last)).toEqual([
      expect.stringMatching(/^keel:deployUser: the server's deploy user is "deploy" .*fix: pulumi config set keel:deployUser deploy; to change it, replace the server \(docs\/RUNBOOK.md "Replace the server"\)/),
    ]);
  });
});

describe("connectionGuard under the mock runtime", () => {
  beforeEach(() => {
    backend.lastUp = {};
    backend.hetznerServers = undefined;
    backend.invokes = [];
  });

  it("reads the last up through a StackReference to this very stack, and asks Hetzner nothing when nothing changes", async () => {
    backend.lastUp = LAST_UP;
    const { outcome, types } = await guard(config());
    expect(outcome).toEqual({ status: "fulfilled", value: true });
    expect(types).toEqual(["pulumi:pulumi:StackReference"]);
    expect(backend.invokes).toEqual([]);
  });

  it("fails with the problems when the stack's server still exists at Hetzner", async () => {
    backend.lastUp = LAST_UP;
    // Another stack's server does not count (a keel server of another project with this stack's
    // name would: that refuses, never lets through).
    backend.hetznerServers = [{ ...SERVER, labels: { ...SERVER.labels, stack: "staging" } }];
    expect((await guard(config({ "keel:sshPort": "2222" }))).outcome).toEqual({ status: "fulfilled", value: true });
    backend.invokes = [];
    backend.hetznerServers.push(SERVER);
    const { outcome } = await guard(config({ "keel:sshPort": "2222" }));
    expect(outcome.status).toBe("rejected");
    const err = (outcome as PromiseRejectedResult).reason;
    expect(err).toBeInstanceOf(ConnectionChangeError);
    // A RunError: the Pulumi runtime prints its message without a stack trace.
    expect(pulumi.RunError.isInstance(err)).toBe(true);
    expect(err.message).toMatch(/^keel: refused before anything changed \(1 problem\):\n {2}- keel:sshPort: the server serves SSH on 22/);
    expect(backend.invokes).toEqual([{ token: "hcloud:index/getServers:getServers", args: { withSelector: "managed-by=keel,stack=prod" } }]);
  });

  it("lets the change through once the stack's server is gone (the replace procedure)", async () => {
    backend.lastUp = LAST_UP;
    backend.hetznerServers = [];
    const { outcome } = await guard(config({ "keel:sshPort": "2222", "keel:deployUser": "ops" }));
    expect(outcome).toEqual({ status: "fulfilled", value: true });
  });

  it("compares an older keel's stack (no image or location in its outputs) with the live server's, and refuses a replacement", async () => {
    const older = { sshPort: 22, sshPorts: [22], deployUser: "deploy" };
    backend.lastUp = older;
    backend.hetznerServers = [SERVER];
    expect((await guard(config())).outcome).toEqual({ status: "fulfilled", value: true });
    expect(backend.invokes).toEqual([{ token: "hcloud:index/getServers:getServers", args: { withSelector: "managed-by=keel,stack=prod" } }]);
    const { outcome } = await guard(config({ "keel:image": "debian-13", "keel:location": "nbg1" }));
    expect(outcome.status).toBe("rejected");
    const err = (outcome as PromiseRejectedResult).reason;
    expect(err).toBeInstanceOf(ConnectionChangeError);
    expect(err.problems).toEqual([
      expect.stringMatching(/^keel:image: the stack's server engine-prod runs image "ubuntu-24.04" at Hetzner \(its last pulumi up, by an older keel, recorded none\); "debian-13" would make Hetzner replace it.*fix: pulumi config set keel:image ubuntu-24.04 && pulumi config set keel:pythonVersion 3\.12; to move, replace the server/),
      expect.stringMatching(/^keel:location: the stack's server engine-prod runs location "fsn1" at Hetzner .*fix: pulumi config set keel:location fsn1;/),
    ]);
    // Once the server is gone (the replace procedure), or for a server of another Pulumi project
    // with this stack's name, the new values pass.
    backend.hetznerServers = [];
    expect((await guard(config({ "keel:image": "debian-13" }))).outcome).toEqual({ status: "fulfilled", value: true });
    backend.hetznerServers = [{ ...SERVER, labels: { ...SERVER.labels, project: "other" } }];
    expect((await guard(config({ "keel:image": "debian-13" }))).outcome).toEqual({ status: "fulfilled", value: true });
    // An older keel labelled no project: its server is this stack's by its service (the appName),
    // another project's older server (another appName) is not compared.
    const { project: _, ...unlabelled } = SERVER.labels;
    backend.hetznerServers = [{ ...SERVER, labels: { ...unlabelled, service: "trader" } }];
    expect((await guard(config({ "keel:image": "debian-13" }))).outcome).toEqual({ status: "fulfilled", value: true });
    backend.hetznerServers = [{ ...SERVER, labels: unlabelled }];
    expect((await guard(config({ "keel:image": "debian-13" }))).outcome.status).toBe("rejected");
    // A server made from a snapshot (an image id, no name) is not compared.
    backend.hetznerServers = [{ ...SERVER, image: "123456" }];
    expect((await guard(config({ "keel:image": "debian-13" }))).outcome).toEqual({ status: "fulfilled", value: true });
  });

  it("asks Hetzner nothing on a new stack (no last up)", async () => {
    const { outcome } = await guard(config({ "keel:image": "debian-13" }));
    expect(outcome).toEqual({ status: "fulfilled", value: true });
    expect(backend.invokes).toEqual([]);
  });

  it("names the stack itself in the StackReference: the bare stack name on a DIY backend, org/project/stack on Pulumi Cloud", async () => {
    // pulumi/pulumi v3.248.0 pkg/backend/diy/store.go ParseReference (both layouts take the bare
    // name; the legacy one refuses a "/"), pkg/backend/httpstate/backend.go ParseStackReference
    // (owner/project/stack, qualified: nothing inferred from the current user or project).
    backend.lastUp = LAST_UP;
    expect((await guard(config())).reference).toBe("prod");
    expect((await guard(config(), "acme")).reference).toBe("acme/keel/prod");
  });

  it("selects the server by keel's labels", () => {
    expect(serverSelector(LABELS)).toBe("managed-by=keel,stack=prod");
    expect(sshPorts(config({ "keel:sshPortNext": "2222" }))).toEqual([22, 2222]);
  });
});
