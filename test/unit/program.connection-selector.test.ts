// The whole prod program under the mock runtime, the last up having run another keel:appName: the
// check must look for the stack's server by labels that a new appName does not move (a selector
// with `service` would find no server and let the change through, onto an empty DB). Hetzner's
// list is empty here (as after the replace procedure), so the change passes and the program runs on.
import * as pulumi from "@pulumi/pulumi";
import { describe, expect, it } from "vitest";
import { backend, installMocks, promiseOf, runInStack } from "../support/mocks";
import { stackConfig } from "../support/stack";

describe("the prod program after keel:appName changed", () => {
  it("asks Hetzner for the stack's server by managed-by and stack only (labels an older keel's server has too)", async () => {
    backend.lastUp = { sshPort: 22, sshPorts: [22], deployUser: "deploy", image: "ubuntu-24.04", location: "fsn1", paths: { db: "/var/lib/engine/engine.db" } };
    backend.hetznerServers = [];
    backend.invokes = [];
    const { raw, secretKeys } = stackConfig("prod");
    await installMocks("prod", { ...raw, "keel:appName": "trader" }, secretKeys);
    const { outputs, registered } = await runInStack(async () => ({ ...((await import("../../index")) as Record<string, unknown>) }));
    await Promise.all(Object.values(outputs).map((o) => (pulumi.Output.isInstance(o) ? promiseOf(o) : o)));
    await Promise.all(registered.map((r) => promiseOf(r.resource.urn)));
    expect(backend.invokes).toEqual([{ token: "hcloud:index/getServers:getServers", args: { withSelector: "managed-by=keel,stack=prod" } }]);
    const server = registered.find((r) => r.type === "hcloud:index/server:Server")!;
    expect(await promiseOf(server.inputs.labels as pulumi.Input<Record<string, string>>)).toEqual({ "managed-by": "keel", project: "keel", stack: "prod", service: "trader" });
  });
});
