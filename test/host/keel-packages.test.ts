// keel-packages on this machine, with its real dpkg: the argument checks, the "nothing to do" path
// (no apt at all when every package is installed), a missing package found as missing, and the
// umask apt runs with (apt-get a stand-in that only prints it). The real apt never runs here:
// installing needs the package mirrors, and this tier sends no traffic off the machine. The
// install itself runs on the VM, from its offline repository (test/vm/hardening.test.ts, "a
// server first booted by an older keel").
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { REPO } from "../support/stack";
import { TOOLS } from "../../plan/tools";

const SCRIPT_PATH = join(REPO, TOOLS.packages);
const SCRIPT = readFileSync(SCRIPT_PATH, "utf8");

/** Runs the script from stdin (as sudo runs the installed tool), as root or as nobody. */
function packages(args: string[], as: "root" | "nobody" = "root"): { code: number; stdout: string; stderr: string } {
  const bash = ["bash", "-s", "--", ...args];
  const [cmd, ...argv] = as === "root" ? bash : ["runuser", "-u", "nobody", "--", ...bash];
  const r = spawnSync(cmd, argv, { input: SCRIPT, encoding: "utf8", env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" } });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

describe("keel-packages", () => {
  it("is shellcheck clean", () => {
    const r = spawnSync("shellcheck", [SCRIPT_PATH], { encoding: "utf8" });
    expect(r.status, r.stdout + r.stderr).toBe(0);
  });

  it("refuses to run without packages, saying how it is called", () => {
    const r = packages([]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe("keel-packages: usage: keel-packages PACKAGE... (Debian package names)\n");
  });

  it("refuses an argument that is not a Debian package name, before looking at anything", () => {
    for (const bad of ["Bash", "-y", "../etc", "bash;id", "a"]) {
      const r = packages(["bash", bad]);
      expect(r.code, bad).toBe(1);
      expect(r.stderr, bad).toBe(`keel-packages: '${bad}' is not a Debian package name\n`);
      expect(r.stdout, bad).toBe("");
    }
  });

  it("does nothing when every package is installed, and needs no root for it", () => {
    for (const as of ["root", "nobody"] as const) {
      const r = packages(["bash", "coreutils", "dpkg"], as);
      expect(r, as).toEqual({ code: 0, stdout: "keel-packages: all 3 packages installed, nothing to do\n", stderr: "" });
    }
  });

  it("runs apt with umask 022 whatever umask sudo passed on (keel's sudoers: 0077), for the packages' maintainer scripts", () => {
    const stub = mkdtempSync(join(tmpdir(), "keel-packages-apt-"));
    try {
      // A stand-in for apt-get: it prints the umask it runs with and installs nothing.
      writeFileSync(join(stub, "apt-get"), '#!/bin/sh\necho "apt-get $1 umask $(umask)"\n', { mode: 0o755 });
      const r = spawnSync("bash", ["-c", 'umask 0077 && exec bash -s -- "$@"', "bash", "keel-no-such-package"], {
        input: SCRIPT,
        encoding: "utf8",
        env: { PATH: `${stub}:/usr/sbin:/usr/bin:/sbin:/bin` },
      });
      expect(r.stdout.split("\n").filter((l) => l.startsWith("apt-get"))).toEqual(["apt-get -q umask 0022", "apt-get -q umask 0022"]);
      // The stand-in installed nothing, and keel-packages checks what apt did.
      expect(r.status).toBe(1);
      expect(r.stderr).toContain("apt-get succeeded but keel-no-such-package is still not installed");
    } finally {
      rmSync(stub, { recursive: true, force: true });
    }
  });

  it("finds a package the host lacks, and without root stops there, naming it", () => {
    const r = packages(["bash", "keel-no-such-package", "coreutils"], "nobody");
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toBe("keel-packages: missing keel-no-such-package; installing them needs root (sudo keel-packages)\n");
  });
});
