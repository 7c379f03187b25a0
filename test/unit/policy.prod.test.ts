import { beforeAll, describe, expect, it } from "vitest";
import { FIREWALL, SERVER, keelPolicies } from "../../policy/policies";
import { allViolations, plainResource, type PlainResource } from "../../policy/testing";
import { runProgram } from "../support/program";

// keel's real prod program under Pulumi mocks, every registered resource fed through the pack.
describe("the policy pack on keel's prod stack", () => {
  let resources: PlainResource[];
  const policies = keelPolicies();
  beforeAll(async () => {
    const run = await runProgram("prod");
    resources = await Promise.all(run.resources.map(plainResource));
  });

  const nameOf = (type: string) => resources.find((r) => r.type === type)!.name;

  /** The stack with the one resource of `type` replaced by `change(copy)`. */
  function mutated(type: string, change: (r: PlainResource) => void): PlainResource[] {
    return resources.map((r) => {
      if (r.type !== type) return r;
      const copy = structuredClone(r);
      change(copy);
      return copy;
    });
  }

  it("passes every policy as keel builds it", async () => {
    expect(resources.map((r) => r.type)).toEqual(expect.arrayContaining([SERVER, FIREWALL]));
    expect(await allViolations(policies, resources)).toEqual([]);
  });

  it("fails when the server loses any protection or its backups", async () => {
    const unprotected = mutated(SERVER, (s) => {
      s.opts.protect = false;
      s.props.deleteProtection = false;
    });
    expect(await allViolations(policies, unprotected)).toEqual([
      expect.stringMatching(new RegExp(`^hcloud-prod-server-protected: ${nameOf(SERVER)}: production server: Pulumi protect is off; deleteProtection is off at Hetzner \\(`)),
    ]);
    const noBackups = mutated(SERVER, (s) => (s.props.backups = false));
    expect(await allViolations(policies, noBackups)).toEqual([expect.stringContaining("production server: Hetzner backups are off")]);
  });

  it("fails when the server boots without its firewall", async () => {
    const bare = mutated(SERVER, (s) => delete s.props.firewallIds);
    expect(await allViolations(policies, bare)).toEqual([
      expect.stringContaining(`hcloud-server-firewall-at-creation: ${nameOf(SERVER)}: the server has no firewallIds`),
    ]);
  });

  it("fails when the server could be replaced for userData", async () => {
    const replaceable = mutated(SERVER, (s) => (s.opts.ignoreChanges = ["sshKeys"]));
    expect(await allViolations(policies, replaceable)).toEqual([
      expect.stringContaining(`hcloud-server-ignore-changes: ${nameOf(SERVER)}: the server's ignoreChanges lacks userData`),
    ]);
  });

  it("fails when the firewall opens another port or SSH to everyone", async () => {
    const other = mutated(FIREWALL, (f) => (f.props.rules as unknown[]).push({ direction: "in", protocol: "tcp", port: "8080", sourceIps: ["0.0.0.0/0"] }));
    expect(await allViolations(policies, other)).toEqual([
      expect.stringContaining(`hcloud-firewall-ssh-only: ${nameOf(FIREWALL)}: rules[2] opens inbound TCP port 8080 to 0.0.0.0/0`),
      expect.stringContaining(`hcloud-firewall-ssh-only: ${nameOf(FIREWALL)}: inbound TCP is open on 2 ports (22, 8080)`),
    ]);
    // keel's prod stack file does not set keel:https: 80 is refused as keel:https's port.
    const web = mutated(FIREWALL, (f) => (f.props.rules as unknown[]).push({ direction: "in", protocol: "tcp", port: "80", sourceIps: ["0.0.0.0/0"] }));
    expect(await allViolations(policies, web)).toEqual([
      expect.stringContaining(`hcloud-firewall-ssh-only: ${nameOf(FIREWALL)}: rules[2] opens inbound TCP port 80, but the stack file does not set keel:https`),
    ]);
    const open = mutated(FIREWALL, (f) => ((f.props.rules as Array<{ sourceIps: string[] }>)[0].sourceIps = ["::/0"]));
    expect(await allViolations(policies, open)).toEqual([expect.stringContaining("rules[0] opens inbound TCP port 22 to ::/0 (the whole internet)")]);
  });
});
