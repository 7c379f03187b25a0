// The repository is self-contained: a clone of it alone, with its own node_modules, passes the unit
// tier (what a user's clone and the PR and deploy workflows run: `npm run test:unit`). The copy
// holds exactly the files git would check out, in a directory with nothing beside it, so a test or
// a program file that reads outside the repository (a sibling directory of the checkout) fails here with ENOENT.
import { execFileSync, spawnSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { REPO } from "../support/stack";

const tmp = mkdtempSync(join(tmpdir(), "keel-clone-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe("a copy of the repository alone", () => {
  it("passes the unit tier", () => {
    const copy = join(tmp, "keel");
    // Tracked files and new ones not ignored: the working tree as a commit of it would check out.
    const files = execFileSync("git", ["-C", REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard"], { encoding: "utf8" }).split("\0").filter(Boolean);
    expect(files).toContain("package-lock.json");
    for (const f of files) {
      mkdirSync(dirname(join(copy, f)), { recursive: true });
      cpSync(join(REPO, f), join(copy, f), { verbatimSymlinks: true });
    }
    // The installed dependencies, as `npm ci` would have put them there.
    symlinkSync(join(REPO, "node_modules"), join(copy, "node_modules"));
    const r = spawnSync(join(copy, "node_modules", ".bin", "vitest"), ["run", "test/unit"], {
      cwd: copy,
      encoding: "utf8",
      env: { ...process.env, FORCE_COLOR: "0", CI: "1" },
      timeout: 10 * 60_000,
    });
    expect(r.status, `${r.stdout}\n${r.stderr}`.slice(-4000)).toBe(0);
    expect(r.stdout.replace(/\x1b\[[0-9;]*m/g, "")).toMatch(/Test Files +\d+ passed/);
  }, 11 * 60_000);
});
