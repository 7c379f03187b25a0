// The developer set-up (scripts/dev/setup.js) on this machine: the packages it finds missing in the
// real dpkg database, and a run as a real user who is not root (nobody), which must refuse with the
// command to run and change nothing. Its decisions are unit-tested in test/unit/setup.test.ts.
import { spawnSync } from "node:child_process";
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { missingFrom } from "../../scripts/dev/setup";
import { REPO } from "../support/stack";

const tmp = mkdtempSync(join(tmpdir(), "keel-setup-host-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe("the set-up against this machine", () => {
  it("finds a package missing from the real dpkg database, and none that is installed", () => {
    const names = ["dpkg", "keel-no-such-package"];
    const query = spawnSync("dpkg-query", ["-W", "-f", "${Package} ${db:Status-Status}\n", ...names], { encoding: "utf8" });
    expect(missingFrom(names, query.stdout)).toEqual(["keel-no-such-package"]);
  });
  it("exits 1 with the command to run, and leaves a checkout without node_modules as it was", () => {
    // A copy of the set-up and the lockfile, readable by nobody, in a directory with no node_modules.
    const dir = join(tmp, "as-nobody");
    mkdirSync(join(dir, "scripts", "dev"), { recursive: true });
    for (const f of ["scripts/dev/setup.js", "scripts/dev/debian-packages.txt", "package-lock.json", "package.json"]) cpSync(join(REPO, f), join(dir, f));
    chmodSync(tmp, 0o755);
    const r = spawnSync("setpriv", ["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", process.execPath, join(dir, "scripts", "dev", "setup.js"), "test"], { encoding: "utf8", cwd: dir });
    expect(r.status, r.stderr).toBe(1);
    expect(r.stderr).toMatch(/^setup: npm test needs root: .* Nothing was changed\.\nAs root it will first .*run npm ci \(node_modules is missing\)\.\nRun: sudo npm test\n$/s);
    expect(existsSync(join(dir, "node_modules"))).toBe(false);
  });

  it("refuses a command it does not know, with its usage", () => {
    const r = spawnSync(process.execPath, [join(REPO, "scripts", "dev", "setup.js"), "deploy"], { encoding: "utf8" });
    expect(r.status).toBe(2);
    expect(r.stderr).toBe("usage: node scripts/dev/setup.js test|demo\n");
  });
});
