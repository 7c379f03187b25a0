// local/runSteps.ts's engine mode (a state file), with a stand-in for the SSH session: it runs the
// steps whose inputs changed, as the Pulumi executor re-runs the commands whose triggers or
// connection changed (docs/LIFECYCLE.md). The real runs are the VM tier's.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parseConfig } from "../../config";
import { runSteps } from "../../local/runSteps";
import type { VmSession } from "../../local/vm";
import { buildHostPlan } from "../../plan/hostPlan";
import { stackConfig } from "../support/stack";

const dir = mkdtempSync(join(tmpdir(), "keel-run-steps-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function session(port: number, ran: string[]): VmSession {
  const fake = {
    loginUser: "deploy",
    sshGuestPort: port,
    hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeHostKeyForTestsOnly00000000000000000000",
    exec: async (command: string) => {
      ran.push(command);
      return { code: 0, stdout: "", stderr: "" };
    },
    setFirewall: async (open: readonly number[]) => {
      ran.push(`firewall ${open.join(",")}`);
    },
  };
  return fake as unknown as VmSession;
}

describe("runSteps with a state file", () => {
  const { raw, secretKeys } = stackConfig("prod");
  const cfg = parseConfig(raw, (k) => secretKeys.includes(k));
  const steps = buildHostPlan(cfg).steps;
  const secrets = { envFile: "A=1\n", deployKey: "key", alertWebhook: "" };
  const state = join(dir, "steps.json");

  it("runs every step once, then none while nothing changed", async () => {
    const first = await runSteps(session(22, []), steps, secrets, { stateFile: state, serverId: "4711" });
    expect(first.map((r) => r.name)).toEqual(steps.map((s) => s.name));
    expect(await runSteps(session(22, []), steps, secrets, { stateFile: state, serverId: "4711" })).toEqual([]);
  });

  it("runs only the step whose secret changed", async () => {
    const runs = await runSteps(session(22, []), steps, { ...secrets, envFile: "A=2\n" }, { stateFile: state, serverId: "4711" });
    expect(runs.map((r) => r.name)).toEqual(["secrets"]);
  });

  it("applies the firewall before any step, as the engine may (nothing orders it after the steps), even when no step runs", async () => {
    const ran: string[] = [];
    const runs = await runSteps(session(22, ran), steps, { ...secrets, envFile: "A=3\n" }, { stateFile: state, serverId: "4711", firewall: [22, 2222] });
    expect(runs.map((r) => r.name)).toEqual(["secrets"]);
    expect(ran[0]).toBe("firewall 22,2222");
    expect(ran).toHaveLength(2);
    const none: string[] = [];
    expect(await runSteps(session(22, none), steps, { ...secrets, envFile: "A=3\n" }, { stateFile: state, serverId: "4711", firewall: [22] })).toEqual([]);
    expect(none).toEqual(["firewall 22"]);
  });

  it("runs every step again on a new server (its id is a trigger of each), and on a new connection", async () => {
    const now = { ...secrets, envFile: "A=2\n" };
    expect((await runSteps(session(22, []), steps, now, { stateFile: state, serverId: "4712" })).map((r) => r.name)).toEqual(steps.map((s) => s.name));
    expect((await runSteps(session(2222, []), steps, now, { stateFile: state, serverId: "4712" })).map((r) => r.name)).toEqual(steps.map((s) => s.name));
    expect(await runSteps(session(2222, []), steps, now, { stateFile: state, serverId: "4712" })).toEqual([]);
  });
});

describe("runSteps with a state file: steps with a delete command (keel:https, keel:auditLog)", () => {
  const { raw, secretKeys } = stackConfig("staging");
  const config = (extra: Record<string, string>) => parseConfig({ ...raw, ...extra }, (k) => secretKeys.includes(k));
  const HTTPS = JSON.stringify({ domains: ["app.example.com"], upstream: "127.0.0.1:8000", acmeEmail: "ops@example.com", public: true });
  const off = buildHostPlan(config({})).steps;
  const on = buildHostPlan(config({ "keel:https": HTTPS, "keel:auditLog": "audit.log" })).steps;
  const secrets = { envFile: "A=1\n", deployKey: "key", alertWebhook: "" };
  const state = join(dir, "deletes.json");
  const commands = (ran: string[]) => ran.filter((c) => /keel-(https|audit-log) /.test(c));

  it("deletes the steps that left the plan after the plan's steps, last run first, running their delete commands", async () => {
    await runSteps(session(22, []), on, secrets, { stateFile: state, serverId: "1" });
    const ran: string[] = [];
    const runs = await runSteps(session(22, ran), off, secrets, { stateFile: state, serverId: "1" });
    expect(runs.filter((r) => r.name.endsWith("(delete)")).map((r) => r.name)).toEqual(["https-start (delete)", "audit-log-start (delete)"]);
    expect(runs.slice(-2).map((r) => r.name)).toEqual(["https-start (delete)", "audit-log-start (delete)"]);
    expect(commands(ran)).toEqual(["sudo /usr/local/sbin/keel-https off", "sudo /usr/local/sbin/keel-audit-log off"]);
    // Gone from the state: the next run deletes nothing again.
    expect(await runSteps(session(22, []), off, secrets, { stateFile: state, serverId: "1" })).toEqual([]);
  });

  it("on a new server, runs a step's recorded delete before the step again (delete-first replacement), on the address that now reaches the new server", async () => {
    await runSteps(session(22, []), on, secrets, { stateFile: state, serverId: "1" });
    const ran: string[] = [];
    await runSteps(session(22, ran), on, secrets, { stateFile: state, serverId: "2" });
    const mine = commands(ran);
    expect(mine.indexOf("sudo /usr/local/sbin/keel-audit-log off")).toBe(mine.findIndex((c) => c.includes("keel-audit-log enable")) - 1);
    expect(mine.indexOf("sudo /usr/local/sbin/keel-https off")).toBe(mine.findIndex((c) => c.includes("keel-https apply")) - 1);
    expect(mine.at(-1)).toMatch(/keel-https apply /);
  });
});
