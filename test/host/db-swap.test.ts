// Issue 17, items 2 and 7: a restore swaps the live DB for a backup. Killed at each step of the swap
// (a PATH wrapper around mv SIGKILLs the script just before its Nth rename), the DB must never be
// left startable without its -wal: the engine's start gate refuses while the swap's marker is there,
// and `keel-db-gate recover` rolls the swap back (the previous DB with every committed row) or finds
// it finished. The swap holds a lock the start gate waits on. Real sqlite3, real scripts.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type Run, SCRIPTS, makeDb, removeDir, sql, tempDir, writerOnce } from "./db-helpers";

const OLD_ROWS = 120;
const BACKUP_ROWS = 7;

let dir: string;
let live: string;
let db: string;
let backup: string;
let bin: string;

beforeEach(() => {
  dir = tempDir("keel-db-swap-");
  live = join(dir, "live");
  mkdirSync(live, { mode: 0o700 });
  db = join(live, "engine.db");
  // The live DB as a crashed engine leaves it: its last commits only in the -wal.
  writerOnce("crash", db, String(OLD_ROWS));
  backup = makeDb(join(dir, "engine-20261201T031700Z.db"), { rows: BACKUP_ROWS });
  bin = join(dir, "bin");
  mkdirSync(bin);
});
afterEach(() => removeDir(dir));

