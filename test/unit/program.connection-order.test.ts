// The whole program under the mock runtime, with the last up's outputs held back: nothing that
// reaches the server (the Hetzner firewall, the server and its user-data, any step) is sent to the
// engine before the connection check (components/connectionGuard.ts) has read them, so a refused
// change leaves all of it as it was. What the mock shows is the program's order of registrations;
// that the engine changes nothing it was never asked to register follows from it
// (pulumi/pulumi v3.248.0 pkg/resource/deploy/deployment_executor.go: deletes are generated only
// after the program ended without error).
import * as pulumi from "@pulumi/pulumi";
import { afterAll, describe, expect, it } from "vitest";
import { backend, installMocks, promiseOf, runInStack } from "../support/mocks";
import { stackConfig } from "../support/stack";

describe("the prod program, while the last up's outputs are read", () => {
  let release!: () => void;
  afterAll(() => release?.());

  it("sends the engine nothing that reaches the server until the check passed; then everything, with the served ports as an output", async () => {
    backend.lastUp = { sshPort: 22, sshPorts: [22], deployUser: "deploy", image: "ubuntu-24.04", location: "fsn1" };
    backend.engineSaw = [];
    backend.holdLastUp = new Promise((resolve) => (release = resolve));
    const { raw, secretKeys } = stackConfig("prod");
    await installMocks("prod", raw, secretKeys);
    const running = runInStack(async () => ({ ...((await import("../../index")) as Record<string, unknown>) }));
    // Let every registration that does not wait on the check reach the engine: the check's read
    // and the keys (which need nothing of it), then a while longer for anything else to come.
    for (let i = 0; i < 300 && !(backend.engineSaw.includes("pulumi:pulumi:StackReference") && backend.engineSaw.includes("random:index/randomId:RandomId")); i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    await new Promise((r) => setTimeout(r, 1000));
    const before = [...backend.engineSaw];
    expect(before).toContain("pulumi:pulumi:StackReference");
    expect(before).toContain("tls:index/privateKey:PrivateKey");
    for (const type of ["hcloud:index/firewall:Firewall", "hcloud:index/server:Server", "hcloud:index/primaryIp:PrimaryIp", "hcloud:index/sshKey:SshKey", "command:remote:Command", "command:local:Command"]) {
      expect(before, type).not.toContain(type);
    }
    release();
    const { outputs, registered } = await running;
    await Promise.all(Object.values(outputs).map((o) => (pulumi.Output.isInstance(o) ? promiseOf(o) : o)));
    await Promise.all(registered.map((r) => promiseOf(r.resource.urn)));
    for (const type of ["hcloud:index/firewall:Firewall", "hcloud:index/server:Server", "command:remote:Command"]) {
      expect(backend.engineSaw, type).toContain(type);
    }
    expect(outputs.sshPorts).toEqual([22]);
    expect(backend.invokes).toEqual([]);
  });
});
