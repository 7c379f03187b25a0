/**
 * The database's wiring into keel (issue 5, "Wiring into keel"), on this machine's real tools: the
 * rendered backup units and the engine's drop-in against systemd-analyze; the migration's two
 * sides (db-migrate-source.sh on the operator's machine, keel-db-migrate on the host) and the
 * session backups on real SQLite files.
 */
import { spawnSync } from "node:child_process";
import { chmodSync, closeSync, cpSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync, writeSync } from "node:fs";
import { dirname, join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { parseConfig, type KeelConfig } from "../../config";
import { backupServiceName, backupTimerName, dropInPath, PRIVILEGED_BUT_SETUID, renderBackupService, renderBackupTimer, renderSessionDropIn } from "../../plan/database";
import { renderUnit, unitFilePath } from "../../plan/engine";
import type { Tool } from "../../plan/tools";
import { stackConfig } from "../support/stack";
import { exposure, keelUnitPrograms, MAX_BACKUP_EXPOSURE } from "../support/units";
import { fingerprint, listing, makeDb, removeDir, SCRIPTS, sha256, STEP_SCRIPTS, sql, startWriter, tempDir, writerOnce } from "./db-helpers";

function config(stack: string): KeelConfig {
  const { raw, secretKeys } = stackConfig(stack);
  return parseConfig(raw, (k) => secretKeys.includes(k));
}

function run(cmd: string, args: string[], opts: { input?: string; env?: Record<string, string> } = {}) {
  const r = spawnSync(cmd, args, { encoding: "utf8", timeout: 120_000, input: opts.input, env: { ...process.env, ...opts.env } });
  if (r.error) throw r.error;
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function overwrite(file: string, offset: number, bytes: Buffer): void {
  const fd = openSync(file, "r+");
  writeSync(fd, bytes, 0, bytes.length, offset);
  closeSync(fd);
}

/** A DB that fails the gate: its table's root page overwritten. */
function corrupt(db: string): string {
  makeDb(db, { rows: 2000 });
  const root = Number(sql(db, "SELECT rootpage FROM sqlite_schema WHERE name = 't';"));
  overwrite(db, (root - 1) * 4096, Buffer.alloc(4096, 0x5a));
  return db;
}

/** Sets a file's modification time, seconds ago. */
function age(file: string, secondsAgo: number): void {
  const t = Date.now() / 1000 - secondsAgo;
  utimesSync(file, t, t);
}

let dir: string;
beforeEach(() => {
  dir = tempDir("keel-db-wiring-");
});
afterEach(() => removeDir(dir));

describe.each(["prod", "staging"])("the backup units and the engine's drop-in of the %s stack, checked by systemd-analyze", (stack) => {
  const cfg = config(stack);

  /** A root holding the system's units, the engine's unit with keel's drop-in, the backup units, keel's tools and the venv's program. */
  function verifyRoot(without: Tool[] = []): string {
    const root = join(dir, "root");
    cpSync("/usr/lib/systemd/system", join(root, "usr/lib/systemd/system"), { recursive: true });
    const files: Array<[string, string]> = [
      [unitFilePath(cfg), renderUnit(cfg)],
      [dropInPath(cfg), renderSessionDropIn(cfg)],
      [`/etc/systemd/system/${backupServiceName(cfg)}`, renderBackupService(cfg)],
      [`/etc/systemd/system/${backupTimerName(cfg)}`, renderBackupTimer(cfg)],
    ];
    for (const [path, content] of files) {
      mkdirSync(dirname(join(root, path)), { recursive: true });
      writeFileSync(join(root, path), content);
    }
    for (const program of keelUnitPrograms(cfg, without)) {
      mkdirSync(dirname(join(root, program)), { recursive: true });
      writeFileSync(join(root, program), "#!/bin/sh\n");
      chmodSync(join(root, program), 0o755);
    }
    return root;
  }

  it("verify without a warning: the engine with its drop-in, the backup service and its timer", () => {
    const root = verifyRoot();
    const r = run("systemd-analyze", ["verify", `--root=${root}`, "engine.service", backupServiceName(cfg), backupTimerName(cfg)]);
    expect({ code: r.code, out: r.stdout + r.stderr }).toEqual({ code: 0, out: "" });
  });

  it("fail verification when the session-backup tool is missing (what the drop-in step's check catches)", () => {
    const root = verifyRoot(["db-session-backup"]);
    const r = run("systemd-analyze", ["verify", `--root=${root}`, "engine.service"]);
    expect(r.code).not.toBe(0);
    expect(r.stdout + r.stderr).toContain("Command /usr/local/sbin/keel-db-session-backup is not executable");
  });

  it(`rate the backup service's sandbox at most ${MAX_BACKUP_EXPOSURE} offline`, () => {
    const file = join(dir, backupServiceName(cfg));
    writeFileSync(file, renderBackupService(cfg));
    const r = run("systemd-analyze", ["security", "--offline=true", `--threshold=${MAX_BACKUP_EXPOSURE * 10}`, file]);
    const level = exposure(r.stdout + r.stderr);
    console.log(`systemd-analyze security --offline=true ${backupServiceName(cfg)} (${stack}): exposure ${level}`);
    expect(r.code).toBe(0);
    expect(level).toBeLessThanOrEqual(MAX_BACKUP_EXPOSURE);
  });
});

describe("the backup service's system call filter", () => {
  // systemd-analyze's own tables (this machine's systemd): a group's calls, nested groups expanded.
  const expand = (items: readonly string[]): Set<string> => {
    const out = new Set<string>();
    for (const item of items) {
      if (!item.startsWith("@")) {
        out.add(item);
        continue;
      }
      const r = run("systemd-analyze", ["syscall-filter", item]);
      expect(r.code, item).toBe(0);
      const entries = r.stdout.split("\n").slice(1).map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
      for (const c of expand(entries)) out.add(c);
    }
    return out;
  };
  it("denies @privileged and @resources but the set*id calls and capset that setpriv needs", () => {
    const want = expand(["@privileged", "@resources"]);
    for (const c of [...expand(["@setuid"]), "capset"]) want.delete(c);
    expect([...expand(PRIVILEGED_BUT_SETUID)].sort()).toEqual([...want].sort());
  });
});

describe("the new DB scripts", () => {
  it("are shellcheck clean", () => {
    const r = run("shellcheck", ["-x", ...[join(STEP_SCRIPTS, "db-migrate-source.sh"), join(SCRIPTS, "keel-db-migrate"), join(SCRIPTS, "keel-db-session-backup"), join(STEP_SCRIPTS, "upload-file.sh")]]);
    expect({ code: r.code, out: r.stdout + r.stderr }).toEqual({ code: 0, out: "" });
  });
});

const source = (...args: string[]) => run(join(STEP_SCRIPTS, "db-migrate-source.sh"), args);

describe("db-migrate-source.sh (the operator's side)", () => {
  it("prepares a clean source (its -wal folded in) and prints its sha256 and absolute path", () => {
    const db = join(dir, "old engine", "engine.db");
    mkdirSync(dirname(db));
    writerOnce("crash", db, "300");
    const r = source(db);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${sha256(db)}  ${db}\n`);
    expect(r.stderr).toContain("passed the gate");
    expect(existsSync(`${db}-wal`) ? statSync(`${db}-wal`).size : 0).toBe(0);
    expect(sql(db, "SELECT count(*) FROM w;")).toBe("300");
  });

  it("stops at a corrupt source without a fallback: exit 1, the gate's reason, nothing printed, the file untouched", () => {
    const db = corrupt(join(dir, "engine.db"));
    const before = fingerprint(db);
    const r = source(db);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(/integrity_check: /);
    expect(r.stderr).toContain("failed the integrity gate (reason above); it is not carried forward");
    expect(r.stderr).toContain("keel:migrateFallbackDir");
    expect(fingerprint(db)).toEqual(before);
  });

  // Issue 17, item 4: a fallback loses the rows written after it, so it needs the operator's consent.
  it("with a fallback, offers the newest backup that passes the gate and takes it only with its sha256 as consent", () => {
    const db = corrupt(join(dir, "engine.db"));
    const backups = join(dir, "backups");
    mkdirSync(backups);
    const oldest = makeDb(join(backups, "engine-20260101T000000Z.db"), { rows: 10 });
    const middle = makeDb(join(backups, "engine-20260102T000000Z.db"), { rows: 20 });
    const walled = join(backups, "engine-20260103T000000Z.db");
    writerOnce("crash", walled, "30");
    const newest = corrupt(join(backups, "engine-20260104T000000Z.db"));
    writeFileSync(join(backups, "notes.txt"), "not a DB");
    expect(oldest).toBeDefined();
    const asked = source("--fallback-dir", backups, db);
    expect(asked.stderr).toContain(`skipped ${newest}: it fails the gate`);
    expect(asked.stderr).toContain(`skipped ${walled}: a -wal with frames`);
    expect(asked.code).toBe(1);
    expect(asked.stdout).toBe("");
    expect(asked.stderr).toContain(`The newest clean backup of it is ${middle}, taken 2026-01-02 00:00:00 UTC, sha256 ${sha256(middle)}; keel takes a fallback only with your consent`);
    expect(asked.stderr).toContain(`pulumi config set keel:migrateAcceptFallback ${sha256(middle)}, then pulumi up`);
    const other = source("--fallback-dir", backups, "--accept-fallback", "a".repeat(64), db);
    expect(other.code).toBe(1);
    expect(other.stderr).toContain(`(keel:migrateAcceptFallback is ${"a".repeat(64)}, another file)`);
    const r = source("--fallback-dir", backups, "--accept-fallback", sha256(middle), db);
    expect(r.stderr).toContain(`using ${middle} (taken 2026-01-02 00:00:00 UTC, sha256 ${sha256(middle)}) instead of ${db}: keel:migrateAcceptFallback names it`);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${sha256(middle)}  ${middle}\n`);
  });

  it("orders candidates by the time in their names, never by modification time, and takes only the source's backup names", () => {
    const db = corrupt(join(dir, "engine.db"));
    const backups = join(dir, "backups");
    mkdirSync(backups);
    const older = makeDb(join(backups, "engine-20260101T000000Z.db"), { rows: 1 });
    const newer = makeDb(join(backups, "engine-20260102T000000Z.db"), { rows: 2 });
    // The older backup was copied here today: its mtime is the newest. It must not win.
    age(newer, 5000);
    age(older, 0);
    makeDb(join(backups, "engine-latest.db"), { rows: 3 });
    makeDb(join(backups, "other-20260103T000000Z.db"), { rows: 4 });
    makeDb(join(backups, "engine.sqlite"), { rows: 5 });
    const r = source("--fallback-dir", backups, "--accept-fallback", sha256(newer), db);
    expect(r.stderr).toContain("(2 named engine-<UTC time>.db)");
    expect(r.stdout).toBe(`${sha256(newer)}  ${newer}\n`);
  });

  it("does not fall back from a source with a hot journal: it is not damaged, SQLite rolls it back", () => {
    const db = join(dir, "engine.db");
    writerOnce("hot-journal", db);
    const backups = join(dir, "backups");
    mkdirSync(backups);
    const backup = makeDb(join(backups, "engine-20260101T000000Z.db"), { rows: 1 });
    const r = source("--fallback-dir", backups, "--accept-fallback", sha256(backup), db);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain(`${db} has a hot rollback journal (${db}-journal): a transaction on it was interrupted, which SQLite rolls back when the DB is next opened for writing. keel does not fall back to an older backup for that`);
    expect(r.stderr).toContain("PRAGMA quick_check");
  });

  it("fails when no backup passes either: exit 1, nothing carried forward", () => {
    const db = corrupt(join(dir, "engine.db"));
    const backups = join(dir, "backups");
    mkdirSync(backups);
    corrupt(join(backups, "engine-20260101T000000Z.db"));
    const r = source("--fallback-dir", backups, db);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain("no backup of it in");
  });

  it("exits 3 for a source still held open (the engine running), and does not fall back", async () => {
    const db = makeDb(join(dir, "engine.db"), { rows: 5, wal: true });
    const backups = join(dir, "backups");
    mkdirSync(backups);
    makeDb(join(backups, "engine-20260101T000000Z.db"), { rows: 1 });
    const writer = await startWriter("hold", db);
    try {
      const r = source("--fallback-dir", backups, db);
      expect(r.code).toBe(3);
      expect(r.stdout).toBe("");
      expect(r.stderr).toMatch(/in use: held open by \d+ \(python3?\)/);
    } finally {
      writer.kill("SIGKILL");
    }
  });
});

const migrate = (input: string, ...args: string[]) => run(join(SCRIPTS, "keel-db-migrate"), args, { input });

describe("keel-db-migrate (the host's side)", () => {
  let staged: string;
  let live: string;
  const args = () => ["--records", join(dir, "records"), "--owner", "nobody:nogroup", "--unit", "engine.service", staged, live];
  beforeEach(() => {
    mkdirSync(join(dir, "incoming"));
    mkdirSync(join(dir, "state"));
    staged = makeDb(join(dir, "incoming", "engine.db"), { rows: 42 });
    live = join(dir, "state", "engine.db");
  });

  it("adopts the staged copy whose sha256 is the operator's: WAL mode, 0600, the engine's owner, every row, the copy consumed", () => {
    const r = migrate(`${sha256(staged)}  /home/op/engine.db\n`, ...args());
    expect(r.stderr).toContain(`the copy at ${staged} has the sha256 of /home/op/engine.db`);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`migrate: adopted /home/op/engine.db (sha256 ${readSha(r.stderr)}) as ${live}\n`);
    expect(sql(live, "SELECT count(*) FROM t;")).toBe("42");
    expect(sql(live, "PRAGMA journal_mode;")).toBe("wal");
    expect(statSync(live).mode & 0o777).toBe(0o600);
    expect(run("stat", ["-c", "%U:%G", live]).stdout.trim()).toBe("nobody:nogroup");
    expect(existsSync(staged)).toBe(false);
  });

  it("refuses a copy whose sha256 differs (exit 1): nothing adopted, the copy kept", () => {
    const r = migrate(`${"0".repeat(64)}  /home/op/engine.db`, ...args());
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("is not the file that passed the gate on the operator's machine");
    expect(r.stderr).toContain("pulumi up --replace");
    expect(existsSync(live)).toBe(false);
    expect(existsSync(staged)).toBe(true);
  });

  // Issue 17, item 8: a live DB that did not come from this source is not "nothing to do".
  it("fails (exit 1) when the live DB exists but was not adopted from this source: nothing changed, the copy kept, both ways out named", () => {
    makeDb(live, { rows: 7, wal: true });
    const before = fingerprint(live);
    const r = migrate(`${sha256(staged)}  /home/op/engine.db\n`, ...args());
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain(`exists, but it was not adopted from /home/op/engine.db (sha256 ${sha256(staged)}): the engine started before the migration ran`);
    expect(r.stderr).toContain(`sudo keel-ops adopt ${staged} (a verified backup of the live DB is taken first), then pulumi up`);
    expect(r.stderr).toContain("pulumi config rm keel:migrateFrom");
    expect(fingerprint(live)).toEqual(before);
    expect(existsSync(staged)).toBe(true);
  });

  it("passes (exit 0) on a later run once this source was adopted, and changes nothing", () => {
    const sum = sha256(staged);
    expect(migrate(`${sum}  /home/op/engine.db\n`, ...args()).code).toBe(0);
    expect(readFileSync(join(dir, "records", sum), "utf8")).toMatch(new RegExp(`^\\d{4}-\\d\\d-\\d\\dT[\\d:]+Z /home/op/engine\\.db -> ${live}\n$`));
    const before = fingerprint(live);
    const again = migrate(`${sum}  /home/op/engine.db\n`, ...args());
    expect(again.code).toBe(0);
    expect(again.stdout).toBe(`migrate: ${live} already exists, adopted from this source before; nothing changed\n`);
    expect(fingerprint(live)).toEqual(before);
    // Another source is not this one.
    expect(migrate(`${"b".repeat(64)}  /home/op/other.db\n`, ...args()).code).toBe(1);
  });

  it("refuses an input that is not the source step's result (exit 2) and a missing copy (exit 1)", () => {
    expect(migrate("ok\n", ...args()).code).toBe(2);
    rmSync(staged);
    const r = migrate(`${"a".repeat(64)}  /home/op/engine.db\n`, ...args());
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`no uploaded copy at ${staged}`);
  });
});

