import { beforeAll, describe, expect, it } from "vitest";
import { buildHostPlan } from "../../plan/hostPlan";
import { parseConfig } from "../../config";
import { FAKE_DEPLOY_PUBLIC, FAKE_HOST_PUBLIC } from "../support/mocks";
import { idOf, isSecret, resolved, runProgram, type ProgramRun } from "../support/program";
import { CANARY, stackConfig } from "../support/stack";
import { expectCommonShape } from "../support/programShape";

const COMMAND = "command:remote:Command";

describe("the prod stack under Pulumi mocks", () => {
  let run: ProgramRun;
  beforeAll(async () => {
    run = await runProgram("prod");
  });

  it("has the common shape (names, parents, pinned host key, secrets)", async () => {
    await expectCommonShape(run, "prod");
  });

  it("protects the server and its IPs, at Pulumi and at Hetzner, and never replaces it for userData or sshKeys", async () => {
    const server = run.one("hcloud:index/server:Server");
    expect(server.opts.protect).toBe(true);
    expect(server.opts.ignoreChanges).toEqual(expect.arrayContaining(["userData", "sshKeys"]));
    expect(await resolved(server.inputs.deleteProtection)).toBe(true);
    expect(await resolved(server.inputs.rebuildProtection)).toBe(true);
    expect(await resolved(server.inputs.backups)).toBe(true);
    expect(await resolved(server.inputs.name)).toBe("engine-prod");
    for (const ip of run.byType("hcloud:index/primaryIp:PrimaryIp")) {
      expect(ip.opts.protect).toBe(true);
      expect(await resolved(ip.inputs.deleteProtection)).toBe(true);
      expect(await resolved(ip.inputs.autoDelete)).toBe(false);
    }
  });

  it("builds the server as configured, with both primary IPs attached", async () => {
    const server = run.one("hcloud:index/server:Server");
    expect(await resolved(server.inputs.serverType)).toBe("cx23");
    expect(await resolved(server.inputs.image)).toBe("ubuntu-24.04");
    expect(await resolved(server.inputs.location)).toBe("fsn1");
    const ips = run.byType("hcloud:index/primaryIp:PrimaryIp");
    expect((await Promise.all(ips.map((ip) => resolved(ip.inputs.type)))).sort()).toEqual(["ipv4", "ipv6"]);
    const ipIds = await Promise.all(ips.map(idOf));
    const [net] = await resolved<Array<Record<string, unknown>>>(server.inputs.publicNets);
    expect(net).toEqual({ ipv4Enabled: true, ipv4: expect.any(Number), ipv6Enabled: true, ipv6: expect.any(Number) });
    expect([String(net.ipv4), String(net.ipv6)].sort()).toEqual(ipIds.sort());
  });

  it("opens only SSH from the allowed CIDRs, plus ICMP", async () => {
    const rules = await resolved<Array<Record<string, unknown>>>(run.one("hcloud:index/firewall:Firewall").inputs.rules);
    expect(rules).toEqual([
      { direction: "in", protocol: "tcp", port: "22", sourceIps: ["203.0.113.10/32", "2001:db8:1234::/48"], description: "SSH from the admin CIDRs" },
      { direction: "in", protocol: "icmp", sourceIps: ["0.0.0.0/0", "::/0"], description: "ICMP (ping, path MTU discovery)" },
    ]);
  });

  it("runs every plan step, in order, as one remote command each", async () => {
    const { raw, secretKeys } = stackConfig("prod");
    const plan = buildHostPlan(parseConfig(raw, (k) => secretKeys.includes(k)));
    const commands = run.byType(COMMAND);
    expect(commands.map((c) => c.name)).toEqual(plan.steps.map((s) => `keel-step-${s.name}`));
    for (const [i, c] of commands.entries()) {
      expect(await resolved(c.inputs.create)).toBe(plan.steps[i].command);
      expect(c.opts.dependsOn).toEqual(i === 0 ? [] : [commands[i - 1].resource]);
      expect(c.opts.customTimeouts).toEqual({ create: `${plan.steps[i].timeoutSeconds}s`, update: `${plan.steps[i].timeoutSeconds}s`, delete: `${plan.steps[i].timeoutSeconds}s` });
      // Triggers (a change replaces): the tools it runs, then the server's id; command and stdin are
      // plain inputs (a change updates: components/hostSteps.ts).
      const triggers = await resolved<string[]>(c.inputs.triggers);
      const step = plan.steps[i];
      if (step.kind === "local" || step.kind === "upload") throw new Error(`${step.name}: the prod plan has remote steps only`);
      expect(triggers[0]).toBe(step.unseenHash);
      // What makes a trigger's change a replace: the option @pulumi/command 1.2.1's SDK adds
      // (remote/command.js), which the engine applies to the provider's diff.
      expect(c.opts.replaceOnChanges).toEqual(["triggers[*]"]);
      if (!step.secret) expect(await resolved(c.inputs.stdin)).toBe(step.stdin);
    }
    // A preview shows no diff of a big stdin (the tools bundle): "stdin (hidden)".
    const bigStdin = plan.steps.filter((s) => (s.kind ?? "remote") === "remote" && "stdin" in s && typeof s.stdin === "string" && s.stdin.length > 4096).map((s) => `keel-step-${s.name}`);
    expect(bigStdin).toContain("keel-step-tools");
    for (const c of commands) expect(c.opts.hideDiffs, c.name).toEqual(bigStdin.includes(c.name) ? ["stdin"] : undefined);
    const ready = await resolved<Record<string, unknown>>(commands[0].inputs.connection);
    // Readiness waits for sshd as long as its timeout (unlimited dials; the custom timeout ends the
    // provider's dial loop: pulumi-go-provider v1.3.0 middleware/cancel/cancel.go); later steps keep
    // the provider's default limit.
    expect(ready.dialErrorLimit).toBe(-1);
    // (the SDK fills in 10: @pulumi/command 1.2.1 types/input.js connectionArgsProvideDefaults).
    for (const c of commands.slice(1)) expect((await resolved<Record<string, unknown>>(c.inputs.connection)).dialErrorLimit, c.name).toBe(10);
  });

  it("exports what the runbook needs", async () => {
    const o = run.outputs;
    expect(await resolved(o.ipv4)).toBe("198.51.100.7");
    expect(await resolved(o.ipv6)).toBe("2001:db8:4f8::1");
    expect(o.sshPort).toBe(22);
    expect(o.deployUser).toBe("deploy");
    expect(await resolved(o.knownHosts)).toBe(`198.51.100.7,2001:db8:4f8::1 ${FAKE_HOST_PUBLIC}`);
    expect(await resolved(o.sshCommand)).toBe("ssh -o StrictHostKeyChecking=yes -o UserKnownHostsFile=keel_known_hosts -o GlobalKnownHostsFile=/dev/null -p 22 deploy@198.51.100.7");
    expect(await resolved(o.deployPublicKey)).toBe(FAKE_DEPLOY_PUBLIC);
    expect(o.serviceName).toBe("engine.service");
    expect(o.paths).toMatchObject({
      appDir: "/opt/engine/app",
      venv: "/opt/engine/venv",
      configFile: "/etc/engine/config.yaml",
      envFile: "/etc/engine/engine.env",
      db: "/var/lib/engine/engine.db",
      backupDir: "/var/backups/engine",
    });
  });

  it("keeps the canary secret out of every command text and every non-secret output", async () => {
    for (const c of run.byType(COMMAND)) expect(String(await resolved(c.inputs.create))).not.toContain(CANARY);
    for (const [name, value] of Object.entries(run.outputs)) {
      if (await isSecret(value)) continue;
      expect(JSON.stringify(await resolved(value)), `output ${name}`).not.toContain(CANARY);
    }
  });
});
