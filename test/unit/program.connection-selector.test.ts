// The whole prod program under the mock runtime, the last up having run another keel:appName: the
// check must look for the stack's server by labels that a new appName does not move (a selector
// with `service` would find no server and let the change through, onto an empty DB). Hetzner's
// list is empty here (as after the replace procedure), so the change passes and the program runs on.
import { describe, expect, it } from "vitest";
import { backend } from "../support/mocks";
import { resolved, runProgram } from "../support/program";

describe("the prod program after keel:appName changed", () => {
  it("asks Hetzner for the stack's server by managed-by and stack only (labels an older keel's server has too)", async () => {
    backend.lastUp = { sshPort: 22, sshPorts: [22], deployUser: "deploy", image: "ubuntu-24.04", location: "fsn1", paths: { db: "/var/lib/engine/engine.db" } };
    backend.hetznerServers = [];
    backend.invokes = [];
    const run = await runProgram("prod", { "keel:appName": "trader" });
    expect(backend.invokes).toEqual([{ token: "hcloud:index/getServers:getServers", args: { withSelector: "managed-by=keel,stack=prod" } }]);
    expect(await resolved(run.one("hcloud:index/server:Server").inputs.labels)).toEqual({ "managed-by": "keel", project: "keel", stack: "prod", service: "trader" });
  });
});
