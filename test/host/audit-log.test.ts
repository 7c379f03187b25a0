// keel-audit-log (scripts/host/keel-audit-log, plan/auditLog.ts) with this machine's real logrotate,
// chattr and kernel, on a file system that keeps the append-only attribute (the temporary directory's
// when it does, else an ext4 image mounted for the test). keel's configurations are the plan's, with
// the live file moved into a temporary tree and `nobody` standing in for the engine's user; the
// tool's paths are moved there by loading it as a module (as integrity.test.ts does). systemd is not
// PID 1 here: a stand-in for systemctl keeps the unit's state in a file and freezes the "engine"
// process it is given with SIGSTOP (thaws it with SIGCONT), as the cgroup freezer would. Needs root.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { appendFileSync, chmodSync, chownSync, cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, linkSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { gunzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseConfig } from "../../config";
import { AUDIT_LOG_MAX_AGE_HOURS, AUDIT_LOG_SERVICE, AUDIT_LOG_TIMER, renderAuditLogConf, renderAuditLogLogrotate, renderAuditLogService, renderAuditLogTimer } from "../../plan/auditLog";
import { auditLogFile } from "../../plan/layout";
import { TOOLS, toolPath } from "../../plan/tools";
import { minimalRaw, REPO } from "../support/stack";
import { exposure, MAX_AUDIT_LOG_EXPOSURE } from "../support/units";

