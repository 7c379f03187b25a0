import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";
import * as grpc from "@grpc/grpc-js";
import { Struct } from "google-protobuf/google/protobuf/struct_pb";
import { Empty } from "google-protobuf/google/protobuf/empty_pb";
import { AnalyzerClient } from "@pulumi/pulumi/proto/analyzer_grpc_pb";
import * as analyzer from "@pulumi/pulumi/proto/analyzer_pb";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { REPO } from "../support/stack";

// The pack as `pulumi preview --policy-pack policy` runs it: the CLI's `pulumi-analyzer-policy` shim
// resolves @pulumi/pulumi/cmd/run-policy-pack from the pack's directory and starts it there, with
// the engine's address and "." as arguments; run-policy-pack compiles index.ts with ts-node
// (type-checked, the pack's tsconfig) and the pack serves the Analyzer gRPC service on loopback,
// printing its port. This test plays the engine's side of that conversation.

const POLICY_DIR = join(REPO, "policy");
/** The engine's marker for a value unknown during preview (plugin.UnknownStringValue). */
const UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";

describe("the policy pack served as the Pulumi CLI runs it", () => {
  let pack: ChildProcessWithoutNullStreams;
  let client: AnalyzerClient;
  let stderr = "";

  beforeAll(async () => {
    const runPolicyPack = require.resolve("@pulumi/pulumi/cmd/run-policy-pack", { paths: [POLICY_DIR] });
    pack = spawn(process.execPath, [runPolicyPack, "127.0.0.1:1", "."], {
      cwd: POLICY_DIR,
      env: { ...process.env, PULUMI_NODEJS_PROJECT: "keel", PULUMI_NODEJS_STACK: "prod", PULUMI_NODEJS_DRY_RUN: "true" },
    });
    pack.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const port = await new Promise<string>((resolve, reject) => {
      createInterface({ input: pack.stdout }).once("line", resolve);
      pack.once("exit", (code) => reject(new Error(`the policy pack exited with ${code}: ${stderr}`)));
    });
    expect(port).toMatch(/^[0-9]+$/);
    client = new AnalyzerClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  }, 120_000);

  afterAll(() => {
    client?.close();
    pack?.kill();
  });

  const call = <Req, Res>(method: (req: Req, cb: (err: grpc.ServiceError | null, res: Res) => void) => unknown, req: Req) =>
    new Promise<Res>((resolve, reject) => method.call(client, req, (err, res) => (err ? reject(err) : resolve(res))));

  function options(protect: boolean, ignoreChanges: string[]): analyzer.AnalyzerResourceOptions {
    return new analyzer.AnalyzerResourceOptions().setProtect(protect).setIgnorechangesList(ignoreChanges);
  }

  async function analyze(stack: string, type: string, props: Record<string, unknown>, opts = options(false, [])) {
    const name = type === "hcloud:index/server:Server" ? "keel-server-server" : "keel-firewall-fw";
    const req = new analyzer.AnalyzeRequest()
      .setType(type)
      .setName(name)
      .setUrn(`urn:pulumi:${stack}::keel::keel:index:Keel$${type}::${name}`)
      .setProperties(Struct.fromJavaScript(props as never))
      .setOptions(opts);
    const res = await call<analyzer.AnalyzeRequest, analyzer.AnalyzeResponse>(client.analyze, req);
    return res.getDiagnosticsList().map((d) => ({ policy: d.getPolicyname(), level: d.getEnforcementlevel(), message: d.getMessage() }));
  }

  async function analyzeStack(stack: string) {
    const resource = new analyzer.AnalyzerResource()
      .setType("pulumi:pulumi:Stack")
      .setName(`keel-${stack}`)
      .setUrn(`urn:pulumi:${stack}::keel::pulumi:pulumi:Stack::keel-${stack}`)
      .setProperties(new Struct())
      .setOptions(options(false, []));
    const res = await call<analyzer.AnalyzeStackRequest, analyzer.AnalyzeResponse>(client.analyzeStack, new analyzer.AnalyzeStackRequest().setResourcesList([resource]));
    return res.getDiagnosticsList().map((d) => ({ policy: d.getPolicyname(), level: d.getEnforcementlevel(), message: d.getMessage() }));
  }

  it("boots, and declares keel's six policies, all mandatory", async () => {
    const info = await call<Empty, analyzer.AnalyzerInfo>(client.getAnalyzerInfo, new Empty());
    expect(info.getName()).toBe("keel");
    expect(info.getVersion()).toBe("0.1.0");
    expect(info.getPoliciesList().map((p) => [p.getName(), p.getEnforcementlevel()])).toEqual([
      ["hcloud-firewall-ssh-only", analyzer.EnforcementLevel.MANDATORY],
      ["hcloud-server-firewall-at-creation", analyzer.EnforcementLevel.MANDATORY],
      ["hcloud-server-ignore-changes", analyzer.EnforcementLevel.MANDATORY],
      ["hcloud-prod-server-protected", analyzer.EnforcementLevel.MANDATORY],
      ["github-deploy-key-read-only", analyzer.EnforcementLevel.MANDATORY],
      ["config-no-plaintext-secrets", analyzer.EnforcementLevel.MANDATORY],
    ]);
  });

  it("passes keel's firewall and refuses a second open port", async () => {
    const ssh = { direction: "in", protocol: "tcp", port: "22", sourceIps: ["203.0.113.10/32"] };
    expect(await analyze("prod", "hcloud:index/firewall:Firewall", { rules: [ssh] })).toEqual([]);
    const web = { direction: "in", protocol: "tcp", port: "8443", sourceIps: ["203.0.113.10/32"] };
    expect(await analyze("prod", "hcloud:index/firewall:Firewall", { rules: [ssh, web] })).toEqual([
      { policy: "hcloud-firewall-ssh-only", level: analyzer.EnforcementLevel.MANDATORY, message: expect.stringContaining("inbound TCP is open on 2 ports (22, 8443)") },
    ]);
  });

  it("reads protect and ignoreChanges from the engine's resource options", async () => {
    const server = { firewallIds: [UNKNOWN], deleteProtection: true, rebuildProtection: true, backups: true };
    expect(await analyze("prod", "hcloud:index/server:Server", server, options(true, ["userData", "sshKeys"]))).toEqual([]);
    expect(await analyze("prod", "hcloud:index/server:Server", server, options(false, ["sshKeys"]))).toEqual([
      { policy: "hcloud-server-ignore-changes", level: analyzer.EnforcementLevel.MANDATORY, message: expect.stringContaining("lacks userData") },
      { policy: "hcloud-prod-server-protected", level: analyzer.EnforcementLevel.MANDATORY, message: expect.stringContaining("Pulumi protect is off") },
    ]);
    expect(await analyze("staging", "hcloud:index/server:Server", { ...server, firewallIds: [] }, options(false, ["userData", "sshKeys"]))).toEqual([
      { policy: "hcloud-server-firewall-at-creation", level: analyzer.EnforcementLevel.MANDATORY, message: expect.stringContaining("no firewallIds") },
    ]);
  });

  it("finds keel's stack files from the pack's own directory", async () => {
    expect(await analyzeStack("prod")).toEqual([]);
    expect(await analyzeStack("staging")).toEqual([]);
    expect(await analyzeStack("qa")).toEqual([
      { policy: "config-no-plaintext-secrets", level: analyzer.EnforcementLevel.MANDATORY, message: expect.stringContaining("no stack file Pulumi.qa.yaml") },
    ]);
  });
});
