// The runbook's operator scripts on this machine: fed a stack output JSON shaped by keel's own
// functions (the knownHosts line, the paths), they connect to a real sshd on 127.0.0.1 with a
// generated host key, trusting only the pinned key: a host with any other key is refused. Their
// argument checks stop bad input before any connection. keel-ops (the host side) is checked for
// what it does without systemd; its restore, backup and adopt run on the VM (test/vm/health.test.ts).
// Needs root (sshd, a temporary user).
import { execFile, execFileSync, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { knownHostsLine, sshCommandLine } from "../../components/keel";
import { parseConfig } from "../../config";
import { keyPair } from "../../local/localStack";
import { renderHostConf } from "../../plan/health";
import { hostPaths } from "../../plan/layout";
import { makeDb, sha256, sql } from "./db-helpers";
import { REPO, stackConfig } from "../support/stack";
import { rootToolEnv } from "../support/env";
import { freePort, startSshd, type TestSshd } from "../support/net";
import { TOOLS } from "../../plan/tools";

const RUNBOOK = join(REPO, "scripts", "runbook");
const USER = `keel-r${randomBytes(3).toString("hex")}`;

let dir: string;
let port: number;
let hostPub: string;
let otherPub: string;
let sshd: TestSshd | undefined;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}



/** A fresh key pair in the test's directory; its public key without the comment. */
function keygen(name: string): string {
  return keyPair(dir, name).publicKey.split(" ").slice(0, 2).join(" ");
}

function execFileSyncQuiet(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")}: ${r.stderr}`);
}

/** What `pulumi stack output --json` prints for a stack whose host is this sshd with `hostKey`. */
function stackOutput(hostKey: string): string {
  const { raw, secretKeys } = stackConfig("prod");
  const cfg = parseConfig({ ...raw, "keel:deployUser": USER, "keel:sshPort": String(port) }, (k) => secretKeys.includes(k));
  const paths = hostPaths(cfg);
  return JSON.stringify(
    {
      deployPublicKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDeployKeyOfTheTestStack0000000000000000000 deploy",
      deployUser: USER,
      ipv4: "127.0.0.1",
      ipv6: "2001:db8::1",
      knownHosts: knownHostsLine(["127.0.0.1", "2001:db8::1"], port, hostKey),
      paths,
      serviceName: paths.unit,
      sshCommand: sshCommandLine("127.0.0.1", port, USER),
      sshPort: port,
    },
    null,
    2,
  );
}

/** Connections sshd has seen so far (after a moment, for its log to arrive). */
async function connections(): Promise<number> {
  await new Promise((r) => setTimeout(r, 300));
  return (sshd!.log().match(/Connection from/g) ?? []).length;
}

/** Runs scripts/runbook/NAME.sh in `dir` with the admin key, the stack outputs in a file (or as given). */
function runbook(name: string, args: string[], opts: { stack?: string; input?: string; env?: Record<string, string> } = {}): Promise<Run> {
  const stackFile = join(dir, `stack-${randomBytes(4).toString("hex")}.json`);
  writeFileSync(stackFile, opts.stack ?? stackOutput(hostPub));
  const env = { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: dir, KEEL_SSH_IDENTITY: join(dir, "admin"), KEEL_STACK_OUTPUT: stackFile, ...opts.env };
  return new Promise((resolve) => {
    const child = execFile(join(RUNBOOK, `${name}.sh`), args, { cwd: dir, env, timeout: 60_000, encoding: "utf8" }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === "number" ? error.code : -1) : 0, stdout, stderr });
    });
    child.stdin!.end(opts.input ?? "");
  });
}

