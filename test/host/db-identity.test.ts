// Issues 11 and 17 (#11): the backup identity. The backups belong to a user of their own, which the
// engine's user cannot act as: a compromised engine can read its backups (keel-ops restore does, as
// the engine's user) but neither delete, rewrite, rename nor forge one. A backup is two processes
// joined by a pipe: the DB's side (`keel-db-backup --export`, the engine's user) and the backups' side
// (`keel-db-backup --from-stdin`, the backup user); root only starts the two (`--as`). Two temporary
// system users stand in for <app> and <app>-backup; real sqlite3, real scripts, real setpriv.
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { chmodSync, chownSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { type Run, SCRIPTS, makeDb, removeDir, sha256, sql, tempDir } from "./db-helpers";

const TAG = randomBytes(3).toString("hex");
const ENGINE = `keel-e${TAG}`;
const BACKUP = `keel-e${TAG}-backup`;
const id = (flag: "-u" | "-g", user: string) => Number(execFileSync("id", [flag, user], { encoding: "utf8" }));
/** Tools whose every call is recorded with the caller's uid: root must run none of them in `--as`. */
const RECORDED = ["mktemp", "ln", "cp", "mv", "chmod", "chown", "install", "dd", "rm", "sqlite3", "head", "cat", "touch", "mkdir"] as const;

let dir: string;
let live: string;
let db: string;
let tree: string;
let sessions: string;
let bin: string;
let log: string;

beforeAll(() => {
  if (process.getuid?.() !== 0) throw new Error("test/host/db-identity.test.ts needs root: it creates two system users");
  for (const u of [ENGINE, BACKUP]) {
    execFileSync("useradd", ["--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", u]);
  }
});
afterAll(() => {
  for (const u of [BACKUP, ENGINE]) spawnSync("userdel", [u], { timeout: 30_000 });
});

beforeEach(() => {
  dir = tempDir("keel-db-identity-");
  chmodSync(dir, 0o755);
  // /var/lib/<app>: the engine's, 0700.
  live = join(dir, "live");
  mkdirSync(live, { mode: 0o700 });
  chownSync(live, id("-u", ENGINE), id("-g", ENGINE));
  db = join(live, "engine.db");
  makeDb(db, { rows: 50, wal: true });
  execFileSync("sh", ["-c", `chown ${ENGINE}:${ENGINE} ${db}* && chmod 0600 ${db}*`]);
  // /var/backups/<app> and its sessions directory, as keel-place leaves them (plan/database.ts backupTreeDir).
  tree = join(dir, "backups");
  sessions = join(tree, "sessions");
  for (const d of [tree, sessions]) {
    mkdirSync(d);
    chownSync(d, id("-u", BACKUP), id("-g", ENGINE));
    chmodSync(d, 0o2750);
  }
  bin = join(dir, "bin");
  mkdirSync(bin, { mode: 0o755 });
  log = join(dir, "calls.log");
  writeFileSync(log, "");
  chmodSync(log, 0o666);
  for (const tool of RECORDED) {
    const real = execFileSync("sh", ["-c", `command -v ${tool}`], { encoding: "utf8" }).trim();
    writeFileSync(join(bin, tool), `#!/bin/sh\nprintf '%s %s\\n' "$(id -u)" ${tool} >>${log}\nexec ${real} "$@"\n`, { mode: 0o755 });
  }
});
afterEach(() => removeDir(dir));

function run(file: string, args: string[], opts: { input?: string | Buffer; as?: string; env?: Record<string, string> } = {}): Run {
  const argv = opts.as ? ["setpriv", `--reuid=${opts.as}`, `--regid=${opts.as}`, "--init-groups", "--", file, ...args] : [file, ...args];
  const r = spawnSync(argv[0], argv.slice(1), {
    encoding: "utf8",
    input: opts.input,
    timeout: 120_000,
    env: { PATH: `${bin}:/usr/sbin:/usr/bin:/sbin:/bin`, HOME: "/root", ...opts.env },
  });
  if (r.error) throw r.error;
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}
const backup = (...args: string[]) => run(join(SCRIPTS, "keel-db-backup"), args);
const session = (...args: string[]) => run(join(SCRIPTS, "keel-db-session-backup"), args);
const asEngine = (command: string) => spawnSync("setpriv", [`--reuid=${ENGINE}`, `--regid=${ENGINE}`, "--init-groups", "--", "sh", "-c", command], { encoding: "utf8" });
const finals = (d: string) => readdirSync(d).filter((f) => /^engine-\d{8}T\d{6}Z\.db$/.test(f)).sort();
const rootCalls = () => readFileSync(log, "utf8").split("\n").filter((l) => l.startsWith("0 "));

/**
 * flock(1) holding `lock` (-s shared, -x exclusive) for `seconds`, as `user` (root when none), in a
 * process group of its own (flock and its sleep both hold it). Resolves once it has had time to take
 * the lock; release() ends it early and waits for it to be gone.
 */
async function holdLock(lock: string, mode: "-s" | "-x", seconds: number, user?: string): Promise<{ release: () => Promise<void> }> {
  const argv = ["flock", mode, lock, "sleep", String(seconds)];
  const holder = user
    ? spawn("setpriv", [`--reuid=${user}`, `--regid=${user}`, "--init-groups", "--", ...argv], { stdio: "ignore", detached: true })
    : spawn(argv[0], argv.slice(1), { stdio: "ignore", detached: true });
  const exited = new Promise((res) => holder.on("exit", res));
  await new Promise((res) => setTimeout(res, 500));
  return {
    release: async () => {
      try {
        process.kill(-holder.pid!, "SIGKILL");
      } catch {
        // Its time was up: the group is gone already.
      }
      await exited;
    },
  };
}

describe("keel-db-backup --as ENGINE:BACKUP (the backup service)", () => {
  it("reads the DB as the engine's user and stores a verified backup as the backup user's (group: the engine's, 0640); root runs no file tool", () => {
    const r = backup("--as", `${ENGINE}:${BACKUP}`, "--keep", "3", db, tree);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const [name] = finals(tree);
    expect(r.stdout).toBe(`${join(tree, name)}\n`);
    const st = statSync(join(tree, name));
    expect([st.uid, st.gid, st.mode & 0o7777]).toEqual([id("-u", BACKUP), id("-g", ENGINE), 0o640]);
    expect(sql(join(tree, name), "PRAGMA integrity_check; SELECT count(*) FROM t;")).toBe("ok\n50");
    const status = JSON.parse(readFileSync(join(tree, "engine.status.json"), "utf8"));
    expect(status).toMatchObject({ result: "ok", file: join(tree, name), sha256: sha256(join(tree, name)) });
    expect(statSync(join(tree, "engine.status.json")).uid).toBe(id("-u", BACKUP));
    // The export's temporary copy beside the DB is gone; the DB's directory holds only the DB's files.
    expect(readdirSync(live).filter((f) => f.includes("export"))).toEqual([]);
    // Root ran setpriv and no file tool (the two sides run with setpriv's clean PATH, so only root's
    // own calls pass through the recording wrappers)...
    expect(rootCalls()).toEqual([]);
    // ...which do record root: the same backup taken by root alone, in a directory of root's.
    const own = join(dir, "root-own");
    mkdirSync(own, { mode: 0o700 });
    expect(backup(db, own).code).toBe(0);
    expect(rootCalls()).toEqual(expect.arrayContaining(["0 sqlite3", "0 mktemp", "0 mv"]));
  });

  // keel-place hands an older keel's files over as 0640, its lock too: a descriptor the engine opened
  // on it then could hold the lock for ever. The store side puts a new lock file in its place.
  it("replaces a lock file others could open (an older keel's, handed over 0640) instead of locking it", async () => {
    expect(backup("--as", `${ENGINE}:${BACKUP}`, db, tree).code).toBe(0);
    const lock = join(tree, ".engine.backup.lock");
    expect(statSync(lock).mode & 0o777).toBe(0o600);
    chmodSync(lock, 0o640);
    // The engine opens it while it is readable and holds it.
    const holder = await holdLock(lock, "-s", 60, ENGINE);
    try {
      const r = backup("--as", `${ENGINE}:${BACKUP}`, db, tree);
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      expect(statSync(lock).mode & 0o777).toBe(0o600);
    } finally {
      await holder.release();
    }
  });

  it("leaves the engine's user unable to delete, rewrite, rename or forge a backup, or plant a link, in either directory", () => {
    expect(backup("--as", `${ENGINE}:${BACKUP}`, db, tree).code).toBe(0);
    const [name] = finals(tree);
    const sum = sha256(join(tree, name));
    for (const attack of [
      `rm -f ${join(tree, name)}`,
      `printf x >> ${join(tree, name)}`,
      `mv ${join(tree, name)} ${join(tree, "moved.db")}`,
      `: > ${join(tree, "engine-20991231T235959Z.db")}`,
      `: > ${join(sessions, "engine-20991231T235959Z.db")}`,
      `mkfifo ${join(tree, "engine.status.json.fifo")}`,
      `ln -s /etc/passwd ${join(tree, "planted")}`,
      `rm -f ${join(tree, "engine.status.json")}`,
    ]) {
      const r = asEngine(attack);
      expect(r.status, attack).not.toBe(0);
      expect(r.stderr, attack).toMatch(/Permission denied/);
    }
    expect(sha256(join(tree, name))).toBe(sum);
    expect(finals(tree)).toEqual([name]);
    expect(finals(sessions)).toEqual([]);
    // Reading stays possible: keel-ops restore verifies and restores a backup as the engine's user.
    expect(asEngine(`sqlite3 'file:${join(tree, name)}?mode=ro' 'SELECT count(*) FROM t'`).stdout).toBe("50\n");
  });

  it("records the export side's failure, with its reason and exit code, in the backup user's status file", () => {
    execFileSync("sh", ["-c", `mv ${db} ${db}.away && rm -f ${db}-wal ${db}-shm`]);
    const r = backup("--as", `${ENGINE}:${BACKUP}`, db, tree);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`the export of ${db} failed: ${db}: no such DB file`);
    expect(finals(tree)).toEqual([]);
    expect(JSON.parse(readFileSync(join(tree, "engine.status.json"), "utf8"))).toMatchObject({ result: "failed", exit_code: 1, file: null });
  });

  it("refuses a non-root caller and one user for both sides (exit 2)", () => {
    expect(backup("--as", `${ENGINE}:${ENGINE}`, db, tree)).toMatchObject({ code: 2, stderr: expect.stringContaining("two users, not one") });
    const r = run(join(SCRIPTS, "keel-db-backup"), ["--as", `${ENGINE}:${BACKUP}`, db, tree], { as: BACKUP });
    expect(r).toMatchObject({ code: 2, stderr: expect.stringContaining("run it as root") });
  });
});

