import { expect } from "vitest";
import { FAKE_HCLOUD_PUBLIC, FAKE_HOST_PUBLIC, FAKE_PRIVATE_KEY } from "./mocks";
import { idOf, isSecret, resolved, type ProgramRun } from "./program";
import { CANARY } from "./stack";

/** Checks every stack must pass, whatever its config. */
export async function expectCommonShape(run: ProgramRun, stack: string): Promise<void> {
  // Names are unique, and every child is named after its parent component.
  const names = run.resources.map((r) => `${r.type}::${r.name}`);
  expect(new Set(names).size).toBe(names.length);
  for (const r of run.resources) {
    const parent = r.opts.parent;
    if (parent && run.resources.some((p) => p.resource === parent)) {
      const parentName = run.resources.find((p) => p.resource === parent)!.name;
      expect(r.name.startsWith(`${parentName}-`), `${r.name} is a child of ${parentName}`).toBe(true);
    }
  }
  // Components use keel's type tokens.
  const components = run.resources.filter((r) => r.type.startsWith("keel:")).map((r) => r.type).sort();
  expect(components).toEqual(["keel:hcloud:Firewall", "keel:hcloud:Server", "keel:host:Steps", "keel:index:Keel", "keel:ssh:Access"]);

  // The server is closed from first boot: its firewall is attached at creation.
  const server = run.one("hcloud:index/server:Server");
  const firewallId = await idOf(run.one("hcloud:index/firewall:Firewall"));
  expect(await resolved(server.inputs.firewallIds)).toEqual([Number(firewallId)]);
  // Hetzner gets the stack's own key (no root password mail), never an admin key: one fingerprint
  // per Hetzner project, so a second stack registering the same admin key would fail.
  const sshKey = run.one("hcloud:index/sshKey:SshKey");
  expect(await resolved(server.inputs.sshKeys)).toEqual([await idOf(sshKey)]);
  expect(await resolved(sshKey.inputs.publicKey)).toBe(FAKE_HCLOUD_PUBLIC);
  expect(await resolved(sshKey.inputs.name)).toMatch(new RegExp(`^keel-${stack}-[0-9a-f]{8}$`));
  expect(await resolved(server.inputs.labels)).toEqual({ "managed-by": "keel", project: "keel", stack, service: "engine" });

  // The user-data carries the host's private key: secret on the way in and in state.
  expect(await isSecret(server.inputs.userData)).toBe(true);
  expect(await resolved(server.inputs.userData)).toContain(FAKE_PRIVATE_KEY("host").split("\n")[1]);
  expect(server.opts.additionalSecretOutputs).toContain("userData");

  // Program-generated ED25519 keys.
  const keys = run.byType("tls:index/privateKey:PrivateKey");
  expect(await Promise.all(keys.map((k) => resolved(k.inputs.algorithm)))).toEqual(["ED25519", "ED25519", "ED25519"]);

  // Every step that runs on the server has the server's id among its triggers (any trigger change
  // replaces the resource, which runs create: pulumi-command v1.2.1
  // provider/pkg/provider/common/inputs.go), so a new server gets every step again; the operator's
  // local steps do not depend on the server.
  const serverId = await idOf(server);
  const uploads = run.byType("command:local:Command").filter((c) => c.name.endsWith("-upload"));
  for (const step of [...run.byType("command:remote:Command"), ...uploads]) {
    expect(await resolved<unknown[]>(step.inputs.triggers), step.name).toContain(serverId);
  }

  // Every remote command pins the host key and logs in as the deploy user.
  const commands = run.byType("command:remote:Command");
  expect(commands.length).toBeGreaterThan(3);
  for (const c of commands) {
    const conn = await resolved<Record<string, unknown>>(c.inputs.connection);
    expect(conn.hostKey, c.name).toBe(FAKE_HOST_PUBLIC);
    expect(conn.user).toBe("deploy");
    expect(conn.privateKey).toBeUndefined();
    expect(conn.password).toBeUndefined();
    expect(await resolved(c.inputs.addPreviousOutputInEnv)).toBe(false);
  }

  // Secret steps: stdin secret, logging off, secret trigger; secrets only ever on stdin.
  const secretSteps = ["keel-step-deploy-key", "keel-step-secrets"];
  for (const c of commands) {
    const stdin = await resolved<string | undefined>(c.inputs.stdin);
    const carries = (stdin ?? "").includes(CANARY) || (stdin ?? "").includes(FAKE_PRIVATE_KEY("deploy").split("\n")[1]);
    expect(carries, `${c.name} carries a secret`).toBe(secretSteps.includes(c.name));
    if (secretSteps.includes(c.name)) {
      expect(await isSecret(c.inputs.stdin), `${c.name} stdin is secret`).toBe(true);
      expect(await resolved(c.inputs.logging)).toBe("none");
      expect(c.opts.additionalSecretOutputs).toEqual(expect.arrayContaining(["stdin", "stdout", "stderr"]));
      expect(await isSecret((c.inputs.triggers as unknown[])[2])).toBe(true);
    }
    expect(String(await resolved(c.inputs.create))).not.toMatch(/PRIVATE KEY|canary/);
  }

  // Secret-derived outputs stay secret; the private keys are in no output at all.
  for (const [name, value] of Object.entries(run.outputs)) {
    const text = JSON.stringify(await resolved(value));
    expect(text, `output ${name}`).not.toContain("PRIVATE KEY");
    if (text.includes(CANARY)) expect(await isSecret(value), `output ${name}`).toBe(true);
  }
}
