import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { REPO } from "../support/stack";

describe("index.ts loaded the way Pulumi loads it", () => {
  it("compiles with ts-node under the project tsconfig and registers the whole stack", () => {
    const r = spawnSync(process.execPath, [join(REPO, "test", "support", "pulumi-child.js"), "prod"], { cwd: REPO, encoding: "utf8", timeout: 120_000 });
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    const { resources, outputs } = JSON.parse(r.stdout) as { resources: string[]; outputs: Record<string, unknown> };
    expect(resources).toEqual(expect.arrayContaining(["keel:index:Keel keel", "hcloud:index/server:Server keel-host-server", "command:remote:Command keel-step-ready"]));
    expect(outputs.serviceName).toBe("engine.service");
    expect(outputs.sshPort).toBe(22);
  }, 180_000);
});
