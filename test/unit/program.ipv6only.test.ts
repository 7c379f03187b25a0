import { beforeAll, describe, expect, it } from "vitest";
import { resolved, runProgram, type ProgramRun } from "../support/program";

describe("an IPv6-only stack under Pulumi mocks", () => {
  let run: ProgramRun;
  beforeAll(async () => {
    // GitHub serves git over IPv4 only, so an IPv6-only stack needs a repository elsewhere.
    run = await runProgram("prod", {
      "keel:ipv4": "false",
      "keel:repoUrl": "ssh://git@git.example.org/engine.git",
      "keel:gitKnownHosts": JSON.stringify(["git.example.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"]),
    });
  });

  it("creates only the IPv6 primary IP and connects over IPv6", async () => {
    const ips = run.byType("hcloud:index/primaryIp:PrimaryIp");
    expect(await Promise.all(ips.map((ip) => resolved(ip.inputs.type)))).toEqual(["ipv6"]);
    const [net] = await resolved<Array<Record<string, unknown>>>(run.one("hcloud:index/server:Server").inputs.publicNets);
    expect(net.ipv4Enabled).toBe(false);
    expect(net.ipv4).toBeUndefined();
    for (const c of run.byType("command:remote:Command")) {
      expect((await resolved<Record<string, unknown>>(c.inputs.connection)).host).toBe("2001:db8:4f8::1");
    }
    expect(await resolved(run.outputs.ipv4)).toBeUndefined();
    expect(await resolved(run.outputs.sshCommand)).toMatch(/deploy@2001:db8:4f8::1$/);
  });
});
