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