function run(file: string, args: string[], env: Record<string, string> = {}): Run {
  const r = spawnSync(file, args, { encoding: "utf8", timeout: 120_000, env: { PATH: `${bin}:/usr/sbin:/usr/bin:/sbin:/bin`, HOME: "/root", ...env } });
  if (r.error) throw r.error;
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** mv, except that its Nth call in the DB's directory sends `signal` to the script that called it instead. */
function killAtRename(n: number, signal = "KILL"): void {
  const counter = join(dir, "renames");
  writeFileSync(counter, "");
  writeFileSync(
    join(bin, "mv"),
    [
      "#!/bin/sh",
      'for a in "$@"; do last=$a; done',
      `case $last in ${live}/*) echo x >>${counter} ;; esac`,
      `if [ "$(wc -l <${counter})" -eq ${n} ] && case $last in ${live}/*) true ;; *) false ;; esac; then kill -${signal} $PPID; exit 1; fi`,
      'exec /usr/bin/mv "$@"',
      "",
    ].join("\n"),
    { mode: 0o755 },
  );
}

const restore = () => run(join(SCRIPTS, "keel-db-restore"), [backup, db]);
const startGate = () => run(join(SCRIPTS, "keel-db-session-backup"), ["pre", db, join(dir, "sessions")]);
const recover = () => run(join(SCRIPTS, "keel-db-gate"), ["recover", db]);
/** Rows in the DB's one table (w: the old DB's, t: the backup's), read-only; -1 without either. */
function rows(): number {
  const ro = `file:${db}?mode=ro`;
  const table = sql(ro, "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('w', 't');");
  return table ? Number(sql(ro, `SELECT count(*) FROM ${table};`)) : -1;
}

describe("a restore killed at each rename of its swap", () => {
  // Renames in the DB's directory: 1 the marker into place, 2 the DB aside, 3 its -wal, 4 its
  // -shm, 5 the restored copy to the DB's name.
  // SIGKILL runs no cleanup; SIGTERM and SIGHUP (a session that ends) run the scripts' traps, which
  // must not delete the copy the marker names once the previous DB moved aside.
  it.each([
    [1, "KILL"], [2, "KILL"], [3, "KILL"], [4, "KILL"], [5, "KILL"],
    [2, "TERM"], [3, "HUP"], [5, "TERM"],
  ])("killed before rename %i (SIG%s): the start gate refuses a half swap, recover puts back the old DB with every row", (n, signal) => {
    killAtRename(n as number, signal as string);
    const killed = restore();
    expect(killed.code).not.toBe(0);
    if (signal !== "KILL" && n > 1) expect(killed.stderr).toContain(`interrupted by SIG${signal} while it swapped ${db}`);
    if (n === 1) {
      // Killed before the marker existed: nothing was moved, the DB is whole.
      expect(existsSync(join(live, ".engine.db.swap"))).toBe(false);
    } else {
      expect(existsSync(join(live, ".engine.db.swap"))).toBe(true);
      const gate = startGate();
      expect(gate.code).toBe(1);
      expect(gate.stderr).toContain(`a restore or adopt of ${db} was interrupted while it swapped the DB`);
      expect(gate.stderr).toContain("sudo keel-ops recover");
    }
    const r = recover();
    expect([r.code, r.stdout]).toEqual([0, "ok\n"]);
    if (n > 1) expect(r.stderr).toContain(`was rolled back: ${db} is the DB it was before, with its -wal`);
    expect(existsSync(join(live, ".engine.db.swap"))).toBe(false);
    expect(readdirSync(live).filter((f) => f.includes("pre-restore"))).toEqual([]);
    // The prepared copy is removed by the roll-back; one killed before the swap began is litter
    // (a dot file the next restore does not trip over), never a DB.
    if (n > 1) expect(readdirSync(live).filter((f) => f.includes(".restore."))).toEqual([]);
    expect(rows()).toBe(OLD_ROWS);
    expect(startGate().code).toBe(0);
  });

  it("not killed: the backup is in place, the old DB aside with its -wal, no marker left, the gate lets the engine start", () => {
    const r = restore();
    expect([r.code, r.stdout]).toEqual([0, "ok\n"]);
    expect(rows()).toBe(BACKUP_ROWS);
    expect(existsSync(join(live, ".engine.db.swap"))).toBe(false);
    const aside = readdirSync(live).filter((f) => /^engine\.db\.pre-restore-\d{8}T\d{6}Z$/.test(f));
    expect(aside).toHaveLength(1);
    expect(existsSync(join(live, `${aside[0]}-wal`))).toBe(true);
    expect(Number(sql(join(live, aside[0]), "SELECT count(*) FROM w;"))).toBe(OLD_ROWS);
    expect(startGate().code).toBe(0);
  });

  it("killed after the last rename: recover finds the swap finished and says so", () => {
    // Stand-in for a kill between the final rename and the marker's removal: a marker naming a
    // temporary file that no longer exists, after a complete restore.
    expect(restore().code).toBe(0);
    writeFileSync(join(live, ".engine.db.swap"), `tmp=${join(live, ".engine.db.restore.Gone12")}\naside=\n`);
    expect(startGate().code).toBe(1);
    const r = recover();
    expect(r.code).toBe(0);
    expect(r.stderr).toContain(`was completed: ${db} is the new DB`);
    expect(rows()).toBe(BACKUP_ROWS);
    expect(startGate().code).toBe(0);
  });

  it("refuses a marker that names files outside the DB's directory or other names (exit 5), moving nothing", () => {
    const crafted = [
      [`tmp=/etc/passwd\naside=`, "which is not a temporary file of keel's beside"],
      [`tmp=${live}/..\naside=`, "which is not a temporary file of keel's beside"],
      [`tmp=${live}/.engine.db.restore.AbC123/../../x\naside=`, "which is not a temporary file of keel's beside"],
      [`tmp=${live}/.engine.db.restore.AbC123\naside=${db}.pre-x/../../../../etc/cron.d/job-1T1Z`, "which is not an aside name of"],
      [`tmp=${live}/.engine.db.restore.AbC123\naside=/etc/shadow`, "which is not an aside name of"],
    ];
    for (const [marker, message] of crafted) {
      writeFileSync(join(live, ".engine.db.swap"), `${marker}\n`);
      const r = recover();
      expect(r.code, marker).toBe(5);
      expect(r.stderr, marker).toContain(message);
    }
    expect(existsSync("/etc/passwd")).toBe(true);
    expect(rows()).toBe(OLD_ROWS);
  });

  it("rolls back, never calls it finished, when the copy is gone and no file has the DB's name (a cleanup that ran too early)", () => {
    const aside = `${db}.pre-restore-20261201T000000Z`;
    for (const ext of ["", "-wal", "-shm"]) renameSync(`${db}${ext}`, `${aside}${ext}`);
    writeFileSync(join(live, ".engine.db.swap"), `tmp=${join(live, ".engine.db.restore.Gone12")}\naside=${aside}\n`);
    // No DB, its copy gone, the previous DB aside: it is put back, not called "the new DB".
    const r = recover();
    expect(r.code).toBe(0);
    expect(r.stderr).toContain("was rolled back");
    expect(rows()).toBe(OLD_ROWS);
  });
});

describe("the swap lock", () => {
  it("makes the start gate wait for a swap in progress, then go on", async () => {
    const released = join(dir, "released");
    const holder = spawn("flock", [join(live, ".engine.db.swap.lock"), "sh", "-c", `sleep 3; touch ${released}`], { stdio: "ignore" });
    const holderDone = new Promise((r) => holder.on("exit", r));
    await new Promise((r) => setTimeout(r, 500));
    const gate = await new Promise<{ code: number | null; releasedFirst: boolean }>((resolve) => {
      const child = spawn(join(SCRIPTS, "keel-db-session-backup"), ["pre", db, join(dir, "sessions")], { stdio: "ignore", env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", HOME: "/root" } });
      child.on("exit", (code) => resolve({ code, releasedFirst: existsSync(released) }));
    });
    await holderDone;
    expect(gate).toEqual({ code: 0, releasedFirst: true });
  });
});