beforeAll(async () => {
  if (process.getuid?.() !== 0) throw new Error("test/host/runbook.test.ts needs root: it starts sshd and creates a temporary user");
  dir = mkdtempSync(join(tmpdir(), "keel-runbook-"));
  chmodSync(dir, 0o755);
  hostPub = keygen("host");
  otherPub = keygen("other-host");
  const admin = keygen("admin");
  port = await freePort();
  execFileSyncQuiet("useradd", ["--create-home", "--shell", "/bin/bash", USER]);
  const home = `/home/${USER}`;
  mkdirSync(join(home, ".ssh"), { mode: 0o700 });
  writeFileSync(join(home, ".ssh", "authorized_keys"), `${admin}\n`, { mode: 0o600 });
  const { uid, gid } = JSON.parse(spawnSync("python3", ["-c", `import pwd,json; p=pwd.getpwnam("${USER}"); print(json.dumps({"uid": p.pw_uid, "gid": p.pw_gid}))`], { encoding: "utf8" }).stdout);
  chownSync(join(home, ".ssh"), uid, gid);
  chownSync(join(home, ".ssh", "authorized_keys"), uid, gid);
  writeFileSync(
    join(dir, "sshd_config"),
    [`Port ${port}`, "ListenAddress 127.0.0.1", `HostKey ${join(dir, "host")}`, `PidFile ${join(dir, "sshd.pid")}`, `AllowUsers ${USER}`,
      "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM yes", "LogLevel VERBOSE", ""].join("\n"),
  );
  sshd = await startSshd(join(dir, "sshd_config"), port);
});

