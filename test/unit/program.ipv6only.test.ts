import { beforeAll, describe, expect, it } from "vitest";
import { resolved, runProgram, type ProgramRun } from "../support/program";

describe("an IPv6-only stack under Pulumi mocks", () => {
  let run: ProgramRun;
  beforeAll(async () => {
    run = await runProgram("prod", { "keel:ipv4": "false" });
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