const TOOL = join(REPO, TOOLS["audit-log"]);
const ENV = { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" };
/** The engine's user and group here. */
const ENGINE = { uid: 65534, gid: 65534, user: "nobody", group: "nogroup" };
const cfg = parseConfig(minimalRaw({ "keel:auditLog": "audit.log" }), () => false);
const PLANNED = auditLogFile(cfg);

type Run = { code: number; stdout: string; stderr: string };
type Status = Record<string, any> & { problems: string[] };

/** Loads scripts/host/`file` as module m (python3 -I -B). */
const loader = (file: string) => `
import importlib.machinery, importlib.util, json, os, signal, sys, time
spec = importlib.util.spec_from_loader("m", importlib.machinery.SourceFileLoader("m", ${JSON.stringify(join(REPO, file))}))
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
`;

/**
 * systemctl's stand-in: the unit's ActiveState and FreezerState in ROOT/systemd.json, every call
 * recorded there. freeze stops the process `pid` names (SIGSTOP, waiting until it is stopped) and
 * thaw continues it; with `fakeFreeze` freeze only says so, as a freezer that does not work would.
 */
const SYSTEMCTL = `
SYSTEMD = root + "/systemd.json"
def systemctl(*args):
    with open(SYSTEMD) as f:
        s = json.load(f)
    s["calls"].append(list(args))
    out = ""
    if args[0] == "show":
        out = s["freezer"] if "--value" in args else f"ActiveState={s['active']}\\nFreezerState={s['freezer']}"
    elif args[0] == "is-enabled":
        out = s.get("timer", "enabled")
    elif args[0] in ("enable", "disable"):
        s["timer"] = args[0] + "d"
    elif args[0] == "freeze":
        if s.get("pid") and not s.get("fakeFreeze"):
            os.kill(s["pid"], signal.SIGSTOP)
            while open(f"/proc/{s['pid']}/stat").read().rsplit(")", 1)[1].split()[0] not in ("T", "t"):
                time.sleep(0.001)
        s["freezer"] = "frozen"
    elif args[0] == "thaw":
        if s.get("pid"):
            os.kill(s["pid"], signal.SIGCONT)
        s["freezer"] = "running"
    with open(SYSTEMD, "w") as f:
        json.dump(s, f)
    return 0, out, ""
m.systemctl = systemctl
`;

/** The directory the tests' trees live in: one whose file system keeps the append-only attribute. */
let base = "";
let cleanup = () => {};
beforeAll(() => {
  const dir = mkdtempSync(join(tmpdir(), "keel-audit-log-"));
  const probe = join(dir, "probe");
  writeFileSync(probe, "");
  const keeps = spawnSync("chattr", ["+a", probe]).status === 0;
  spawnSync("chattr", ["-a", probe]);
  rmSync(probe);
  if (keeps) {
    base = dir;
    cleanup = () => rmSync(dir, { recursive: true, force: true });
  } else {
    // tmpfs and overlayfs may not keep it: an ext4 image, loop-mounted.
    const image = join(dir, "ext4.img");
    base = join(dir, "mnt");
    mkdirSync(base);
    writeFileSync(image, "");
    for (const [cmd, args] of [["truncate", ["-s", "128M", image]], ["mkfs.ext4", ["-q", "-F", image]], ["mount", ["-o", "loop", image, base]]] as const) {
      const r = spawnSync(cmd, args, { encoding: "utf8" });
      if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")}: ${r.stderr}`);
    }
    cleanup = () => {
      spawnSync("umount", [base]);
      rmSync(dir, { recursive: true, force: true });
    };
  }
  // The engine's user must reach the log directory, as it reaches /var/log/<app>.
  chmodSync(base, 0o755);
  chmodSync(dir, 0o755);
});
afterAll(() => {
  engines.forEach((e) => e.kill("SIGKILL"));
  // Append-only files cannot be removed, not even by root: the attribute comes off first.
  if (base) spawnSync("chattr", ["-R", "-a", base]);
  cleanup();
});

const lsattr = (path: string) => spawnSync("lsattr", ["-d", path], { encoding: "utf8" }).stdout.split(" ")[0];
const appendOnly = (path: string) => lsattr(path).includes("a");
const owner = (path: string) => {
  const st = lstatSync(path);
  return `${st.uid}:${st.gid} ${(st.mode & 0o7777).toString(8).padStart(4, "0")}`;
};

/** A host in a directory of `base`: the log directory (root:nogroup 0750), keel's configurations, the tool's state and systemd's stand-in. */
class Host {
  readonly root = mkdtempSync(join(base, "host-"));
  readonly dir = join(this.root, "log");
  readonly file = join(this.dir, "audit.log");
  readonly state = join(this.root, "state");
  readonly conf = join(this.root, "audit-log.conf");
  readonly logrotateConf = join(this.root, "audit-log.logrotate");
  readonly record = join(this.state, "last-run.json");
  readonly systemd = join(this.root, "systemd.json");
  /** The engine's unit, as the engine-unit step places it: KEEL_AUDIT_LOG is the plan's word that keel:auditLog is set. */
  readonly units = join(this.root, "units");
  constructor(unit: { active?: string; freezer?: string; pid?: number; fakeFreeze?: boolean } = {}) {
    chmodSync(this.root, 0o755);
    mkdirSync(this.dir);
    chownSync(this.dir, 0, ENGINE.gid);
    chmodSync(this.dir, 0o750);
    const moved = (text: string) => text.split(PLANNED).join(this.file);
    writeFileSync(this.conf, moved(renderAuditLogConf(cfg)).replace(/^owner=.*$/m, `owner=${ENGINE.user}`).replace(/^group=.*$/m, `group=${ENGINE.group}`));
    writeFileSync(this.logrotateConf, moved(renderAuditLogLogrotate(cfg)));
    mkdirSync(this.units);
    this.planned(true);
    this.unit({ active: "inactive", freezer: "running", ...unit });
  }

  /** The engine's unit with (keel:auditLog set) or without (removed) its KEEL_AUDIT_LOG line. */
  planned(on: boolean): void {
    writeFileSync(join(this.units, "engine.service"), `[Service]\n${on ? `Environment=KEEL_AUDIT_LOG=${this.file}\n` : ""}ExecStart=/bin/true\n`);
  }

  /** systemd's stand-in: the unit's state (calls recorded anew). */
  unit(s: { active?: string; freezer?: string; pid?: number; fakeFreeze?: boolean }): void {
    writeFileSync(this.systemd, JSON.stringify({ calls: [], ...s }));
  }

  systemctlCalls = (): string[] => (JSON.parse(readFileSync(this.systemd, "utf8")).calls as string[][]).filter((c) => c[0] !== "show" && c[0] !== "is-enabled").map((c) => c.join(" "));
  frozen = (): string => JSON.parse(readFileSync(this.systemd, "utf8")).freezer;

  /** keel-audit-log `args`, its paths in this host; `extra` (Python) runs before main. */
  run(args: string[], extra = ""): Run {
    const program = `${loader(TOOLS["audit-log"])}
root = sys.argv[1]
m.CONF, m.LOGROTATE_CONF, m.STATE_DIR = root + "/audit-log.conf", root + "/audit-log.logrotate", root + "/state"
m.LOGROTATE_STATE, m.RECORD, m.LOCK = (m.STATE_DIR + "/" + n for n in ("logrotate.state", "last-run.json", ".lock"))
m.UNIT_DIR = root + "/units"
${SYSTEMCTL}
${extra}
sys.exit(m.main(sys.argv[2:]))`;
    const r = spawnSync("python3", ["-I", "-B", "-c", program, this.root, ...args], { env: ENV, encoding: "utf8", timeout: 60_000 });
    return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
  }

  ok(args: string[], extra = ""): Run {
    const r = this.run(args, extra);
    return expect(r.code, r.stderr).toBe(0), r;
  }

  status = (): Status => JSON.parse(this.ok(["status", "--json"]).stdout);

  /** logrotate's record says the file was last rotated long ago: the next rotate rotates it (daily). */
  due(): void {
    mkdirSync(this.state, { recursive: true, mode: 0o700 });
    writeFileSync(join(this.state, "logrotate.state"), `logrotate state -- version 2\n"${this.file}" 2020-1-1-0:0:0\n`);
  }

  rotate(extra = ""): Run {
    this.due();
    return this.ok(["rotate"], extra);
  }

  rotated = (): string[] => readdirSync(this.dir).filter((n) => n !== "audit.log").sort((a, b) => Number(a.split(".")[2]) - Number(b.split(".")[2]));
  gz = (n: number): string => gunzipSync(readFileSync(join(this.dir, `audit.log.${n}.gz`))).toString();
}

/** A Python program run as the engine's user (setpriv), its JSON answer. */
function asEngine(program: string, ...args: string[]): Record<string, string> {
  const r = spawnSync("setpriv", [`--reuid=${ENGINE.uid}`, `--regid=${ENGINE.gid}`, "--clear-groups", "--", "python3", "-I", "-c", program, ...args], { env: ENV, encoding: "utf8" });
  expect(r.stderr).toBe("");
  return JSON.parse(r.stdout);
}

const engines: ChildProcess[] = [];
/** A process of the engine's user running `program` until killed; resolves once it printed "ready". */
function engineProcess(program: string, ...args: string[]): Promise<{ child: ChildProcess; output: () => string }> {
  const child = spawn("setpriv", [`--reuid=${ENGINE.uid}`, `--regid=${ENGINE.gid}`, "--clear-groups", "--", "python3", "-I", "-u", "-c", program, ...args], { env: ENV });
  engines.push(child);
  let out = "";
  child.stdout!.on("data", (d) => (out += d));
  child.stderr!.on("data", (d) => (out += d));
  return new Promise((resolve) => {
    const wait = setInterval(() => {
      if (out.includes("ready")) {
        clearInterval(wait);
        resolve({ child, output: () => out });
      }
    }, 5);
  });
}

/** Holds the file open with O_APPEND, as the engine's logger does, and tries without end to clear O_APPEND and write at offset 0. */
const FORGER = `
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
print("ready")
while True:
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_APPEND)
    except OSError:
        continue
    os.pwrite(fd, b"FORGED", 0)
    print("forged")
    break
`;

/** An engine starting: tries without end to open the file for writing without O_APPEND (possible only while the attribute is off). */
const OPENER = `
import os, sys
print("ready")
while True:
    try:
        fd = os.open(sys.argv[1], os.O_WRONLY)
    except OSError:
        continue
    print("opened")
    break
`;

describe("keel-audit-log: what it refuses", () => {
  it("compiles (python3 -m py_compile, in a temporary directory)", () => {
    const tmp = mkdtempSync(join(base, "compile-"));
    const r = spawnSync("python3", ["-I", "-c", "import py_compile, sys; py_compile.compile(sys.argv[1], cfile=sys.argv[2], doraise=True)", TOOL, join(tmp, "c.pyc")], { encoding: "utf8" });
    expect(r.status, r.stderr).toBe(0);
  });

  it("runs only as root", () => {
    for (const command of [["status"], ["rotate"], ["prepare"]]) {
      const r = spawnSync("runuser", ["-u", "nobody", "--", "python3", "-I", TOOL, ...command], { encoding: "utf8", env: ENV });
      expect([r.status, r.stderr]).toEqual([2, "keel-audit-log: must run as root (sudo)\n"]);
    }
  });

  it("says keel:auditLog is not set when keel placed no configuration: status is disabled, the rest refused", () => {
    const h = new Host();
    rmSync(h.conf);
    expect(h.status()).toEqual({ enabled: false, conf: h.conf, problems: [] });
    for (const command of ["prepare", "rotate"]) {
      expect(h.run([command])).toMatchObject({ code: 2, stderr: `keel-audit-log: keel:auditLog is not set on this host (no ${h.conf}); nothing was changed\n` });
    }
    expect(existsSync(h.file)).toBe(false);
  });

  it("refuses a configuration with a key it does not know", () => {
    const h = new Host();
    appendFileSync(h.conf, "path=/etc/shadow\n");
    const r = h.run(["status", "--json"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`${h.conf}:7: unknown key 'path' (this keel-audit-log knows file, group, owner, unit)`);
  });

  it("follows no link planted as the live file: refused, the target untouched, the link left", () => {
    const h = new Host();
    const target = join(h.root, "target");
    writeFileSync(target, "someone else's\n");
    chmodSync(target, 0o644);
    symlinkSync(target, h.file);
    for (const command of ["prepare", "rotate"]) {
      const r = h.run([command]);
      expect([r.code, r.stderr]).toEqual([2, `keel-audit-log: ${h.file} is a symbolic link, not a regular file: keel-audit-log neither follows nor opens it; find out who put it there, remove it and run again; nothing was changed\n`]);
    }
    expect(lstatSync(h.file).isSymbolicLink()).toBe(true);
    expect([appendOnly(target), owner(target), readFileSync(target, "utf8")]).toEqual([false, "0:0 0644", "someone else's\n"]);
    expect(statSync(h.dir).mode & 0o7777).toBe(0o750);
    // The refused rotation is recorded: the health report says so.
    expect(h.status().problems).toContain(`the last rotation (${JSON.parse(readFileSync(h.record, "utf8")).time}) failed: ${h.file} is a symbolic link, not a regular file: keel-audit-log neither follows nor opens it; find out who put it there, remove it and run again`);
  });

  it("refuses a named pipe without waiting on it, and a file with a second name", () => {
    const h = new Host();
    expect(spawnSync("mkfifo", [h.file]).status).toBe(0);
    expect(h.run(["prepare"])).toMatchObject({ code: 2, stderr: expect.stringContaining(`${h.file} is a named pipe, not a regular file`) });
    rmSync(h.file);
    writeFileSync(h.file, "");
    linkSync(h.file, join(h.root, "second-name"));
    expect(h.run(["prepare"])).toMatchObject({ code: 2, stderr: expect.stringContaining(`${h.file} has 2 names (hard links)`) });
    expect(appendOnly(h.file)).toBe(false);
  });

  it("waits for an engine that is starting or stopping, and gives up after a while, the directory left open", () => {
    const h = new Host({ active: "activating" });
    const r = h.run(["prepare"], "m.SETTLE_SECONDS = 0");
    expect([r.code, r.stderr]).toEqual([2, "keel-audit-log: engine.service stayed activating for 0 s: the file is rotated only while the engine runs or is stopped; try again later; nothing was changed\n"]);
    expect([existsSync(h.file), statSync(h.dir).mode & 0o7777]).toEqual([false, 0o750]);
  });
});

describe("keel-audit-log prepare", () => {
  it("makes the live file the engine's, 0640 and append-only, with the engine stopped; a second run changes nothing", () => {
    const h = new Host();
    expect(h.ok(["prepare"]).stdout).toBe(`keel-audit-log: made ${h.file} (nobody:nogroup 0640, append-only)\n`);
    expect([owner(h.file), appendOnly(h.file), owner(h.dir)]).toEqual([`${ENGINE.uid}:${ENGINE.gid} 0640`, true, `0:${ENGINE.gid} 0750`]);
    expect(h.systemctlCalls()).toEqual([]);
    expect(h.ok(["prepare"]).stdout).toBe(`keel-audit-log: ${h.file} is in place (nobody:nogroup 0640, append-only); nothing to do\n`);
  });

  it("puts a lifted attribute back, freezing a running engine meanwhile, and says what a descriptor opened meanwhile can still do (exit 1)", () => {
    const h = new Host();
    h.ok(["prepare"]);
    h.unit({ active: "active", freezer: "running" });
    spawnSync("chattr", ["-a", h.file]);
    chmodSync(h.file, 0o666);
    const r = h.run(["prepare"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`keel-audit-log: ${h.file} was not append-only: a descriptor the engine opened meanwhile may still write anywhere in it; restart the engine (scripts/runbook/engine.sh restart)\n`);
    expect([owner(h.file), appendOnly(h.file)]).toEqual([`${ENGINE.uid}:${ENGINE.gid} 0640`, true]);
    expect(h.systemctlCalls()).toEqual(["freeze engine.service", "thaw engine.service"]);
  });
});

describe("keel-audit-log enable and off (the audit-log-start step and its delete command)", () => {
  it("enable starts the timer and makes the file; off stops the timer, the log kept; whether keel:auditLog is set is the engine unit's word, not theirs", () => {
    const h = new Host();
    expect(h.ok(["enable", `file=${h.file}`]).stdout).toBe(`keel-audit-log: made ${h.file} (nobody:nogroup 0640, append-only)\nkeel-audit-log: keel-audit-log.timer enabled and started\n`);
    expect(h.systemctlCalls()).toEqual(["enable --now keel-audit-log.timer"]);
    appendFileSync(h.file, "a line the engine wrote\n");
    expect(h.ok(["off"]).stdout).toBe("keel-audit-log: keel-audit-log.timer stopped and disabled (keel:auditLog is off); the log and its rotations stay\n");
    expect(h.systemctlCalls()).toEqual(["enable --now keel-audit-log.timer", "disable --now keel-audit-log.timer"]);
    // An off while the engine's unit still gives it the file (a stray off, a replacement gone
    // wrong) silences nothing: the status says nothing rotates it.
    expect(h.status()).toMatchObject({ enabled: true, problems: [expect.stringContaining("keel-audit-log.timer is disabled: nothing rotates the log")] });
    // keel:auditLog removed: the engine-unit step wrote the unit without the line.
    h.planned(false);
    expect(h.status()).toMatchObject({ enabled: false });
    expect([readFileSync(h.file, "utf8"), appendOnly(h.file)]).toEqual(["a line the engine wrote\n", true]);
    h.planned(true);
    expect(h.ok(["enable", `file=${h.file}`]).stdout).toContain("keel-audit-log.timer enabled and started");
    expect(h.status()).toMatchObject({ enabled: true, append_only: true, problems: [] });
  });

  it("enable refuses a file that is not the one of keel's configuration (the audit-log step runs first), and a unit that names another file is a problem", () => {
    const h = new Host();
    const r = h.run(["enable", `file=${h.dir}/other.log`]);
    expect([r.code, r.stderr]).toEqual([3, expect.stringContaining("the audit-log step must run first")]);
    expect(h.run(["enable", "x"]).code).toBe(2);
    writeFileSync(join(h.units, "engine.service"), `[Service]\nEnvironment=KEEL_AUDIT_LOG=${h.dir}/other.log\n`);
    expect(h.status().problems).toContainEqual(expect.stringContaining(`the engine's unit gives it ${h.dir}/other.log, but keel's rotation is set up for ${h.file}: pulumi up`));
  });
});

describe("keel-audit-log rotate, with keel's logrotate configuration and the real logrotate", () => {
  it("does not rotate on the first run (logrotate starts its record), then daily; the copy compressed, root's and read-only, the live file append-only", () => {
    const h = new Host();
    h.ok(["prepare"]);
    appendFileSync(h.file, "first day\n");
    expect(h.ok(["rotate"]).stdout).toBe(`keel-audit-log: ${h.file}: not due (rotated daily, not when empty); 0 rotated file(s) kept, root's and read-only; append-only again\n`);
    expect(h.rotate().stdout).toBe(`keel-audit-log: ${h.file}: rotated; 1 rotated file(s) kept, root's and read-only; append-only again\n`);
    expect(h.rotated()).toEqual(["audit.log.1.gz"]);
    expect(h.gz(1)).toBe("first day\n");
    expect(owner(join(h.dir, "audit.log.1.gz"))).toBe("0:0 0440");
    expect([readFileSync(h.file, "utf8"), owner(h.file), appendOnly(h.file), owner(h.dir)]).toEqual(["", `${ENGINE.uid}:${ENGINE.gid} 0640`, true, `0:${ENGINE.gid} 0750`]);
    expect(JSON.parse(readFileSync(h.record, "utf8"))).toEqual({ time: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/), result: "ok", rotated: true, kept: 1, problems: [] });
    // Nothing written since: logrotate's notifempty leaves the empty file, and no day of history is pushed out.
    expect(h.rotate().stdout).toContain(": not due (rotated daily, not when empty); 1 rotated file(s) kept");
  });

  it("keeps 90 rotations, each the lines written that day, the oldest dropped", { timeout: 120_000 }, () => {
    const h = new Host();
    h.ok(["prepare"]);
    for (let day = 1; day <= 92; day++) {
      appendFileSync(h.file, `day ${day}\n`);
      h.rotate();
    }
    expect(h.rotated()).toEqual(Array.from({ length: 90 }, (_, i) => `audit.log.${i + 1}.gz`));
    for (let n = 1; n <= 90; n++) expect(h.gz(n), `audit.log.${n}.gz`).toBe(`day ${93 - n}\n`);
    expect(h.rotated().map((n) => owner(join(h.dir, n)))).toEqual(Array(90).fill("0:0 0440"));
    expect(h.status()).toMatchObject({ rotated: 90, newest_rotated: { file: join(h.dir, "audit.log.1.gz") }, problems: [] });
  });

  it("freezes a running engine from before the attribute is lifted until after it is back, and thaws it", () => {
    const h = new Host();
    h.ok(["prepare"]);
    h.unit({ active: "active", freezer: "running" });
    appendFileSync(h.file, "x\n");
    const seen: string[] = [];
    // What the guard sees at each step: the attribute, the directory's mode, the engine's freezer.
    const spy = `
real_set, real_door, real_logrotate = m.set_append_only, m.door, m.logrotate
def note(what):
    with open(SYSTEMD) as f:
        freezer = json.load(f)["freezer"]
    print(what, oct(os.stat(${JSON.stringify(h.dir)}).st_mode & 0o777), freezer, file=sys.stderr)
def set_append_only(fd, on):
    note(f"append-only {on} before:"); real_set(fd, on)
def door(fd, mode):
    note(f"door {oct(mode)} before:"); real_door(fd, mode)
def logrotate():
    note("logrotate before:"); return real_logrotate()
m.set_append_only, m.door, m.logrotate = set_append_only, door, logrotate`;
    const r = h.rotate(spy);
    seen.push(...r.stderr.trim().split("\n"));
    expect(seen).toEqual([
      "door 0o700 before: 0o750 running",
      "append-only False before: 0o700 frozen",
      "logrotate before: 0o700 frozen",
      "append-only True before: 0o700 frozen",
      "door 0o750 before: 0o700 frozen",
    ]);
    expect(h.systemctlCalls()).toEqual(["freeze engine.service", "thaw engine.service"]);
    expect(h.frozen()).toBe("running");
  });

  it("thaws an engine a killed run left frozen, and says so in the status until then", () => {
    const h = new Host();
    h.ok(["prepare"]);
    h.unit({ active: "active", freezer: "frozen" });
    chmodSync(h.dir, 0o700);
    expect(h.status().problems).toEqual([
      `${h.dir} is closed to the engine (0700), as only during a rotation: a rotation that did not finish? sudo keel-audit-log rotate`,
      "engine.service is frozen, as only during a rotation: a rotation that did not finish? sudo keel-audit-log rotate thaws it",
    ]);
    h.rotate();
    expect(h.systemctlCalls()).toEqual(["thaw engine.service"]);
    expect(h.status().problems).toEqual([]);
  });

  it("puts everything back when stopped (SIGTERM) in the middle, and records the run as failed (exit 3)", () => {
    const h = new Host();
    h.ok(["prepare"]);
    h.unit({ active: "active", freezer: "running" });
    appendFileSync(h.file, "x\n");
    const stub = join(h.root, "logrotate-killed");
    writeFileSync(stub, "#!/bin/sh\nkill -TERM $PPID\nsleep 10\n", { mode: 0o755 });
    h.due();
    const r = h.run(["rotate"], `m.LOGROTATE = ${JSON.stringify(stub)}`);
    expect([r.code, r.stderr]).toEqual([3, "keel-audit-log: stopped by SIGTERM\n"]);
    expect([appendOnly(h.file), owner(h.dir), h.frozen()]).toEqual([true, `0:${ENGINE.gid} 0750`, "running"]);
    expect(JSON.parse(readFileSync(h.record, "utf8"))).toMatchObject({ result: "failed", problems: ["stopped by SIGTERM"] });
    expect(h.status().problems).toEqual([expect.stringMatching(/^the last rotation \(\S+\) failed: stopped by SIGTERM$/)]);
  });

  it("records a logrotate that failed (exit 1), the attribute back on", () => {
    const h = new Host();
    h.ok(["prepare"]);
    const stub = join(h.root, "logrotate-failing");
    writeFileSync(stub, "#!/bin/sh\necho 'error: no space left' >&2\nexit 1\n", { mode: 0o755 });
    h.due();
    const r = h.run(["rotate"], `m.LOGROTATE = ${JSON.stringify(stub)}`);
    expect([r.code, r.stderr]).toEqual([1, "keel-audit-log: logrotate exited 1: error: no space left\n"]);
    expect(appendOnly(h.file)).toBe(true);
    expect(JSON.parse(readFileSync(h.record, "utf8"))).toMatchObject({ result: "failed", problems: ["logrotate exited 1: error: no space left"] });
  });

  it("seals rotated files someone made writable again", () => {
    const h = new Host();
    h.ok(["prepare"]);
    appendFileSync(h.file, "x\n");
    h.rotate();
    const gz = join(h.dir, "audit.log.1.gz");
    chownSync(gz, ENGINE.uid, ENGINE.gid);
    chmodSync(gz, 0o640);
    expect(h.status().problems).toEqual(["1 rotated file(s) not root's and read-only (0440), which the engine may rewrite: audit.log.1.gz; sudo keel-audit-log rotate seals them"]);
    h.rotate();
    expect(owner(gz)).toBe("0:0 0440");
  });

  it("run by hand, logrotate with keel's configuration cannot truncate the append-only file: the history stays", () => {
    const h = new Host();
    h.ok(["prepare"]);
    appendFileSync(h.file, "history\n");
    spawnSync("logrotate", ["-f", "--state", join(h.root, "by-hand.state"), h.logrotateConf], { encoding: "utf8" });
    expect([readFileSync(h.file, "utf8"), appendOnly(h.file), h.rotated()]).toEqual(["history\n", true, []]);
  });
});

describe("what the engine's user can do to its audit log, on this machine's kernel", () => {
  it("append, and nothing else: not truncate, overwrite, rename, unlink, link, chmod or lift the attribute; nor touch a rotated file or create one", () => {
    const h = new Host();
    h.ok(["prepare"]);
    appendFileSync(h.file, "before\n");
    h.rotate();
    appendFileSync(h.file, "today\n");
    const elsewhere = mkdtempSync(join(h.root, "engine-own-"));
    chownSync(elsewhere, ENGINE.uid, ENGINE.gid);
    const tried = asEngine(
      `
import errno, fcntl, json, mmap, os, struct, sys
live, gz, d, elsewhere = sys.argv[1:5]
SETFLAGS = (1 << 30) | (struct.calcsize("l") << 16) | (ord("f") << 8) | 2
def attempt(f):
    try:
        f()
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
fd = os.open(live, os.O_WRONLY | os.O_APPEND)
print(json.dumps({
    "append": attempt(lambda: os.write(fd, b"appended\\n")),
    "open without O_APPEND": attempt(lambda: os.open(live, os.O_WRONLY)),
    "open with O_TRUNC": attempt(lambda: os.open(live, os.O_WRONLY | os.O_APPEND | os.O_TRUNC)),
    "truncate": attempt(lambda: os.truncate(live, 0)),
    "ftruncate": attempt(lambda: os.ftruncate(fd, 0)),
    "clear O_APPEND": attempt(lambda: fcntl.fcntl(fd, fcntl.F_SETFL, 0)),
    "pwritev2 RWF_NOAPPEND": attempt(lambda: os.pwritev(fd, [b"X"], 0, 0x20)),
    "mmap shared writable": attempt(lambda: mmap.mmap(os.open(live, os.O_RDWR | os.O_APPEND), 1, mmap.MAP_SHARED, mmap.PROT_WRITE)),
    "chmod": attempt(lambda: os.chmod(live, 0o666)),
    "lift the attribute": attempt(lambda: fcntl.ioctl(os.open(live, os.O_RDONLY), SETFLAGS, struct.pack("i", 0))),
    "rename": attempt(lambda: os.rename(live, live + ".old")),
    "unlink": attempt(lambda: os.unlink(live)),
    "link elsewhere": attempt(lambda: os.link(live, elsewhere + "/kept")),
    "create a file": attempt(lambda: os.open(d + "/other.log", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)),
    "rotated: read": attempt(lambda: os.open(gz, os.O_RDONLY)),
    "rotated: write": attempt(lambda: os.open(gz, os.O_WRONLY | os.O_APPEND)),
    "rotated: chmod": attempt(lambda: os.chmod(gz, 0o666)),
    "rotated: rename": attempt(lambda: os.rename(gz, gz + ".old")),
    "rotated: unlink": attempt(lambda: os.unlink(gz)),
}))`,
      h.file,
      join(h.dir, "audit.log.1.gz"),
      h.dir,
      elsewhere,
    );
    expect(tried).toEqual({
      append: "ok",
      "open without O_APPEND": "EPERM",
      "open with O_TRUNC": "EPERM",
      truncate: "EPERM",
      ftruncate: "EPERM",
      "clear O_APPEND": "EPERM",
      // RWF_NOAPPEND is refused on an append-only inode where the kernel has it, as an unknown flag where it has not.
      "pwritev2 RWF_NOAPPEND": expect.stringMatching(/^(EPERM|EOPNOTSUPP)$/),
      "mmap shared writable": "EACCES",
      chmod: "EPERM",
      "lift the attribute": "EPERM",
      rename: "EACCES",
      unlink: "EACCES",
      "link elsewhere": "EPERM",
      "create a file": "EACCES",
      "rotated: read": "EACCES",
      "rotated: write": "EACCES",
      "rotated: chmod": "EPERM",
      "rotated: rename": "EACCES",
      "rotated: unlink": "EACCES",
    });
    expect(readFileSync(h.file, "utf8")).toBe("today\nappended\n");
    expect(h.gz(1)).toBe("before\n");
  });

  it("the kernel refuses to clear O_APPEND only while the file is append-only, and a descriptor opened without it writes anywhere after the attribute is back: why the guard freezes the engine and closes the directory", () => {
    const dir = mkdtempSync(join(base, "kernel-"));
    const file = join(dir, "f");
    writeFileSync(file, "history\n");
    const r = spawnSync(
      "python3",
      [
        "-I",
        "-c",
        `
import fcntl, json, os, subprocess, sys
f = sys.argv[1]
held = os.open(f, os.O_WRONLY | os.O_APPEND)
subprocess.run(["chattr", "+a", f], check=True)
try:
    fcntl.fcntl(held, fcntl.F_SETFL, 0)
    while_on = "cleared"
except OSError as e:
    while_on = e.strerror
subprocess.run(["chattr", "-a", f], check=True)
fcntl.fcntl(held, fcntl.F_SETFL, 0)
opened = os.open(f, os.O_WRONLY)
subprocess.run(["chattr", "+a", f], check=True)
os.pwrite(held, b"HELD", 0)
os.pwrite(opened, b"OPEN", 4)
print(json.dumps({"while_on": while_on, "content": open(f).read()}))
subprocess.run(["chattr", "-a", f], check=True)`,
        file,
      ],
      { encoding: "utf8" },
    );
    expect(r.stderr).toBe("");
    expect(JSON.parse(r.stdout)).toEqual({ while_on: "Operation not permitted", content: "HELDOPEN" });
  });

  it("a running engine holding the file cannot clear O_APPEND during a rotation: it is frozen (and can, with a freezer that does not work)", async () => {
    for (const fakeFreeze of [false, true]) {
      const h = new Host();
      h.ok(["prepare"]);
      appendFileSync(h.file, "history\n");
      const engine = await engineProcess(FORGER, h.file);
      h.unit({ active: "active", freezer: "running", pid: engine.child.pid, fakeFreeze });
      // logrotate's copy and gzip take milliseconds; the forger tries millions of times a second.
      h.rotate(`real_logrotate = m.logrotate\nm.logrotate = lambda: (time.sleep(0.2), real_logrotate())[1]`);
      await new Promise((r) => setTimeout(r, 200));
      engine.child.kill("SIGKILL");
      const history = h.gz(1) + readFileSync(h.file, "utf8");
      if (fakeFreeze) {
        expect(engine.output()).toContain("forged");
        expect(history).toContain("FORGED");
      } else {
        expect(engine.output()).toBe("ready\n");
        expect(history).toBe("history\n");
      }
    }
  });

  it("an engine that starts during a rotation cannot open the file for writing without O_APPEND: the directory is closed (and can, with it left open)", async () => {
    for (const leaveOpen of [false, true]) {
      const h = new Host();
      h.ok(["prepare"]);
      appendFileSync(h.file, "history\n");
      const engine = await engineProcess(OPENER, h.file);
      const extra = `real_logrotate = m.logrotate\nm.logrotate = lambda: (time.sleep(0.2), real_logrotate())[1]` + (leaveOpen ? "\nm.door = lambda fd, mode: None" : "");
      h.rotate(extra);
      await new Promise((r) => setTimeout(r, 200));
      engine.child.kill("SIGKILL");
      expect(engine.output()).toBe(leaveOpen ? "ready\nopened\n" : "ready\n");
    }
  });
});

describe("keel-audit-log status", () => {
  it("reports the file append-only, its owner and mode, the directory, the rotations and the last run", () => {
    const h = new Host();
    h.ok(["prepare"]);
    appendFileSync(h.file, "x\n");
    h.rotate();
    const s = h.status();
    expect(s).toEqual({
      enabled: true,
      other: [],
      conf: h.conf,
      file: h.file,
      exists: true,
      regular: true,
      append_only: true,
      owner: "nobody",
      group: "nogroup",
      mode: "0640",
      links: 1,
      dir_mode: "0750",
      rotated: 1,
      newest_rotated: { file: join(h.dir, "audit.log.1.gz"), time: expect.stringMatching(/Z$/), size_bytes: statSync(join(h.dir, "audit.log.1.gz")).size },
      last_run: JSON.parse(readFileSync(h.record, "utf8")),
      engine_frozen: false,
      problems: [],
    });
    expect(h.ok(["status"]).stdout).toMatch(new RegExp(`^${h.file}: append-only, nobody:nogroup 0640; 1 rotated, newest \\S+Z\\nlast rotation run: \\S+Z ok\\n$`));
  });

  it("says the attribute is gone after chattr -a by hand, and what else is not as planned", () => {
    const h = new Host();
    h.ok(["prepare"]);
    spawnSync("chattr", ["-a", h.file]);
    chmodSync(h.file, 0o644);
    writeFileSync(join(h.dir, "planted"), "");
    const s = h.status();
    expect(s.append_only).toBe(false);
    expect(s.problems).toEqual([
      `${h.file} is not append-only: the engine can rewrite its history; sudo keel-audit-log prepare, then restart the engine (scripts/runbook/engine.sh restart): a descriptor it opened meanwhile may still write anywhere`,
      `${h.file} is nobody:nogroup 0644, not nobody:nogroup 0640: sudo keel-audit-log rotate sets them back`,
    ]);
    // Only root makes files there (an earlier keel:auditLog name's log, kept): shown, not a problem.
    expect(s.other).toEqual(["planted"]);
    rmSync(h.file);
    expect(h.status().problems[0]).toBe(`no ${h.file}: the engine cannot write its audit log; sudo keel-audit-log prepare`);
  });

  it(`counts rotations missing after ${AUDIT_LOG_MAX_AGE_HOURS} h: since the last run, or since keel placed the configuration`, () => {
    const h = new Host();
    h.ok(["prepare"]);
    expect(h.status().problems).toEqual([]);
    const old = new Date(Date.now() - (AUDIT_LOG_MAX_AGE_HOURS + 1) * 3600_000);
    utimesSync(h.conf, old, old);
    expect(h.status().problems).toEqual([expect.stringMatching(new RegExp(`^no rotation since keel placed ${h.conf} \\(\\S+Z; keel-audit-log.timer runs daily\\): systemctl status keel-audit-log.timer keel-audit-log.service$`))]);
    h.rotate();
    expect(h.status().problems).toEqual([]);
    const stamp = old.toISOString().replace(/\.\d+Z$/, "Z");
    writeFileSync(h.record, JSON.stringify({ ...JSON.parse(readFileSync(h.record, "utf8")), time: stamp }));
    expect(h.status().problems).toEqual([`no rotation since ${stamp} (${AUDIT_LOG_MAX_AGE_HOURS + 1} h; keel-audit-log.timer runs daily): systemctl status keel-audit-log.timer keel-audit-log.service`]);
  });
});

describe("keel-audit-log config-check", () => {
  it("logrotate takes keel's configuration, which names the file of keel-audit-log's; another file or a broken one is refused", () => {
    const h = new Host();
    expect(h.run(["config-check"])).toEqual({ code: 0, stdout: "", stderr: "" });
    writeFileSync(h.logrotateConf, readFileSync(h.logrotateConf, "utf8").split(h.file).join(join(h.dir, "other.log")));
    expect(h.run(["config-check"])).toMatchObject({ code: 1, stderr: `keel-audit-log: ${h.logrotateConf} rotates ${join(h.dir, "other.log")}, not ${h.file} alone (${h.conf})\n` });
    writeFileSync(h.logrotateConf, `${h.file} {\n    rotate ninety\n}\n`);
    expect(h.run(["config-check"])).toMatchObject({ code: 1, stderr: expect.stringContaining(`keel-audit-log: logrotate refuses ${h.logrotateConf} (exit 1)`) });
  });
});

describe("what keel-health and keel verify make of keel-audit-log status", () => {
  let dir = "";
  let stub = "";
  beforeAll(() => {
    dir = mkdtempSync(join(base, "callers-"));
    stub = join(dir, "keel-audit-log");
  });
  const answer = (status: unknown, rc = 0) => writeFileSync(stub, `#!/bin/sh\n[ "$1 $2" = "status --json" ] || exit 9\necho '${JSON.stringify(status)}'\nexit ${rc}\n`, { mode: 0o755 });
  const python = (program: string) => {
    const r = spawnSync("python3", ["-I", "-B", "-c", program], { encoding: "utf8", env: ENV });
    expect(r.stderr).toBe("");
    return JSON.parse(r.stdout) as unknown;
  };
  const health = (status: unknown, rc = 0) => {
    answer(status, rc);
    return python(`${loader(TOOLS.health)}
r = m.check_audit_log(m.Context(conf={"tools_dir": ${JSON.stringify(dir)}}, state={}, now=0, webhook=False))
print(json.dumps([r.status, r.summary, r.todo, r.details]))`);
  };
  const verify = (status: unknown, rc = 0) => {
    answer(status, rc);
    return python(`${loader(TOOLS.verify)}
m.check_audit_log(${JSON.stringify(stub)})
print(json.dumps(m.results))`);
  };
  const fine = { enabled: true, file: "/var/log/engine/audit.log", append_only: true, owner: "engine", group: "engine", mode: "0640", rotated: 3, newest_rotated: { file: "/var/log/engine/audit.log.1.gz", time: "2026-01-02T00:03:00Z", size_bytes: 10 }, last_run: { time: "2026-01-02T00:03:00Z", result: "ok" }, problems: [] };

  it("keel-health: ok when not configured; ok, degraded with the problems as the summary, unknown without a status", () => {
    expect(health({ enabled: false, conf: "/etc/keel/audit-log.conf", problems: [] })).toEqual(["ok", "not configured (keel:auditLog unset)", "", { enabled: false }]);
    expect(health(fine)).toEqual([
      "ok",
      "/var/log/engine/audit.log append-only (engine:engine 0640); 3 rotated file(s), the newest of 2026-01-02T00:03:00Z; last rotation run 2026-01-02T00:03:00Z",
      "",
      { enabled: true, file: fine.file, append_only: true, rotated: 3, newest_rotated: fine.newest_rotated, last_run: fine.last_run, problems: [] },
    ]);
    expect((health({ ...fine, append_only: false, problems: ["not append-only", "no rotation"] }) as unknown[]).slice(0, 3)).toEqual(["degraded", "not append-only; no rotation", "what the summary says (sudo keel-audit-log status shows it again)"]);
    expect((health({ ...fine }, 2) as unknown[]).slice(0, 2)).toEqual(["unknown", expect.stringMatching(/^keel-audit-log status exited 2 without a status: /)]);
    expect((health("not json") as unknown[])[0]).toBe("unknown");
  });

  it("keel verify: skipped when not configured, ok, failed with the problems or without a status", () => {
    expect(verify({ enabled: false, problems: [] })).toEqual([["skipped", "audit-log", "keel:auditLog is not set: no audit log to guard"]]);
    expect(verify(fine)).toEqual([["ok", "audit-log", "/var/log/engine/audit.log append-only (engine:engine 0640), 3 rotated file(s) root's and read-only; last rotation run 2026-01-02T00:03:00Z"]]);
    expect(verify({ ...fine, problems: ["not append-only"] })).toEqual([["failed", "audit-log", "not append-only"]]);
    expect(verify(fine, 3)).toEqual([["failed", "audit-log", expect.stringMatching(new RegExp(`^${stub} status exited 3 without a status: `))]]);
  });
});

describe("keel-audit-log.service and .timer, checked by systemd-analyze", () => {
  const run = (args: string[]) => {
    const r = spawnSync("systemd-analyze", args, { encoding: "utf8" });
    return { code: r.status, out: r.stdout + r.stderr };
  };

  it("verify without a warning, the timer with its service and keel-audit-log installed", () => {
    const root = mkdtempSync(join(base, "units-"));
    cpSync("/usr/lib/systemd/system", join(root, "usr/lib/systemd/system"), { recursive: true });
    mkdirSync(join(root, "etc/systemd/system"), { recursive: true });
    for (const [name, content] of [[AUDIT_LOG_SERVICE, renderAuditLogService(cfg)], [AUDIT_LOG_TIMER, renderAuditLogTimer(cfg)]]) writeFileSync(join(root, "etc/systemd/system", name), content);
    mkdirSync(dirname(join(root, toolPath("audit-log"))), { recursive: true });
    writeFileSync(join(root, toolPath("audit-log")), "#!/bin/sh\n", { mode: 0o755 });
    expect(run(["verify", `--root=${root}`, AUDIT_LOG_TIMER, AUDIT_LOG_SERVICE])).toEqual({ code: 0, out: "" });
  });

  it(`rate the service's exposure at most ${MAX_AUDIT_LOG_EXPOSURE} offline: root for the engine's file, little else`, () => {
    const file = join(mkdtempSync(join(base, "security-")), AUDIT_LOG_SERVICE);
    writeFileSync(file, renderAuditLogService(cfg));
    const level = exposure(run(["security", "--offline=true", file]).out);
    console.log(`systemd-analyze security --offline=true ${AUDIT_LOG_SERVICE}: exposure ${level}`);
    expect(level).toBeLessThanOrEqual(MAX_AUDIT_LOG_EXPOSURE);
    writeFileSync(file, renderAuditLogService(cfg).split("# Sandbox:")[0]);
    expect(exposure(run(["security", "--offline=true", file]).out)).toBeGreaterThan(level + 3);
  });
});
