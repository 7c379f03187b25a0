import { execFileSync, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { appendFileSync, chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { REPO } from "../support/stack";
import { freePort, startSshd, type TestSshd } from "../support/net";

// keel's engine scripts on this machine, with real git, ssh, sshd, python3 and pip. Needs root
// (useradd, runuser, unshare): the scripts run as a temporary deploy user, as on the host.

const SCRIPTS = join(REPO, "scripts");
const FIXTURE = join(REPO, "test", "fixtures", "engine");
const suffix = randomBytes(3).toString("hex");
const DEPLOY = `keel-e${suffix}`;
const SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin";
const PYTHON = execFileSync("/usr/bin/python3", ["-c", 'import sys; print("%d.%d" % sys.version_info[:2])'], { encoding: "utf8" }).trim();

let root: string;

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a keel script as the deploy user (umask 000, to prove the script sets its own). */
function asDeploy(script: string, args: string[]): Result {
  const r = spawnSync("runuser", ["-u", DEPLOY, "--", "env", "-i", `PATH=${SYSTEM_PATH}`, `HOME=/home/${DEPLOY}`, "sh", "-c", 'umask 000; exec bash "$@"', "sh", join(SCRIPTS, "steps", script), ...args], {
    encoding: "utf8",
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Runs a keel tool as root, as `sudo keel-<tool>` does. */
function asRoot(script: string, args: string[]): Result {
  const r = spawnSync("bash", [join(SCRIPTS, "host", script), ...args], { encoding: "utf8", env: { PATH: SYSTEM_PATH } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function git(dir: string, ...args: string[]): string {
  return execFileSync("runuser", ["-u", DEPLOY, "--", "git", "-C", dir, "-c", "user.name=keel-test", "-c", "user.email=keel@test", ...args], { encoding: "utf8" }).trim();
}

function mkdirFor(path: string, owner = DEPLOY): string {
  mkdirSync(path, { recursive: true, mode: 0o755 });
  execFileSync("chown", [`${owner}:${owner}`, path]);
  return path;
}

/** Files under dir (the .git directory included) that anyone but their owner can write. */
function groupOrOtherWritable(dir: string): string[] {
  return execFileSync("find", [dir, "!", "-type", "l", "-perm", "/022"], { encoding: "utf8" }).split("\n").filter(Boolean);
}

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "keel-engine-scripts-"));
  chmodSync(root, 0o755);
  execFileSync("useradd", ["--create-home", "--shell", "/bin/bash", DEPLOY]);
});

afterAll(() => {
  rmSync(root, { recursive: true, force: true });
  spawnSync("userdel", ["--remove", DEPLOY]);
});

describe("engine-preflight.sh", () => {
  const dirs = () => [mkdirFor(join(root, "pre", "state")), mkdirFor(join(root, "pre", "backups"))];

  it("passes with the pinned Python and enough disk, and says what it checked", () => {
    const r = asDeploy("engine-preflight.sh", [PYTHON, "1", ...dirs()]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^preflight ok: python3 ${PYTHON.replace(".", "\\.")}; \\S+ \\d+\\.\\d GiB free \\(>= 1 GiB each\\)\\n$`));
  });

  it("stops with one line naming the found and the expected Python", () => {
    const r = asDeploy("engine-preflight.sh", ["3.99", "1", ...dirs()]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr.split("\n")).toHaveLength(2);
    expect(r.stderr).toMatch(new RegExp(`^keel preflight: the system python3 is ${PYTHON.replace(".", "\\.")}, keel:pythonVersion pins 3\\.99\\. `));
  });

  it("stops with one line when a filesystem has less free space than asked for", () => {
    const r = asDeploy("engine-preflight.sh", [PYTHON, "100000", ...dirs()]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^keel preflight: only \d+\.\d GiB free on \S+ \(holding \S+\), keel:minFreeDiskGiB asks for 100000 GiB for DB, backups and logs\. .*\n$/);
  });

  it("refuses a missing directory and bad usage", () => {
    expect(asDeploy("engine-preflight.sh", [PYTHON, "1", join(root, "nowhere")]).stderr).toContain(`${join(root, "nowhere")} does not exist`);
    expect(asDeploy("engine-preflight.sh", [PYTHON, "1"]).code).toBe(2);
  });
});

describe("engine-source.sh", () => {
  let src: string;
  let first: string;
  let app: string;
  const key = () => join("/home", DEPLOY, ".ssh", "keel_deploy_ed25519");
  const knownHosts = () => join(root, "known_hosts");

  beforeAll(() => {
    src = mkdirFor(join(root, "srv", "engine"));
    cpSync(FIXTURE, src, { recursive: true });
    execFileSync("chown", ["-R", `${DEPLOY}:${DEPLOY}`, src]);
    git(src, "init", "-q", "-b", "main");
    git(src, "add", "-A");
    git(src, "commit", "-q", "-m", "engine v1");
    first = git(src, "rev-parse", "HEAD");
    app = mkdirFor(join(root, "opt", "app"));
    writeFileSync(knownHosts(), "");
  });

  const source = (commit: string, url = `file://${src}`, dir = app) => asDeploy("engine-source.sh", [url, commit, dir, key(), knownHosts()]);

  it("clones a file:/// repository, checks out the pinned commit detached, and leaves nothing writable for others", () => {
    const r = source(first);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`source: created the checkout\nsource: fetched ${first}\nsource: checked out ${first} (was nothing)\nsource: ${app} is at ${first}\n`);
    expect(readFileSync(join(app, ".git", "HEAD"), "utf8")).toBe(`${first}\n`);
    expect(readFileSync(join(app, "engine", "__main__.py"), "utf8")).toBe(readFileSync(join(FIXTURE, "engine", "__main__.py"), "utf8"));
    expect(groupOrOtherWritable(app)).toEqual([]);
  });

  it("changes nothing on a second run, and says so", () => {
    const before = readdirSync(join(app, ".git")).map((f) => [f, statSync(join(app, ".git", f)).mtimeMs]);
    const main = statSync(join(app, "engine", "__main__.py")).mtimeMs;
    const r = source(first);
    expect(r).toEqual({ code: 0, stdout: `source: ${app} already at ${first}, nothing changed\n`, stderr: "" });
    expect(readdirSync(join(app, ".git")).map((f) => [f, statSync(join(app, ".git", f)).mtimeMs])).toEqual(before);
    expect(statSync(join(app, "engine", "__main__.py")).mtimeMs).toBe(main);
  });

  it("puts back files edited or added by hand", () => {
    appendFileSync(join(app, "README.md"), "edited on the box\n");
    writeFileSync(join(app, "stray.py"), "print('stray')\n");
    chmodSync(join(app, "requirements.txt"), 0o666);
    const r = source(first);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("source: put back files edited or added by hand\n");
    expect(readFileSync(join(app, "README.md"), "utf8")).toBe(readFileSync(join(FIXTURE, "README.md"), "utf8"));
    expect(existsSync(join(app, "stray.py"))).toBe(false);
    expect(groupOrOtherWritable(app)).toEqual([]);
  });

  it("fetches and checks out a new commit", () => {
    writeFileSync(join(src, "VERSION"), "2\n");
    git(src, "add", "VERSION");
    git(src, "commit", "-q", "-m", "engine v2");
    const second = git(src, "rev-parse", "HEAD");
    const r = source(second);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`source: fetched ${second}\nsource: checked out ${second} (was ${first})\nsource: ${app} is at ${second}\n`);
    expect(readFileSync(join(app, "VERSION"), "utf8")).toBe("2\n");
    // And back: the older commit is already here, so nothing is fetched.
    expect(source(first).stdout).toBe(`source: checked out ${first} (was ${second})\nsource: ${app} is at ${first}\n`);
  });

  it("fails with what to do when the commit is not in the repository", () => {
    const missing = "0123456789abcdef0123456789abcdef01234567";
    const r = source(missing);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`keel source: commit ${missing} is not in file://${src}; push it, or set keel:repoRef to a commit that is, then run pulumi up again\n`);
    expect(readFileSync(join(app, ".git", "HEAD"), "utf8")).toBe(`${first}\n`);
  });

  it("refuses a directory that holds other files, and a repository of another user", () => {
    const other = mkdirFor(join(root, "opt", "other"));
    writeFileSync(join(other, "file"), "x");
    expect(source(first, `file://${src}`, other).stderr).toContain("holds files but no git checkout");
    const foreign = mkdirFor(join(root, "srv", "foreign"), "root");
    execFileSync("git", ["-C", foreign, "init", "-q"]);
    const r = source(first, `file://${foreign}`, mkdirFor(join(root, "opt", "third")));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("dubious ownership");
    expect(r.stderr).toContain("It must be a git repository the deploy user can read and owns");
  });

  describe("over ssh, with the deploy key and the pinned host key", () => {
    let sshd: TestSshd | undefined;
    let port: number;
    let hostLine: string;

    beforeAll(async () => {
      const dir = mkdirFor(join(root, "sshd"), "root");
      chmodSync(dir, 0o700);
      execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "host")]);
      execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "other-host")]);
      const sshDir = mkdirFor(join("/home", DEPLOY, ".ssh"));
      chmodSync(sshDir, 0o700);
      execFileSync("runuser", ["-u", DEPLOY, "--", "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key()]);
      // sshd reads authorized_keys as the user logging in: it lives in the user's own ~/.ssh.
      writeFileSync(join(sshDir, "authorized_keys"), readFileSync(`${key()}.pub`));
      execFileSync("chown", [`${DEPLOY}:${DEPLOY}`, join(sshDir, "authorized_keys")]);
      port = await freePort();
      writeFileSync(
        join(dir, "sshd_config"),
        [`ListenAddress 127.0.0.1:${port}`, `HostKey ${join(dir, "host")}`, `PidFile ${join(dir, "sshd.pid")}`, `AllowUsers ${DEPLOY}`, "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM yes", "StrictModes no"].join("\n") + "\n",
      );
      hostLine = `[127.0.0.1]:${port} ${readFileSync(join(dir, "host.pub"), "utf8").split(" ").slice(0, 2).join(" ")}`;
      sshd = await startSshd(join(dir, "sshd_config"), port);
    });
    afterAll(() => sshd?.stop());

    const url = () => `ssh://${DEPLOY}@127.0.0.1:${port}${src}`;

    it("refuses a host whose key is not the pinned one, and never adds it (no trust on first use)", () => {
      const other = readFileSync(join(root, "sshd", "other-host.pub"), "utf8").split(" ").slice(0, 2).join(" ");
      writeFileSync(knownHosts(), `[127.0.0.1]:${port} ${other}\n`);
      const r = source(first, url(), mkdirFor(join(root, "opt", "ssh-wrong")));
      expect(r.code).toBe(1);
      expect(r.stderr).toContain("Host key verification failed");
      expect(r.stderr).toContain("If the key is registered, check that keel:gitKnownHosts holds the git host's keys");
      expect(readFileSync(knownHosts(), "utf8")).toBe(`[127.0.0.1]:${port} ${other}\n`);
    });

    it("refuses to start without pinned host keys", () => {
      writeFileSync(knownHosts(), "");
      const r = source(first, url(), mkdirFor(join(root, "opt", "ssh-none")));
      expect(r.code).toBe(1);
      expect(r.stderr).toBe(`keel source: no pinned host keys in ${knownHosts()}; set keel:gitKnownHosts to the git host's known_hosts lines\n`);
    });

    it("names the deploy key to register when the repository does not know it (a first deploy), and carries on once it does", () => {
      writeFileSync(knownHosts(), `${hostLine}\n`);
      const fresh = join("/home", DEPLOY, ".ssh", "fresh_deploy_key");
      execFileSync("runuser", ["-u", DEPLOY, "--", "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "keel-deploy", "-f", fresh]);
      const publicKey = execFileSync("ssh-keygen", ["-y", "-f", fresh], { encoding: "utf8" }).trim();
      const dir = mkdirFor(join(root, "opt", "ssh-unregistered"));
      const r = asDeploy("engine-source.sh", [url(), first, dir, fresh, knownHosts()]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain("Permission denied (publickey)");
      expect(r.stderr).toContain("the repository does not know this server's deploy key yet: add it as a read-only deploy key");
      expect(r.stderr).toContain(`then run pulumi up again; this step and the ones after it run again. The key: ${publicKey}\n`);
      // Registered: the same step, run again, clones.
      appendFileSync(join("/home", DEPLOY, ".ssh", "authorized_keys"), readFileSync(`${fresh}.pub`));
      expect(asDeploy("engine-source.sh", [url(), first, dir, fresh, knownHosts()])).toMatchObject({ code: 0 });
      expect(readFileSync(join(dir, ".git", "HEAD"), "utf8")).toBe(`${first}\n`);
    });

    it("clones with the deploy key when the host key is the pinned one", () => {
      writeFileSync(knownHosts(), `${hostLine}\n`);
      const dir = mkdirFor(join(root, "opt", "ssh-right"));
      const r = source(first, url(), dir);
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      expect(readFileSync(join(dir, ".git", "HEAD"), "utf8")).toBe(`${first}\n`);
      expect(source(first, url(), dir).stdout).toBe(`source: ${dir} already at ${first}, nothing changed\n`);
    });
  });
});

describe("keel-engine-venv", { timeout: 180_000 }, () => {
  let app: string;
  let venv: string;
  let commit: string;
  const venvArgs = (requirements = "requirements.txt", python = PYTHON, at = commit) => [DEPLOY, app, at, requirements, venv, python];

  beforeAll(() => {
    app = mkdirFor(join(root, "venv-test", "app"));
    cpSync(FIXTURE, app, { recursive: true });
    execFileSync("chown", ["-R", `${DEPLOY}:${DEPLOY}`, app]);
    git(app, "init", "-q");
    git(app, "add", "-A");
    git(app, "commit", "-q", "-m", "v1");
    commit = git(app, "rev-parse", "HEAD");
    git(app, "checkout", "-q", "--detach", commit);
    venv = mkdirFor(join(root, "venv-test", "venv"));
  });

  const inode = () => statSync(venv).ino;

  it("builds the venv from the system Python as the deploy user, and records it", () => {
    const r = asRoot("keel-engine-venv", venvArgs());
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`venv: built ${venv} from requirements.txt (no hashes) with python ${PYTHON}:\nvenv: 0 package(s) installed\n`);
    const prefix = execFileSync("runuser", ["-u", DEPLOY, "--", join(venv, "bin", "python"), "-c", "import sys; print(sys.prefix, sys.base_prefix)"], { encoding: "utf8" });
    expect(prefix).toBe(`${venv} /usr\n`);
    expect(readFileSync(join(venv, "keel-venv.txt"), "utf8")).toMatch(new RegExp(`^# Written by keel-engine-venv.*\\npython ${PYTHON.replace(".", "\\.")}\\nrequirements requirements\\.txt sha256 [0-9a-f]{64}\\ninstall no hashes\\n$`));
    expect(existsSync(join(venv, "keel-freeze.txt"))).toBe(true);
    expect(execFileSync("stat", ["-c", "%U %a", venv, join(venv, "keel-venv.txt")], { encoding: "utf8" })).toBe(`${DEPLOY} 755\n${DEPLOY} 644\n`);
    expect(readdirSync(join(root, "venv-test"))).toEqual(["app", "venv"]);
  });

  it("leaves an up-to-date venv alone, and says so", () => {
    const before = [inode(), statSync(join(venv, "keel-venv.txt")).mtimeMs, statSync(join(venv, "pyvenv.cfg")).mtimeMs];
    const r = asRoot("keel-engine-venv", venvArgs());
    expect(r).toEqual({ code: 0, stdout: `venv: ${venv} already built from requirements.txt (no hashes), nothing changed\n`, stderr: "" });
    expect([inode(), statSync(join(venv, "keel-venv.txt")).mtimeMs, statSync(join(venv, "pyvenv.cfg")).mtimeMs]).toEqual(before);
  });

  it("installs a hash-pinned lock with --require-hashes --no-deps into a new venv, swapped in whole", () => {
    const wheel = sampleWheel(join(root, "venv-test-wheels"));
    writeFileSync(join(app, "requirements.lock"), `${wheel.path} \\\n    --hash=sha256:${wheel.sha256}\n`);
    execFileSync("chown", [DEPLOY, join(app, "requirements.lock")]);
    const before = inode();
    const r = asRoot("keel-engine-venv", venvArgs("requirements.lock"));
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`venv: built ${venv} from requirements.lock (--require-hashes --no-deps) with python ${PYTHON}:\n  keelsample @ file://${wheel.path}\nvenv: 1 package(s) installed\n`);
    expect(inode()).not.toBe(before);
    // Built at its final path: the console script's shebang names the venv, not the build directory.
    expect(readFileSync(join(venv, "bin", "keelsample"), "utf8").split("\n")[0]).toBe(`#!${venv}/bin/python`);
    expect(execFileSync("runuser", ["-u", DEPLOY, "--", join(venv, "bin", "keelsample")], { encoding: "utf8" })).toBe("keelsample ok\n");
    expect(readdirSync(join(root, "venv-test"))).toEqual(["app", "venv"]);
  });

  it("keeps the previous venv when the lock file's hash does not match", () => {
    const wheel = sampleWheel(join(root, "venv-test-wheels"));
    writeFileSync(join(app, "requirements.bad"), `${wheel.path} --hash=sha256:${"0".repeat(64)}\n`);
    const before = [inode(), readFileSync(join(venv, "keel-venv.txt"), "utf8")];
    const r = asRoot("keel-engine-venv", venvArgs("requirements.bad"));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE");
    expect(r.stderr).toContain("keel-engine-venv: building the venv from requirements.bad failed (pip's error above); the previous venv is unchanged.");
    expect([inode(), readFileSync(join(venv, "keel-venv.txt"), "utf8")]).toEqual(before);
    expect(readdirSync(join(root, "venv-test"))).toEqual(["app", "venv"]);
  });

  it("refuses a checkout at another commit, another Python, a missing lock file and root as the builder", () => {
    const other = "0123456789abcdef0123456789abcdef01234567";
    expect(asRoot("keel-engine-venv", venvArgs("requirements.txt", PYTHON, other))).toMatchObject({ code: 3, stderr: expect.stringContaining(`is at ${commit}, expected ${other}; the engine-source step must run first`) });
    expect(asRoot("keel-engine-venv", venvArgs("requirements.txt", "3.99"))).toMatchObject({ code: 4, stderr: expect.stringContaining(`the system python3 is ${PYTHON}, keel:pythonVersion pins 3.99`) });
    expect(asRoot("keel-engine-venv", venvArgs("nope.txt"))).toMatchObject({ code: 3, stderr: expect.stringContaining("nope.txt is not a file in") });
    expect(asRoot("keel-engine-venv", ["root", app, commit, "requirements.txt", venv, PYTHON])).toMatchObject({ code: 2, stderr: expect.stringContaining("refusing to build as root") });
    expect(asRoot("keel-engine-venv", venvArgs("../etc/passwd")).code).toBe(2);
  });
});

/** A tiny wheel with a console script, built here (no network): its path and sha256. */
function sampleWheel(dir: string): { path: string; sha256: string } {
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const path = join(dir, "keelsample-1.0-py3-none-any.whl");
  if (!existsSync(path)) {
    execFileSync("/usr/bin/python3", ["-c", WHEEL_BUILDER, path]);
    chmodSync(path, 0o644);
  }
  const sha256 = execFileSync("sha256sum", [path], { encoding: "utf8" }).split(" ")[0];
  return { path, sha256 };
}

const WHEEL_BUILDER = `
import base64, hashlib, sys, zipfile
files = {
    "keelsample/__init__.py": "def main():\\n    print('keelsample ok')\\n",
    "keelsample-1.0.dist-info/METADATA": "Metadata-Version: 2.1\\nName: keelsample\\nVersion: 1.0\\n",
    "keelsample-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\\nGenerator: keel-test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
    "keelsample-1.0.dist-info/entry_points.txt": "[console_scripts]\\nkeelsample = keelsample:main\\n",
}
record = []
for name, text in files.items():
    digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
    record.append(f"{name},sha256={digest},{len(text.encode())}")
record.append("keelsample-1.0.dist-info/RECORD,,")
files["keelsample-1.0.dist-info/RECORD"] = "\\n".join(record) + "\\n"
with zipfile.ZipFile(sys.argv[1], "w") as z:
    for name, text in files.items():
        info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
        z.writestr(info, text)
`;


