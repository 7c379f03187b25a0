import { beforeAll, describe, expect, it } from "vitest";
import { FAKE_HOST_PUBLIC } from "../support/mocks";
import { resolved, runProgram, type ProgramRun } from "../support/program";
import { expectCommonShape } from "../support/programShape";

describe("the staging stack under Pulumi mocks", () => {
  let run: ProgramRun;
  beforeAll(async () => {
    run = await runProgram("staging");
  });

  it("has the common shape (names, parents, pinned host key, secrets)", async () => {
    await expectCommonShape(run, "staging");
  });

  it("registers nothing at GitHub and reads no github:token while keel:githubDeployKey is off (the default)", () => {
    expect(run.resources.filter((r) => r.type.startsWith("github:") || r.type === "pulumi:providers:github")).toEqual([]);
  });

  it("is disposable: nothing protected, no paid backups, but userData and sshKeys still never replace it", async () => {
    const server = run.one("hcloud:index/server:Server");
    expect(server.opts.protect).toBe(false);
    expect(server.opts.ignoreChanges).toEqual(expect.arrayContaining(["userData", "sshKeys"]));
    expect(await resolved(server.inputs.deleteProtection)).toBe(false);
    expect(await resolved(server.inputs.rebuildProtection)).toBe(false);
    expect(await resolved(server.inputs.backups)).toBe(false);
    for (const ip of run.byType("hcloud:index/primaryIp:PrimaryIp")) {
      expect(ip.opts.protect).toBe(false);
      expect(await resolved(ip.inputs.autoDelete)).toBe(false);
    }
  });

  it("without keel:https: no delete command on any step and no DNS records to create (test/unit/https.test.ts has it set)", async () => {
    for (const c of run.byType("command:remote:Command")) expect(c.inputs.delete, c.name).toBeUndefined();
    expect(await resolved(run.outputs.httpsDnsRecords)).toEqual([]);
  });

  it("uses the custom SSH port everywhere: firewall, every connection, known_hosts, ssh command", async () => {
    const rules = await resolved<Array<Record<string, unknown>>>(run.one("hcloud:index/firewall:Firewall").inputs.rules);
    expect(rules.filter((r) => r.protocol === "tcp").map((r) => r.port)).toEqual(["2222"]);
    for (const c of run.byType("command:remote:Command")) {
      expect((await resolved<Record<string, unknown>>(c.inputs.connection)).port).toBe(2222);
    }
    expect(await resolved(run.outputs.knownHosts)).toBe(`[198.51.100.7]:2222,[2001:db8:4f8::1]:2222 ${FAKE_HOST_PUBLIC}`);
    expect(await resolved(run.outputs.sshCommand)).toMatch(/ -p 2222 deploy@198\.51\.100\.7$/);
  });
});