afterAll(async () => {
  await sshd?.stop();
  spawnSync("userdel", ["--remove", USER], { timeout: 30_000 });
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("connect.sh: the pinned host key, never trust on first use", () => {
  it("logs in with the stack's known_hosts line, written to keel_known_hosts", async () => {
    rmSync(join(dir, "keel_known_hosts"), { force: true });
    const r = await runbook("connect", ["--", "echo", "keel-ok", "as", "$(id -un)"]);
    expect([r.code, r.stdout]).toEqual([0, `keel-ok as ${USER}\n`]);
    expect(readFileSync(join(dir, "keel_known_hosts"), "utf8")).toBe(`[127.0.0.1]:${port},[2001:db8::1]:${port} ${hostPub}\n`);
  });

  it("refuses a host whose key is not the stack's, and runs nothing there", async () => {
    const marker = `/tmp/keel-runbook-marker-${randomBytes(4).toString("hex")}`;
    const r = await runbook("connect", ["--", "touch", marker], { stack: stackOutput(otherPub) });
    expect(r.code).toBe(255);
    expect(r.stderr).toContain("REMOTE HOST IDENTIFICATION HAS CHANGED");
    expect(r.stderr).toContain("Host key verification failed.");
    expect(existsSync(marker)).toBe(false);
  });

  it("rewrites a stale keel_known_hosts from the stack (the stack is the truth, not the file)", async () => {
    writeFileSync(join(dir, "keel_known_hosts"), `[127.0.0.1]:${port} ${otherPub}\n`);
    const r = await runbook("connect", ["--", "true"]);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain("keel_known_hosts differs from the stack's knownHosts; rewriting it from the stack");
    expect(readFileSync(join(dir, "keel_known_hosts"), "utf8")).toContain(hostPub);
  });

  it("reads the stack outputs from standard input with --stack -", async () => {
    const r = await runbook("connect", ["--stack", "-", "--", "echo", "from-stdin"], { input: stackOutput(hostPub), env: { KEEL_STACK_OUTPUT: "" } });
    expect([r.code, r.stdout]).toEqual([0, "from-stdin\n"]);
  });

  it("the sshCommand output works as printed, with the keel_known_hosts connect.sh wrote", () => {
    const cmd = JSON.parse(stackOutput(hostPub)).sshCommand as string;
    expect(cmd).toBe(`ssh -o StrictHostKeyChecking=yes -o UserKnownHostsFile=keel_known_hosts -o GlobalKnownHostsFile=/dev/null -p ${port} ${USER}@127.0.0.1`);
    const [ssh, ...args] = cmd.split(" ");
    const r = spawnSync(ssh, ["-i", join(dir, "admin"), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", ...args, "echo", "as-printed"], { cwd: dir, encoding: "utf8", timeout: 30_000 });
    expect([r.status, r.stdout]).toEqual([0, "as-printed\n"]);
  });

  it("stops (3) without connecting when the stack has no pinned key or is not keel's JSON", async () => {
    const noKey = JSON.parse(stackOutput(hostPub));
    delete noKey.knownHosts;
    const before = await connections();
    const r = await runbook("connect", ["--", "true"], { stack: JSON.stringify(noKey) });
    expect(r.code).toBe(3);
    expect(r.stderr).toContain("knownHosts output is not a 'host ssh-ed25519 KEY' line; the host key must come from the stack, never from the host");
    const garbage = await runbook("connect", ["--", "true"], { stack: "Current stack is prod:\n  ipv4 203.0.113.7\n" });
    expect([garbage.code, garbage.stderr.trim()]).toEqual([3, "connect.sh: the stack outputs are not JSON from keel's program (pulumi stack output --json)"]);
    const nothing = await runbook("connect", [], { env: { KEEL_STACK_OUTPUT: join(dir, "nope.json") } });
    expect(nothing.code).toBe(3);
    expect(await connections()).toBe(before);
  });

  it("logs in with the key named by KEEL_SSH_IDENTITY only (a retired key is refused by the host)", async () => {
    keygen("not-authorized");
    const r = await runbook("connect", ["--", "true"], { env: { KEEL_SSH_IDENTITY: join(dir, "not-authorized") } });
    expect(r.code).toBe(255);
    expect(r.stderr).toContain("Permission denied (publickey)");
  });
});

describe("the other scripts' argument checks stop bad input before any connection", () => {
  const cases: Array<[string, string[], RegExp]> = [
    ["status", ["--only", "db;reboot"], /--only needs check names/],
    ["logs", ["--since", "$(reboot)"], /--since needs a time/],
    ["logs", ["-n", "all"], /-n needs a number of lines/],
    ["restore", [], /usage: restore\.sh/],
    ["restore", ["../../etc/shadow"], /is not a backup name/],
    ["restore", ["engine-20261122T031700Z.db"], /not asked without a terminal; add --yes/],
    ["engine", ["reboot"], /usage: engine\.sh .* stop\|start\|restart/],
    ["backup-now", ["--keep", "1"], /usage: backup-now\.sh/],
    ["migrate", [], /usage: migrate\.sh/],
    ["compliance", ["--level", "high"], /--level takes intermediary or enhanced/],
    ["compliance", ["--content", "/nonexistent/ssg.deb"], /--content needs a readable file/],
    ["compliance", ["--yes"], /usage: compliance\.sh/],
    ["integrity", [], /usage: integrity\.sh/],
    ["integrity", ["check", "now"], /usage: integrity\.sh/],
    ["integrity", ["accept", "nope"], /accept takes the pending database's sha256/],
    ["integrity", ["copy", "/nonexistent"], /copy takes a writable directory/],
    ["integrity", ["accept", "0".repeat(64)], /not asked without a terminal; add --yes/],
  ];
  it.each(cases)("%s.sh %j exits 2", async (name, args, message) => {
    const before = await connections();
    const r = await runbook(name, args);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(await connections()).toBe(before);
  });

  it("snapshot.sh never overwrites an existing OUT", async () => {
    writeFileSync(join(dir, "taken.db"), "");
    const r = await runbook("snapshot", ["taken.db"]);
    expect([r.code, r.stderr.trim()]).toEqual([2, "snapshot.sh: taken.db exists; snapshots are never overwritten"]);
  });

  it("every script prints its usage with -h", async () => {
    for (const name of ["connect", "status", "logs", "backup-now", "restore", "snapshot", "migrate", "engine", "verify", "compliance", "integrity"]) {
      const r = await runbook(name, ["-h"]);
      expect(r.code, name).toBe(0);
      expect(r.stderr, name).toMatch(/^Usage: scripts\/runbook\//);
    }
  });
});

describe("verify.sh (keel verify) against the sshd", () => {
  // The whole run, keel-verify on the host included, is the VM tier's (test/vm/demo.test.ts); here,
  // how it stops. This sshd's user has no sudo, as a host without keel-verify would refuse it.
  it("stops (3) when keel-verify cannot run on the host, saying why and what to do", async () => {
    const r = await runbook("verify", []);
    expect(r.code, r.stderr).toBe(3);
    expect(r.stderr).toContain("/usr/local/sbin/keel-verify is not on the host, or not allowed to");
    expect(r.stderr).toContain("pulumi up first");
  });

  it("stops (1) at a host that shows another key, checking nothing else there, also in --json", async () => {
    const r = await runbook("verify", ["--json"], { stack: stackOutput(otherPub) });
    expect(r.code, r.stderr).toBe(1);
    const report = JSON.parse(r.stdout) as { status: string; checks: Array<{ name: string; status: string; evidence: string }> };
    expect(report.status).toBe("failed");
    expect(report.checks).toEqual([{ name: "host-key", status: "failed", evidence: expect.stringContaining("shows another key than the stack's pinned one: nothing else is checked") }]);
  });

  it("stops (3) when the host does not answer", async () => {
    const closed = await freePort();
    const stack = stackOutput(hostPub).replaceAll(`"sshPort": ${port}`, `"sshPort": ${closed}`).replaceAll(`]:${port} `, `]:${closed} `);
    const r = await runbook("verify", [], { stack });
    expect(r.code, r.stderr).toBe(3);
    expect(r.stderr).toContain(`could not reach 127.0.0.1 port ${closed} as ${USER}`);
  });
});

describe("compliance.sh against the sshd", () => {
  it("stops (3) when the host has no keel-compliance, saying what to do", async () => {
    const r = await runbook("compliance", []);
    expect(r.code, r.stderr).toBe(3);
    expect(r.stderr).toContain("/usr/local/sbin/keel-compliance did not answer: a host last converged by a keel without it (pulumi up first)");
  });
});

describe("integrity.sh against the sshd", () => {
  it("stops (3) when the host has no keel-integrity, before sudo's own exit 1 could read as changes found", async () => {
    for (const command of [["show"], ["check"]]) {
      const r = await runbook("integrity", command);
      expect(r.code, r.stderr).toBe(3);
      expect(r.stderr).toContain("/usr/local/sbin/keel-integrity is not on 127.0.0.1: a host last converged by a keel without it (pulumi up first)");
    }
  });
});

describe("logs.sh and migrate.sh against the sshd", () => {
  it("logs.sh runs journalctl for the stack's service as the deploy user, --since kept as one argument", async () => {
    const r = await runbook("logs", ["-n", "5", "--since", "1 hour ago"]);
    expect(r.code, r.stderr).toBe(0);
    expect(sshd!.log()).toMatch(new RegExp(`Accepted publickey for ${USER} from 127\\.0\\.0\\.1`));
  });

  it("migrate.sh carries nothing forward from a DB that fails the gate", async () => {
    const db = makeDb(join(dir, "bad.db"), { rows: 2000 });
    const bytes = readFileSync(db);
    bytes.fill(0x5a, 5 * 4096 + 8, 6 * 4096 - 8);
    writeFileSync(db, bytes);
    const r = await runbook("migrate", ["--yes", db]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("did not pass the gate: do not carry it forward");
    expect(existsSync(`/home/${USER}/keel-incoming`)).toBe(false);
  });

  it("migrate.sh proves a DB clean here, uploads exactly its bytes to ~/keel-incoming, then hands over to keel-ops adopt", async () => {
    const db = makeDb(join(dir, "good.db"), { wal: true });
    const r = await runbook("migrate", ["--yes", db]);
    // This machine has no keel-ops (nor sudo): the last step fails here and runs on the VM.
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("migrate.sh: 1/3 the integrity gate on");
    expect(r.stderr).toContain("migrate.sh: 2/3 upload to");
    expect(r.stderr).toContain("adopt failed on the host");
    const uploaded = spawnSync("find", [`/home/${USER}/keel-incoming`, "-name", "incoming-*.db"], { encoding: "utf8" }).stdout.trim().split("\n");
    expect(uploaded).toHaveLength(1);
    expect(sha256(uploaded[0])).toBe(sha256(db));
    expect(sql(`file:${uploaded[0]}?mode=ro`, "PRAGMA integrity_check;")).toBe("ok");
    expect(existsSync(`${db}-wal`) ? readFileSync(`${db}-wal`).length : 0).toBe(0);
  });
});

describe("keel-ops (the host side) without systemd", () => {
  function ops(args: string[], conf: string): Run {
    const r = spawnSync(join(REPO, TOOLS.ops), args, { encoding: "utf8", env: rootToolEnv({ KEEL_HOST_CONF: conf }), timeout: 60_000 });
    return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
  }
  let conf: string;
  let backups: string;
  let root: string;
  afterAll(() => rmSync(root, { recursive: true, force: true }));
  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), "keel-ops-"));
    backups = join(root, "backups");
    mkdirSync(backups);
    const { raw, secretKeys } = stackConfig("prod");
    const cfg = parseConfig({ ...raw, "keel:deployUser": USER }, (k) => secretKeys.includes(k));
    conf = join(root, "host.conf");
    writeFileSync(conf, renderHostConf(cfg).replace(/^backup_dir=.*$/m, `backup_dir=${backups}`).replace(/^db=.*$/m, `db=${join(root, "engine.db")}`));
    for (const name of ["engine-20261120T031700Z.db", "engine-20261121T031700Z.db", "engine-notabackup.db", "other-20261121T031700Z.db"]) writeFileSync(join(backups, name), "x".repeat(7));
  });

  it("lists only the DB's final-named backups, oldest first (no link, whatever its name)", () => {
    symlinkSync(join(backups, "engine-20261121T031700Z.db"), join(backups, "engine-20991231T235959Z.db"));
    const r = ops(["backups"], conf);
    expect([r.code, r.stdout]).toEqual([0, "engine-20261120T031700Z.db\t7\nengine-20261121T031700Z.db\t7\n"]);
  });

  it("refuses a restore of anything but a listed backup, and an adopt of a file outside the deploy user's keel-incoming", () => {
    expect(ops(["restore", "../engine.db"], conf)).toMatchObject({ code: 3, stderr: expect.stringContaining("no backup named '../engine.db'") });
    expect(ops(["restore", "engine-20261119T031700Z.db"], conf).code).toBe(3);
    expect(ops(["prune", "0"], conf)).toMatchObject({ code: 2, stderr: expect.stringContaining("N must be a whole number from 1, not '0'") });
    expect(ops(["prune", "1", "2"], conf).code).toBe(2);
    writeFileSync(join(dir, "elsewhere.db"), "");
    expect(ops(["adopt", join(dir, "elsewhere.db")], conf)).toMatchObject({
      code: 3,
      stderr: expect.stringContaining(`adopt takes a file uploaded into /home/${USER}/keel-incoming/`),
    });
  });

  it("lists and removes the previous DBs a restore or adopt kept aside, and nothing else", () => {
    const db = /^db=(.*)$/m.exec(readFileSync(conf, "utf8"))![1];
    const aside = [`${db}.pre-restore-20261122T031700Z`, `${db}.pre-restore-20261122T031700Z-wal`, `${db}.pre-adopt-20261123T000000Z`];
    for (const f of [...aside, db, `${db}-wal`, `${db}.pre-restore-notes.txt`]) writeFileSync(f, "x");
    expect(ops(["asides"], conf).stdout).toBe(aside.map((f) => `${f}\t1\n`).join(""));
    expect(ops(["remove-asides"], conf)).toMatchObject({ code: 0, stdout: "keel-ops: removed 3 file(s) kept aside by restore or adopt\n" });
    for (const f of aside) expect(existsSync(f), f).toBe(false);
    for (const f of [db, `${db}-wal`, `${db}.pre-restore-notes.txt`]) expect(existsSync(f), f).toBe(true);
  });

  // The DB commands that need no systemd, run for real: as the engine's user (the test's user, with
  // a group of its own name as keel's users have, stands in) and the backup user (a system user made
  // here the way keel-place makes <app>-backup), with keel's DB tools installed under their host names.
  describe("prune, set-aside and recover, as the backup user and the engine's user", () => {
    let live: string;
    let nobodyConf: string;
    const BACKUP_USER = `${USER}-bk`;
    afterAll(() => spawnSync("userdel", [BACKUP_USER], { timeout: 30_000 }));
    beforeAll(() => {
      execFileSyncQuiet("useradd", ["--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", BACKUP_USER]);
      const tools = join(root, "tools");
      mkdirSync(tools);
      for (const t of ["backup", "gate", "lib", "restore"]) symlinkSync(join(REPO, "scripts", "host", `keel-db-${t}`), join(tools, `keel-db-${t}`));
      live = join(root, "live");
      mkdirSync(live, { mode: 0o755 });
      chmodSync(root, 0o755);
      nobodyConf = join(root, "nobody.conf");
      const base = readFileSync(conf, "utf8");
      writeFileSync(
        nobodyConf,
        base
          .replace(/^app_user=.*$/m, `app_user=${USER}`)
          .replace(/^backup_user=.*$/m, `backup_user=${BACKUP_USER}`)
          .replace(/^db=.*$/m, `db=${join(live, "engine.db")}`)
          .replace(/^backup_dir=.*$/m, `backup_dir=${join(live, "backups")}`)
          .replace(/^session_backup_dir=.*$/m, `session_backup_dir=${join(live, "backups", "sessions")}`)
          .replace(/^tools_dir=.*$/m, `tools_dir=${tools}`),
      );
      execFileSync("sh", ["-c", `chown -R ${USER}:${USER} ${live}`]);
      // The backup tree as keel-place leaves it: the backup user's, setgid to the engine's group.
      for (const d of [join(live, "backups"), join(live, "backups", "sessions")]) {
        mkdirSync(d);
        execFileSync("sh", ["-c", `chown ${BACKUP_USER}:${USER} ${d} && chmod 2750 ${d}`]);
      }
    });
    const uidOf = (u: string) => Number(execFileSync("id", ["-u", u], { encoding: "utf8" }));
    const asApp = (command: string) => execFileSync("setpriv", [`--reuid=${USER}`, `--regid=${USER}`, "--clear-groups", "sh", "-c", command], { encoding: "utf8" });

    it("prune keeps the newest N of the scheduled and the session backups, and the newest verified one", () => {
      const db = join(live, "engine.db");
      asApp(`sqlite3 ${db} "CREATE TABLE t(x); INSERT INTO t VALUES (1);"`);
      // As the backup service takes them: root runs the two sides as their users (keel-db-backup --as).
      for (let i = 0; i < 3; i++) {
        for (const d of [join(live, "backups"), join(live, "backups", "sessions")]) {
          execFileSync(join(REPO, TOOLS["db-backup"]), ["--as", `${USER}:${BACKUP_USER}`, "--keep", "10", db, d], { stdio: "ignore" });
        }
      }
      for (const f of readdirSync(join(live, "backups")).filter((f) => f.endsWith(".db"))) {
        const st = statSync(join(live, "backups", f));
        expect([st.uid, st.mode & 0o7777], f).toEqual([uidOf(BACKUP_USER), 0o640]);
      }
      const r = ops(["prune", "1"], nobodyConf);
      expect(r.stderr).not.toContain("what to do");
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^pruned ${join(live, "backups")}: removed 2 backup\\(s\\)`, "m"));
      expect(r.stdout).toMatch(new RegExp(`^pruned ${join(live, "backups", "sessions")}: removed 2 backup\\(s\\)`, "m"));
      expect(r.stdout).toContain("set keel:backupRetention to 1 too");
      for (const d of ["backups", join("backups", "sessions")]) {
        expect(readdirSync(join(live, d)).filter((f) => /^engine-\d{8}T\d{6}Z\.db$/.test(f)), d).toHaveLength(1);
      }
    });

    it("set-aside renames one listed backup out of every list, as the backup user, and nothing else", () => {
      const dirB = join(live, "backups");
      const [first] = readdirSync(dirB).filter((f) => /^engine-\d{8}T\d{6}Z\.db$/.test(f));
      expect(ops(["set-aside", "../engine.db"], nobodyConf)).toMatchObject({ code: 3, stderr: expect.stringContaining("no backup named '../engine.db'") });
      const r = ops(["set-aside", first], nobodyConf);
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      expect(existsSync(join(dirB, first))).toBe(false);
      expect(statSync(join(dirB, `.set-aside-${first}`)).uid).toBe(uidOf(BACKUP_USER));
      expect(ops(["backups"], nobodyConf).stdout).not.toContain(first);
      // Listed with the asides, and kept by remove-asides: it may be the evidence of what changed it.
      expect(ops(["asides"], nobodyConf).stdout).toContain(`${join(dirB, `.set-aside-${first}`)}\t`);
      expect(ops(["remove-asides"], nobodyConf)).toMatchObject({ code: 0, stdout: expect.stringMatching(/^keel-ops: removed \d+ file\(s\)/) });
      expect(existsSync(join(dirB, `.set-aside-${first}`))).toBe(true);
      // A session backup (health names those too), by its name alone.
      const dirS = join(dirB, "sessions");
      const [session] = readdirSync(dirS).filter((f) => /^engine-\d{8}T\d{6}Z\.db$/.test(f) && !existsSync(join(dirB, f)));
      expect(session).toBeDefined();
      expect(ops(["set-aside", session], nobodyConf)).toMatchObject({ code: 0, stdout: expect.stringContaining(`as ${join(dirS, `.set-aside-${session}`)}`) });
      expect(existsSync(join(dirS, `.set-aside-${session}`))).toBe(true);
      expect(ops(["asides"], nobodyConf).stdout).toContain(`${join(dirS, `.set-aside-${session}`)}\t`);
    });

    it("recover puts back the DB a swap left half done, as the engine's user", () => {
      const db = join(live, "engine.db");
      const aside = `${db}.pre-restore-20261201T000000Z`;
      asApp(`mv ${db} ${aside} && printf 'tmp=%s\\naside=%s\\n' ${join(live, ".engine.db.restore.AbC123")} ${aside} > ${join(live, ".engine.db.swap")} && touch ${join(live, ".engine.db.restore.AbC123")}`);
      const r = ops(["recover"], nobodyConf);
      expect(r.stderr).toContain("was rolled back");
      expect(r.code).toBe(0);
      expect(r.stdout).toContain("is consistent");
      expect(existsSync(db)).toBe(true);
      expect(existsSync(join(live, ".engine.db.swap"))).toBe(false);
      expect(statSync(db).uid).toBe(Number(execFileSync("id", ["-u", USER], { encoding: "utf8" })));
    });
  });

  it("reads the audit log only for keel's audit keys and time words, before anything else", () => {
    expect(ops(["audit", "passwords"], conf)).toMatchObject({ code: 2, stderr: expect.stringContaining("no audit key 'passwords'; use one of: identity sudoers sshd keel units sudo-exec modules time-change") });
    expect(ops(["audit", "sudo-exec", "--start=1970"], conf)).toMatchObject({ code: 2, stderr: expect.stringContaining("WHEN '--start=1970' is not one of") });
    expect(ops(["audit"], conf).code).toBe(2);
    expect(ops(["verify-packages", "openssh-server"], conf).code).toBe(2);
  });

  it("prints its usage (2) for anything else", () => {
    const r = ops(["reboot"], conf);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^Usage: keel-ops backups/);
  });
});

// The Pulumi executor's upload steps (components/hostSteps.ts): scripts/steps/upload-file.sh on the
// operator's machine, with the keys in ssh-agent (as `pulumi up` runs it) and the pinned host key.
describe("upload-file.sh: the upload step's copy, against the sshd", () => {
  let agent: { SSH_AUTH_SOCK: string; SSH_AGENT_PID: string };
  const remoteDir = () => `/home/${USER}/incoming`;

  beforeAll(() => {
    const out = execFileSync("ssh-agent", ["-s"], { encoding: "utf8" });
    agent = { SSH_AUTH_SOCK: /SSH_AUTH_SOCK=([^;]+);/.exec(out)![1], SSH_AGENT_PID: /SSH_AGENT_PID=(\d+);/.exec(out)![1] };
    execFileSync("ssh-add", ["-q", join(dir, "admin")], { env: { ...process.env, ...agent }, stdio: "ignore" });
    execFileSync("runuser", ["-u", USER, "--", "mkdir", "-m", "0700", remoteDir()]);
  });
  afterAll(() => {
    if (agent) process.kill(Number(agent.SSH_AGENT_PID), "SIGTERM");
  });

  function upload(result: string, remote: string, hostKey = hostPub, path = process.env.PATH ?? "/usr/bin:/bin"): Promise<Run> {
    const env = { PATH: path, HOME: dir, ...agent, KEEL_HOST_KEY: hostKey };
    return new Promise((resolve) => {
      const child = execFile("bash", [join(REPO, "scripts", "steps", "upload-file.sh"), "127.0.0.1", String(port), USER, remote], { cwd: REPO, env, timeout: 60_000, encoding: "utf8" }, (error, stdout, stderr) => {
        resolve({ code: error ? (typeof error.code === "number" ? error.code : -1) : 0, stdout, stderr });
      });
      child.stdin!.end(`${result}\n`);
    });
  }
  const local = (name: string, bytes: Buffer) => {
    const file = join(dir, name);
    writeFileSync(file, bytes);
    return { file, result: `${createHash("sha256").update(bytes).digest("hex")}  ${file}` };
  };
  const onHost = (p: string) => spawnSync("runuser", ["-u", USER, "--", "sh", "-c", `stat -c '%a %s' ${p} && sha256sum ${p}`], { encoding: "utf8" }).stdout;

  it("copies the file the local step proved, verifies its sha256 on the host, and leaves it 0600 under its name", async () => {
    const bytes = randomBytes(300_000);
    const { file, result } = local("chosen.db", bytes);
    const remote = `${remoteDir()}/engine.db`;
    const r = await upload(result, remote);
    expect(r).toMatchObject({ code: 0, stderr: "" });
    expect(r.stdout).toBe(`upload: ${file} (${result.split(" ")[0]}) is ${remote} on the host\n`);
    expect(onHost(remote)).toBe(`600 ${bytes.length}\n${result.split(" ")[0]}  ${remote}\n`);
    expect(onHost(`${remote}.partial`)).toBe("");
  });

  it("refuses a file changed or gone since the local step proved it, and copies nothing", async () => {
    const { file, result } = local("changed.db", randomBytes(1000));
    writeFileSync(file, randomBytes(1000));
    const changed = await upload(result, `${remoteDir()}/changed.db`);
    expect(changed.code).toBe(3);
    expect(changed.stderr).toMatch(/^keel-upload: .*changed\.db changed since the step before this one proved it \(sha256 [0-9a-f]{64}, proven [0-9a-f]{64}\); nothing was copied/);
    rmSync(file);
    const gone = await upload(result, `${remoteDir()}/changed.db`);
    expect(gone.code).toBe(3);
    expect(gone.stderr).toContain("changed.db is gone; it was chosen by the step before this one");
    expect(onHost(`${remoteDir()}/changed.db`)).toBe("");
  });

  it("removes the copy on the host when its sha256 there is not the proven one (a file changed between the check and the send)", async () => {
    const { file, result } = local("raced.db", randomBytes(5000));
    // An ssh that appends to the file after upload-file.sh checked it and opened it as ssh's stdin:
    // the host receives other bytes than the ones proven.
    const bin = join(dir, "raced-bin");
    mkdirSync(bin, { recursive: true });
    const realSsh = execFileSync("sh", ["-c", "command -v ssh"], { encoding: "utf8" }).trim();
    writeFileSync(join(bin, "ssh"), `#!/bin/sh\nprintf 'tampered' >> ${file}\nexec ${realSsh} "$@"\n`, { mode: 0o755 });
    const remote = `${remoteDir()}/raced.db`;
    const r = await upload(result, remote, hostPub, `${bin}:${process.env.PATH ?? "/usr/bin:/bin"}`);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`sha256 on the host is [0-9a-f]{64}, expected ${result.split(" ")[0]}`));
    expect(r.stderr).toContain("nothing was put in place");
    expect(onHost(remote)).toBe("");
    expect(onHost(`${remote}.partial`)).toBe("");
  });

  it("refuses a host that shows another key, and copies nothing", async () => {
    const { result } = local("other.db", randomBytes(1000));
    const r = await upload(result, `${remoteDir()}/other.db`, otherPub);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("Host key verification failed");
    expect(r.stderr).toContain("nothing was put in place");
    expect(onHost(`${remoteDir()}/other.db`)).toBe("");
  });
});