describe("keel-db-backup --from-stdin (the backups' side) treats the stream as the engine's word", () => {
  // The backup user's side fed by hand, as a compromised engine could feed it.
  const store = (input: string | Buffer, ...extra: string[]) =>
    run(join(SCRIPTS, "keel-db-backup"), ["--from-stdin", ...extra, db, tree], { input, as: BACKUP });

  it("keeps nothing of a stream cut short, a stream without a header, or a header it does not know (exit 5)", () => {
    const bytes = readFileSync(makeDb(join(dir, "other.db"), { rows: 5 }));
    const cut = store(Buffer.concat([Buffer.from(`keel-db-export 1 size ${bytes.length}\n`), bytes.subarray(0, 1000)]));
    expect(cut.code).toBe(5);
    expect(cut.stderr).toContain(`the export of ${db} ended after 1000 of ${bytes.length} bytes`);
    expect(store(bytes).code).toBe(5);
    expect(store("keel-db-export 2 size 10\n0123456789").stderr).toContain("stdin is not a backup stream");
    expect(store("").stderr).toContain(`the export of ${db} sent nothing: it was killed or failed before its header`);
    // Each of them is a failed run on record, for the health check.
    expect(JSON.parse(readFileSync(join(tree, "engine.status.json"), "utf8"))).toMatchObject({ result: "failed", exit_code: 5 });
    expect(finals(tree)).toEqual([]);
    expect(readdirSync(tree).filter((f) => f.includes("partial"))).toEqual([]);
  });

  it("stores a whole stream only when it passes the integrity gate (a forged, damaged DB is refused, exit 1)", () => {
    const bad = makeDb(join(dir, "bad.db"), { rows: 200 });
    const buf = readFileSync(bad);
    buf.fill(0xff, 4096, 8192); // a b-tree page overwritten
    const r = store(Buffer.concat([Buffer.from(`keel-db-export 1 size ${buf.length}\n`), buf]));
    expect(r.code).toBe(1);
    expect(finals(tree)).toEqual([]);
    const good = readFileSync(makeDb(join(dir, "good.db"), { rows: 7 }));
    const ok = store(Buffer.concat([Buffer.from(`keel-db-export 1 size ${good.length}\n`), good]));
    expect(ok.code).toBe(0);
    expect(finals(tree)).toHaveLength(1);
  });

  it("takes 'no DB' only where the caller allows it (session backups): elsewhere it is a failure (exit 1)", () => {
    expect(store("keel-db-export 1 none\n")).toMatchObject({ code: 1, stderr: expect.stringContaining("no such DB file (the export side found none)") });
    expect(store("keel-db-export 1 none\n", "--none-ok")).toMatchObject({ code: 0, stdout: "" });
  });

  it("takes an exit code from the stream only within the scripts' codes (1-5)", () => {
    const r = store("keel-db-export 1 failed 77 made up\n");
    expect(r.code).toBe(5);
    expect(JSON.parse(readFileSync(join(tree, "engine.status.json"), "utf8"))).toMatchObject({ result: "failed", exit_code: 5, reason: `the export of ${db} failed: made up` });
  });
});

