// The developer set-up (scripts/dev/setup.js) that `npm test` and `npm run demo` run first: what it
// decides for a machine without node_modules, with a stale one, with a Debian package missing, and
// for a user who is not root, from lockfiles in temporary directories. test/host/setup.test.ts runs
// it against this machine's dpkg database and as a real unprivileged user.
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { asRootCommand, decide, missingFrom, nodeModulesState, PACKAGE_LIST, packagesFor } from "../../scripts/dev/setup";
import { REPO } from "../support/stack";

const LOCK = JSON.parse(readFileSync(join(REPO, "package-lock.json"), "utf8")) as { packages: Record<string, Record<string, unknown>> };
const tmp = mkdtempSync(join(tmpdir(), "keel-setup-test-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** A project directory holding the real package-lock.json and, unless null, this hidden lockfile. */
function project(name: string, installed: Record<string, Record<string, unknown>> | null | "no-record"): string {
  const dir = join(tmp, name);
  mkdirSync(dir);
  cpSync(join(REPO, "package-lock.json"), join(dir, "package-lock.json"));
  if (installed !== null) {
    mkdirSync(join(dir, "node_modules"));
    if (installed !== "no-record") writeFileSync(join(dir, "node_modules", ".package-lock.json"), JSON.stringify({ lockfileVersion: 3, packages: installed }));
  }
  return dir;
}

/** What `npm ci` records: every lockfile package but the project itself and optional ones for other platforms. */
function asNpmCiInstalls(): Record<string, Record<string, unknown>> {
  return Object.fromEntries(Object.entries(LOCK.packages).filter(([name, entry]) => name !== "" && !entry.optional));
}

describe("node_modules against package-lock.json", () => {
  it("is missing when there is no node_modules", () => {
    expect(nodeModulesState(project("none", null))).toEqual({ state: "missing", reason: "node_modules is missing" });
  });

  it("is stale when npm left no record of what it installed", () => {
    expect(nodeModulesState(project("no-record", "no-record"))).toMatchObject({ state: "stale", reason: "node_modules has no record of what npm installed in it" });
  });

  it("matches what npm ci installs, optional packages for other platforms left out", () => {
    expect(nodeModulesState(project("same", asNpmCiInstalls()))).toEqual({ state: "ok" });
  });

  it("matches the node_modules npm ci made in this checkout", () => {
    expect(nodeModulesState(REPO)).toEqual({ state: "ok" });
  });

  it("is stale when a package has another version, names it and both versions", () => {
    const installed = asNpmCiInstalls();
    installed["node_modules/zod"] = { ...installed["node_modules/zod"], version: "3.0.0" };
    expect(nodeModulesState(project("older", installed))).toEqual({ state: "stale", reason: `zod is 3.0.0, package-lock.json wants ${LOCK.packages["node_modules/zod"].version}` });
  });

  it("is stale when a package is missing or one is there that the lockfile does not have", () => {
    const without = asNpmCiInstalls();
    delete without["node_modules/yaml"];
    expect(nodeModulesState(project("without", without))).toMatchObject({ state: "stale", reason: `yaml ${LOCK.packages["node_modules/yaml"].version} is not installed` });
    const extra = { ...asNpmCiInstalls(), "node_modules/left-pad": { version: "1.3.0" } };
    expect(nodeModulesState(project("extra", extra))).toEqual({ state: "stale", reason: "left-pad is installed but not in package-lock.json" });
  });
});

describe("the Debian package list", () => {
  const text = readFileSync(PACKAGE_LIST, "utf8");

  it("lists what the demo needs as part of what the tests need", () => {
    const demo = packagesFor(text, "demo");
    const test = packagesFor(text, "test");
    expect(demo).toEqual(expect.arrayContaining(["qemu-system-x86", "debootstrap", "genisoimage", "openssh-client"]));
    expect(test).toEqual(expect.arrayContaining([...demo, "sqlite3", "shellcheck", "openssh-server", "cloud-init", "fail2ban"]));
    expect(test).not.toContain("setpriv");
  });

  it("refuses a line it cannot read, naming the file and line", () => {
    expect(() => packagesFor("sqlite3 test\nqemu-utils tset\n", "test")).toThrow(/debian-packages\.txt:2: expected "PACKAGE test\|demo\.\.\.", found "qemu-utils tset"/);
    expect(() => packagesFor("-oAPT::X=1 test\n", "test")).toThrow(/:1: expected/);
  });

  it("counts a package dpkg remembers but that is removed (config-files) as missing", () => {
    expect(missingFrom(["ufw", "sqlite3"], "ufw config-files\nsqlite3 installed\n")).toEqual(["ufw"]);
  });

});

describe("what the set-up decides", () => {
  const base = { command: "test" as const, dpkg: true, packages: ["qemu-utils", "sqlite3"], nodeDir: "/usr/bin" };

  it("as root with a package missing and no node_modules: apt-get first, then npm ci", () => {
    const d = decide({ ...base, root: true, missingPackages: ["sqlite3"], nodeModules: { state: "missing", reason: "node_modules is missing" } });
    expect(d).toEqual({
      ok: true,
      actions: [{ kind: "apt", packages: ["sqlite3"] }, { kind: "npm-ci", reason: "node_modules is missing" }],
      summary: "setting up for npm test: install 1 Debian package(s): sqlite3; run npm ci (node_modules is missing)",
    });
  });

  it("as root with a stale node_modules only: npm ci and nothing else", () => {
    const d = decide({ ...base, command: "demo", root: true, missingPackages: [], nodeModules: { state: "stale", reason: "zod is 3.0.0, package-lock.json wants 4.6.7" } });
    expect(d).toMatchObject({ ok: true, actions: [{ kind: "npm-ci" }] });
  });

  it("as root with everything in place: nothing to do", () => {
    expect(decide({ ...base, root: true, missingPackages: [], nodeModules: { state: "ok" } })).toEqual({
      ok: true,
      actions: [],
      summary: "ready for npm test: 2 Debian packages present, node_modules matches package-lock.json",
    });
  });

  it("not root: refuses, says what it would do and the exact command, changes nothing", () => {
    const d = decide({ ...base, root: false, missingPackages: ["sqlite3"], nodeModules: { state: "missing", reason: "node_modules is missing" } });
    expect(d).toEqual({
      ok: false,
      message:
        "npm test needs root: the tests build a VM image with debootstrap and chroot, start sshd and make network namespaces. Nothing was changed.\n" +
        "As root it will first install 1 Debian package(s): sqlite3, then run npm ci (node_modules is missing).\n" +
        "Run: sudo npm test",
    });
  });

  it("without dpkg: refuses and lists the packages to install by other means", () => {
    const d = decide({ ...base, root: true, dpkg: false, missingPackages: base.packages, nodeModules: { state: "ok" } });
    expect(d).toMatchObject({ ok: false, message: expect.stringMatching(/^npm test needs Debian .* no dpkg\.\n.*qemu-utils sqlite3$/s) });
  });

  it("gives sudo the PATH of a node it would not find (nvm, a tarball)", () => {
    expect(asRootCommand("demo", "/usr/bin")).toBe("sudo npm run demo");
    expect(asRootCommand("demo", "/home/ann/.nvm/versions/node/v20.19.0/bin")).toBe(
      'sudo env "PATH=/home/ann/.nvm/versions/node/v20.19.0/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" npm run demo',
    );
  });
});