function readSha(stderr: string): string {
  return /\(([0-9a-f]{64})\)/.exec(stderr)![1];
}

const session = (...args: string[]) => run(join(SCRIPTS, "keel-db-session-backup"), args);

describe("keel-db-session-backup", () => {
  it("before the first start, with no DB yet, backs up nothing and succeeds", () => {
    const r = session("pre", "--keep", "3", join(dir, "engine.db"), join(dir, "sessions"));
    expect(r.code).toBe(0);
    expect(r.stderr).toContain("no DB at");
    expect(existsSync(join(dir, "sessions"))).toBe(false);
  });

  it("takes a verified backup with the given retention, and records it in the status file", () => {
    const db = makeDb(join(dir, "engine.db"), { rows: 9, wal: true });
    for (let i = 0; i < 3; i++) expect(session(i % 2 ? "post" : "pre", "--keep", "2", db, join(dir, "sessions")).code).toBe(0);
    const files = listing(join(dir, "sessions")).filter((f) => /^engine-\d{8}T\d{6}Z\.db$/.test(f));
    expect(files).toHaveLength(2);
    const status = JSON.parse(readFileSync(join(dir, "sessions", "engine.status.json"), "utf8"));
    expect(status).toMatchObject({ result: "ok", keep: 2, count: 2 });
    expect(sql(join(dir, "sessions", files[1]), "SELECT count(*) FROM t;")).toBe("9");
  });

  it("fails a pre-session backup it cannot take, saying the engine does not start", () => {
    const db = makeDb(join(dir, "engine.db"), { rows: 3 });
    writeFileSync(join(dir, "sessions"), "a file where the directory should be");
    const r = session("pre", db, join(dir, "sessions"));
    expect(r.code).not.toBe(0);
    expect(r.code).toBeLessThan(255); // ExecCondition: 1-254 skip the start; 255 would count as a failure and restart
    expect(r.stderr).toContain("the engine does not start without one");
  });

  // Issue 17, item 1: a DB that had backups and is gone is not a first start.
  it("refuses a start without the DB when it had backups (in DIR or a --history directory): DB missing, restore", () => {
    const backups = join(dir, "backups");
    mkdirSync(backups);
    const db = makeDb(join(dir, "engine.db"), { rows: 5 });
    expect(run(join(SCRIPTS, "keel-db-backup"), [db, backups]).code).toBe(0);
    rmSync(db);
    for (const args of [["--history", backups], ["--history", join(dir, "elsewhere"), "--history", backups]]) {
      const r = session("pre", "--keep", "3", ...args, db, join(dir, "sessions"));
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`DB missing: restore. There is no DB at ${db}, but it had backups (${join(backups, "engine.status.json")})`);
      expect(r.stderr).toContain("sudo keel-ops restore latest");
      expect(existsSync(db)).toBe(false);
    }
    // A backup in the sessions directory itself counts too, status file or not.
    mkdirSync(join(dir, "sessions"));
    writeFileSync(join(dir, "sessions", "engine-20261201T000000Z.db"), "x");
    expect(session("pre", db, join(dir, "sessions")).code).toBe(1);
    // post (after a stop) with no DB has nothing to back up: not its call to refuse a start.
    expect(session("post", db, join(dir, "sessions")).code).toBe(0);
  });

  it("after the clock stepped back, neither refuses nor waits: names the backup one second after the newest", () => {
    const db = makeDb(join(dir, "engine.db"), { rows: 4 });
    mkdirSync(join(dir, "sessions"));
    const ahead = new Date(Date.now() + 3 * 86400_000).toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
    cpSync(db, join(dir, "sessions", `engine-${ahead}.db`));
    for (const phase of ["pre", "post"]) {
      const r = session(phase, "--keep", "1", db, join(dir, "sessions"));
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toContain("this one is named");
    }
    const names = listing(join(dir, "sessions")).filter((f) => /^engine-\d{8}T\d{6}Z\.db$/.test(f));
    expect(names).toHaveLength(1);
    expect(names[0] > `engine-${ahead}.db`).toBe(true);
    expect(sql(join(dir, "sessions", names[0]), "SELECT count(*) FROM t;")).toBe("4");
  });

  it("rejects bad usage with exit 2", () => {
    expect(session("during", "a", "b").code).toBe(2);
    expect(session("pre", "a").code).toBe(2);
  });
});