describe("keel-db-session-backup --as (the engine's ExecCondition=+ and ExecStopPost=+)", () => {
  it("takes the pre- and post-session backups into the sessions directory as the backup user's", () => {
    for (const phase of ["pre", "post"]) {
      const r = session(phase, "--as", `${ENGINE}:${BACKUP}`, "--keep", "5", "--history", tree, db, sessions);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(new RegExp(`${phase}-session backup of ${db}: ${sessions}/engine-\\d{8}T\\d{6}Z\\.db`));
    }
    const names = finals(sessions);
    expect(names).toHaveLength(2);
    for (const n of names) expect(statSync(join(sessions, n)).uid).toBe(id("-u", BACKUP));
    expect(rootCalls()).toEqual([]);
  });

  // Issue 17 #7: keel-ops holds /run/keel/<app>.ops.lock from its stop of the engine until the DB is
  // in place; a start (the pre-session backup, as root) waits for it, a stop's backup never does.
  it("waits before a start for the lock keel-ops holds over a restore (exit 3 after the wait), and never after a stop", async () => {
    const lock = `/run/keel/keel-test-${TAG}.ops.lock`;
    // A fresh machine has no /run/keel until keel makes it; the holder below needs it first.
    mkdirSync("/run/keel", { recursive: true, mode: 0o755 });
    const holder = await holdLock(lock, "-x", 30);
    try {
      const pre = run(join(SCRIPTS, "keel-db-session-backup"), ["pre", "--as", `${ENGINE}:${BACKUP}`, "--ops-lock", lock, db, sessions], { env: { KEEL_OPS_LOCK_WAIT: "2" } });
      expect(pre.code).toBe(3);
      expect(pre.stderr).toContain(`keel-ops has held ${lock} (a restore or adopt) for 2 s: the engine does not start meanwhile`);
      expect(finals(sessions)).toEqual([]);
      const post = run(join(SCRIPTS, "keel-db-session-backup"), ["post", "--as", `${ENGINE}:${BACKUP}`, "--ops-lock", lock, db, sessions], { env: { KEEL_OPS_LOCK_WAIT: "2" } });
      expect(post.code, post.stderr).toBe(0);
      expect(finals(sessions)).toHaveLength(1);
    } finally {
      await holder.release();
    }
    const pre = run(join(SCRIPTS, "keel-db-session-backup"), ["pre", "--as", `${ENGINE}:${BACKUP}`, "--ops-lock", lock, db, sessions]);
    expect(pre.code, pre.stderr).toBe(0);
    expect(finals(sessions)).toHaveLength(2);
    rmSync(lock, { force: true });
  });

  // The scheduled backup's --also-check holds the sessions directory's lock while it checks one
  // session backup; a start or stop that came then failed at once ("busy", exit 3), and a failed
  // ExecCondition= left the engine stopped (a CI run's database VM test). Both now wait for it.
  it("waits for the sessions directory's lock that the scheduled backup's check holds, before a start and after a stop", async () => {
    const first = session("pre", "--as", `${ENGINE}:${BACKUP}`, "--history", tree, db, sessions);
    expect(first.code, first.stderr).toBe(0);
    const lock = join(sessions, ".engine.backup.lock");
    expect(statSync(lock).mode & 0o777).toBe(0o600);
    for (const [phase, args] of [["pre", ["--history", tree]], ["post", []]] as const) {
      // As the backup user, as keel-db-backup --also-check takes it (flock on the 0600 lock file).
      const holder = await holdLock(lock, "-x", 4, BACKUP);
      try {
        const started = Date.now();
        const r = session(phase, "--as", `${ENGINE}:${BACKUP}`, ...args, db, sessions);
        expect(r.code, r.stderr).toBe(0);
        expect(Date.now() - started, "it waited for the lock").toBeGreaterThan(2_000);
      } finally {
        await holder.release();
      }
    }
    expect(finals(sessions)).toHaveLength(3);
    // A wait has an end: the lock held past --lock-wait is exit 3, with what held it and nothing kept.
    const holder = await holdLock(lock, "-x", 30, BACKUP);
    try {
      const r = session("post", "--as", `${ENGINE}:${BACKUP}`, "--lock-wait", "1", db, sessions);
      expect(r.code).toBe(3);
      expect(r.stderr).toContain(`another backup of engine into ${sessions} (or the scheduled backup's check of one there) held its lock for 1 s`);
      // Before a start, at most half of what is left of the deadline: "busy" (3), not the deadline's
      // "the DB has grown" (5).
      const pre = session("pre", "--as", `${ENGINE}:${BACKUP}`, "--deadline", "6", "--history", tree, db, sessions);
      expect(pre.code, pre.stderr).toBe(3);
      expect(pre.stderr).toMatch(/held its lock for [1-3] s/);
      expect(finals(sessions)).toHaveLength(3);
    } finally {
      await holder.release();
    }
  });

  // Issue 17 #10: a DB too large for the start timeout. systemd restarts a start that runs into
  // TimeoutStartSec= (Restart=on-failure) but not one whose ExecCondition= fails, so the backup ends
  // itself first (--deadline), with exit 5 and what to raise.
  it("ends a pre-session backup that outlasts its deadline: exit 5, no backup, nothing half-written, what to raise", () => {
    const real = execFileSync("sh", ["-c", "command -v sqlite3"], { encoding: "utf8" }).trim();
    // A DB that takes long to copy: VACUUM INTO sleeps first.
    writeFileSync(join(bin, "sqlite3"), `#!/bin/sh
case "$*" in *"VACUUM INTO"*) sleep 30 ;; esac
exec ${real} "$@"
`, { mode: 0o755 });
    const t0 = Date.now();
    const r = session("pre", "--deadline", "3", "--keep", "5", db, sessions);
    expect(Date.now() - t0).toBeLessThan(20_000);
    expect(r.code).toBe(5);
    expect(r.stderr).toContain(`the pre-session backup of ${db} did not finish within 3 s (0 s of it waiting for keel-ops' lock), so the engine does not start`);
    expect(r.stderr).toContain("pulumi config set keel:startTimeoutMinutes");
    expect(finals(sessions)).toEqual([]);
    expect(readdirSync(live).filter((f) => f.includes("export"))).toEqual([]);
    expect(readdirSync(sessions).filter((f) => f.includes("partial"))).toEqual([]);
  });

  it("takes no post-session backup after a start the pre-session backup refused (systemd runs ExecStopPost= then too)", () => {
    const r = run(join(SCRIPTS, "keel-db-session-backup"), ["post", "--as", `${ENGINE}:${BACKUP}`, db, sessions], { env: { SERVICE_RESULT: "exec-condition" } });
    expect(r).toMatchObject({ code: 0 });
    expect(r.stderr).toContain("the start was refused before the engine ran");
    expect(finals(sessions)).toEqual([]);
    expect(existsSync(join(sessions, "engine.status.json"))).toBe(false);
  });

  it("removes the copy a killed exporter left beside the DB, and only once its process is gone", () => {
    const sleeper = spawn("sleep", ["60"]);
    const live1 = join(live, `.engine.db.export.${sleeper.pid}.AAAAAA`);
    const dead = join(live, ".engine.db.export.999999999.BBBBBB");
    for (const f of [live1, dead]) {
      writeFileSync(f, "x");
      chownSync(f, id("-u", ENGINE), id("-g", ENGINE));
    }
    try {
      expect(backup("--as", `${ENGINE}:${BACKUP}`, db, tree).code).toBe(0);
      expect(existsSync(dead)).toBe(false);
      expect(existsSync(live1)).toBe(true);
    } finally {
      sleeper.kill("SIGKILL");
    }
  });

  it("a first start (no DB, no backup ever) passes with nothing to back up; a DB gone after backups refuses the start: DB missing", () => {
    execFileSync("sh", ["-c", `rm -f ${db} ${db}-wal ${db}-shm`]);
    const first = session("pre", "--as", `${ENGINE}:${BACKUP}`, "--history", tree, db, sessions);
    expect(first).toMatchObject({ code: 0 });
    expect(first.stderr).toContain("no DB at");
    expect(finals(sessions)).toEqual([]);
    makeDb(db, { rows: 3 });
    execFileSync("sh", ["-c", `chown ${ENGINE}:${ENGINE} ${db}*`]);
    expect(backup("--as", `${ENGINE}:${BACKUP}`, db, tree).code).toBe(0);
    execFileSync("sh", ["-c", `rm -f ${db} ${db}-wal ${db}-shm`]);
    const missing = session("pre", "--as", `${ENGINE}:${BACKUP}`, "--history", tree, db, sessions);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("DB missing: restore");
    expect(existsSync(db)).toBe(false);
  });
});
