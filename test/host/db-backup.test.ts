/**
 * scripts/host/keel-db-backup on real files (issue 5): an online backup while a writer commits, a kill
 * midway, retention, a full disk, and the status file the health report reads.
 */
import { ChildProcess, spawn, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { exited, fingerprint, gate, makeDb, mount, removeDir, script, SCRIPTS, sha256, sql, startWriter, tempDir } from "./db-helpers";

const FINAL = /^app-\d{8}T\d{6}Z\.db$/;
const finals = (dir: string) => readdirSync(dir).filter((f) => FINAL.test(f)).sort();
const status = (dir: string) => JSON.parse(readFileSync(join(dir, "app.status.json"), "utf8"));
const backup = (...args: string[]) => script("backup", args);
const BACKUP_ARGV = [join(SCRIPTS, "keel-db-backup")];
/** A backup run that must succeed; returns DIR (the last argument), for status(). */
function backupOk(...args: string[]): string {
  const r = backup(...args);
  expect(r.code, r.stderr).toBe(0);
  return args[args.length - 1];
}

let dir: string;
let out: string;
beforeEach(() => {
  dir = tempDir();
  out = join(dir, "backups");
});
afterEach(() => removeDir(dir));

/** Committed ids from db-writer.py's log; only complete lines count. */
function committedIds(log: string): number[] {
  const text = existsSync(log) ? readFileSync(log, "utf8") : "";
  return text.slice(0, text.lastIndexOf("\n") + 1).split("\n").filter(Boolean).map(Number);
}

describe("keel-db-backup", () => {
  it("makes a verified, fsynced, final-named copy, prints its path and records it in the status file", () => {
    const db = makeDb(join(dir, "app.db"), { rows: 1000, wal: true });
    const before = fingerprint(db);
    const r = backup(db, out);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const [name] = finals(out);
    expect(r.stdout).toBe(`${join(out, name)}\n`);
    expect(statSync(join(out, name)).mode & 0o7777).toBe(0o600);
    expect(statSync(out).mode & 0o7777).toBe(0o700);
    expect(gate("verify", join(out, name)).code).toBe(0);
    expect(sql(join(out, name), "SELECT count(*) FROM t;")).toBe("1000");
    expect(fingerprint(db)["db"]).toBe(before["db"]);

    const s = status(out);
    expect(s).toMatchObject({ version: 1, db, result: "ok", exit_code: 0, file: join(out, name), reason: "", keep: 14, count: 1 });
    expect(s.size).toBe(statSync(join(out, name)).size);
    expect(s.sha256).toBe(sha256(join(out, name)));
    expect(s.time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    expect(name).toBe(`app-${s.time.replace(/[-:]/g, "")}.db`);
    expect(readdirSync(out).filter((f) => f.includes(".partial."))).toEqual([]);
  });

  it("writes the status file as JSON a reader parses, whatever the DB's path holds; no terminal escape gets through", () => {
    // Quotes, a backslash, a tab, non-ASCII, and an ANSI escape and a C1 CSI, which a reader that
    // prints a decoded field (jq -r) would pass to the terminal.
    const odd = join(dir, 'a "quoted"\\dir\twith été \u001b[31mred\u009b0m');
    mkdirSync(odd);
    const db = makeDb(join(odd, "app.db"), { rows: 10, wal: true });
    backupOk(db, out);
    const text = readFileSync(join(out, "app.status.json"), "utf8");
    expect(text).toMatch(/^[\x20-\x7e]*\n$/); // one line of ASCII: Python's encoder escapes the rest
    expect(JSON.parse(text)).toMatchObject({ db: db.replace(/[\u001b\u009b]/g, ""), result: "ok", kept_failed: [] });
  });

  it("copies a live DB while a writer commits: the copy verifies, holds every row committed before it began, and the writer never fails", async () => {
    const db = makeDb(join(dir, "app.db"), { rows: 200_000, blob: 200, wal: true }); // ~50 MB: the copy takes a while
    const log = join(dir, "committed.log");
    const writer = await startWriter("loop", db, log, "60");
    try {
      for (let i = 0; i < 400 && committedIds(log).length < 200; i++) await new Promise((r) => setTimeout(r, 25));
      const before = committedIds(log);
      expect(before.length).toBeGreaterThanOrEqual(200);

      const r = backup(db, out);
      const during = committedIds(log).length - before.length;
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      writer.kill("SIGTERM");
      const w = await exited(writer);
      const summary = JSON.parse(w.stdout.trim().split("\n").pop()!);
      expect(summary.errors, summary.first_error ?? "").toBe(0);
      expect(w.code).toBe(0);
      expect(during).toBeGreaterThan(0); // the writer really was committing while the copy was made

      const copy = r.stdout.trim();
      expect(gate("verify", copy).code).toBe(0);
      const ids = new Set(sql(copy, "SELECT id FROM w;").split("\n").map(Number));
      expect(before.filter((id) => !ids.has(id))).toEqual([]);
      expect(gate("verify", db).code).toBe(0);
    } finally {
      writer.kill("SIGKILL");
    }
  }, 120_000);

  describe("killed midway", () => {
    let child: ChildProcess | undefined;
    afterEach(() => {
      if (child?.pid && child.exitCode === null && child.signalCode === null) process.kill(-child.pid, "SIGKILL");
    });

    /** Starts a backup in its own process group; resolves once its temporary copy is being written. */
    async function backupUnderway(db: string): Promise<ChildProcess> {
      child = spawn(join(SCRIPTS, "keel-db-backup"), [db, out], { detached: true, stdio: ["ignore", "pipe", "pipe"] });
      for (let i = 0; i < 2000; i++) {
        const partial = existsSync(out) ? readdirSync(out).find((f) => f.includes(".partial.") && !f.endsWith("-journal")) : undefined;
        if (partial && statSync(join(out, partial)).size > 0) return child;
        if (child.exitCode !== null) throw new Error("the backup finished before it could be killed");
        await new Promise((r) => setTimeout(r, 5));
      }
      throw new Error("the backup never started writing");
    }

    it("by SIGKILL leaves no final-named file, and the next run cleans up and succeeds", async () => {
      const db = makeDb(join(dir, "app.db"), { rows: 400_000, blob: 400, wal: true }); // ~180 MB
      const before = fingerprint(db)["db"];
      const c = await backupUnderway(db);
      process.kill(-c.pid!, "SIGKILL");
      await exited(c);
      expect(finals(out)).toEqual([]);
      expect(existsSync(join(out, "app.status.json"))).toBe(false);

      const again = backup(db, out);
      expect(again.code).toBe(0);
      expect(finals(out)).toHaveLength(1);
      expect(readdirSync(out).filter((f) => f.includes(".partial."))).toEqual([]);
      expect(fingerprint(db)["db"]).toBe(before);
    }, 120_000);

    it("by SIGTERM exits non-zero, says so in the status file and leaves neither a final-named nor a temporary file", async () => {
      const db = makeDb(join(dir, "app.db"), { rows: 400_000, blob: 400, wal: true });
      const c = await backupUnderway(db);
      let stderr = "";
      c.stderr!.on("data", (d) => (stderr += d));
      process.kill(-c.pid!, "SIGTERM");
      const { code } = await exited(c);
      expect(code).toBe(5);
      expect(stderr).toMatch(/interrupted by SIGTERM/);
      expect(finals(out)).toEqual([]);
      expect(readdirSync(out).filter((f) => f.includes(".partial."))).toEqual([]);
      expect(status(out)).toMatchObject({ result: "failed", exit_code: 5, file: null, size: null, sha256: null });
      expect(status(out).reason).toMatch(/interrupted by SIGTERM/);
    }, 120_000);
  });

  it("keeps exactly the newest N backups of this DB and touches nothing else", () => {
    const db = makeDb(join(dir, "app.db"));
    mkdirSync(out);
    const old = ["app-20250101T000000Z.db", "app-20250102T000000Z.db", "app-20250103T000000Z.db", "app-20250104T000000Z.db"];
    const others = ["other-20240101T000000Z.db", "app-notes.txt", "app-2025.db"];
    for (const f of [...old, ...others]) writeFileSync(join(out, f), f);

    const r = backup("--keep", "3", db, out);
    expect(r.code).toBe(0);
    expect(finals(out)).toEqual(["app-20250103T000000Z.db", "app-20250104T000000Z.db", r.stdout.trim().split("/").pop()]);
    for (const f of others) expect(readFileSync(join(out, f), "utf8")).toBe(f);
    expect(status(out)).toMatchObject({ keep: 3, count: 3 });

    const env = script("backup", [db, out], { KEEL_DB_BACKUP_KEEP: "2" });
    expect(env.code).toBe(0);
    expect(finals(out)).toHaveLength(2);
    expect(finals(out)).toContain(env.stdout.trim().split("/").pop());
  });

  it("records each kept backup's sha256 and checks one older backup per run in turn: a changed or damaged one is reported, the run stays ok", () => {
    const db = makeDb(join(dir, "app.db"), { rows: 500, wal: true });
    const manifest = () =>
      Object.fromEntries(readFileSync(join(out, "app.sha256"), "utf8").trim().split("\n").map((l) => [l.slice(66), l.slice(0, 64)]));
    expect(backup(db, out).code).toBe(0);
    expect(status(out).kept_check).toEqual({ file: null, result: "none", reason: "no older backup to check" });
    for (let i = 0; i < 2; i++) expect(backup(db, out)).toMatchObject({ code: 0, stderr: "" });
    const names = finals(out);
    expect(names).toHaveLength(3);
    // The record holds exactly the kept backups, each with what it holds.
    expect(manifest()).toEqual(Object.fromEntries(names.map((n) => [n, sha256(join(out, n))])));
    // Run 2 checked the first, run 3 the next one after it.
    expect(status(out).kept_check).toEqual({ file: join(out, names[1]), result: "ok", reason: "sha256 as recorded, integrity ok" });
    expect(readFileSync(join(out, ".app.checked"), "utf8")).toBe(`${names[1]}\n`);

    // After the newest was checked, the turn goes back to the oldest: change a byte of it (its size stays).
    writeFileSync(join(out, ".app.checked"), `${names[2]}\n`);
    const oldest = join(out, names[0]);
    const bytes = readFileSync(oldest);
    bytes[bytes.length - 100] ^= 0xff;
    writeFileSync(oldest, bytes);
    const r = backup(db, out);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain(`the kept backup ${oldest} failed its check: its sha256 is ${sha256(oldest)}, not the ${manifest()[names[0]]} recorded when it was written: it changed on disk`);
    expect(status(out)).toMatchObject({ result: "ok", kept_check: { file: oldest, result: "failed" } });
    // The record keeps what the backup held when it was written, not what it holds now.
    expect(manifest()[names[0]]).not.toBe(sha256(oldest));

    // A backup with no record (written before keel kept one): the gate decides, then it is recorded.
    writeFileSync(join(out, "app.sha256"), "");
    writeFileSync(join(out, ".app.checked"), `${names[0]}\n`);
    expect(backup(db, out)).toMatchObject({ code: 0, stderr: "" });
    expect(status(out).kept_check).toEqual({ file: join(out, names[1]), result: "ok", reason: "sha256 integrity ok" });
    expect(manifest()[names[1]]).toBe(sha256(join(out, names[1])));
    // A damaged one with no record fails the integrity gate.
    const second = join(out, names[2]);
    writeFileSync(second, Buffer.concat([readFileSync(second).subarray(0, 100), Buffer.alloc(4096, 0x41)]));
    const damaged = backup(db, out);
    expect(damaged.code).toBe(0);
    expect(status(out).kept_check).toMatchObject({ file: second, result: "failed", reason: expect.stringMatching(/^it fails the integrity gate: /) });
  }, 120_000);

  // Issue 17 #5: the session backups check no older one (they sit on the engine's start and stop), so
  // the scheduled run checks one of theirs in turn as well.
  it("checks one session backup per scheduled run in turn (--also-check): a changed one is listed until it is gone; a session backup running skips it", () => {
    const db = makeDb(join(dir, "app.db"), { rows: 300, wal: true });
    const sessions = join(dir, "sessions");
    for (let i = 0; i < 2; i++) expect(backup("--name-after-newest", db, sessions).code).toBe(0);
    const names = finals(sessions);
    expect(status(sessions).kept_check.reason).toContain("the scheduled backup checks them in turn");
    expect(backup("--also-check", sessions, db, out)).toMatchObject({ code: 0, stderr: "" });
    expect(status(out)).toMatchObject({ also_check: { dir: sessions, file: join(sessions, names[0]), result: "ok" }, also_failed: [] });
    // The next run takes the next one: change a byte of it first (its size stays).
    const second = join(sessions, names[1]);
    const bytes = readFileSync(second);
    bytes[bytes.length - 100] ^= 0xff;
    writeFileSync(second, bytes);
    const r = backup("--also-check", sessions, db, out);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain(`the kept backup ${second} failed its check: its sha256 is ${sha256(second)}`);
    expect(status(out)).toMatchObject({ result: "ok", also_check: { file: second, result: "failed" }, also_failed: [names[1]] });
    // It stays listed on later runs (health reads it) while it is there; the session runs list it too.
    expect(status(backupOk("--also-check", sessions, db, out))).toMatchObject({ also_failed: [names[1]] });
    expect(backup("--name-after-newest", db, sessions).code).toBe(0);
    expect(status(sessions).kept_failed).toEqual([names[1]]);
    rmSync(second);
    expect(status(backupOk("--also-check", sessions, db, out))).toMatchObject({ also_failed: [] });
    // A session backup holding the sessions' lock: this run skips the check and says so.
    const holder = spawnSync("flock", ["-n", join(sessions, ".app.backup.lock"), ...BACKUP_ARGV, "--also-check", sessions, db, out], { encoding: "utf8" });
    expect(holder.status).toBe(0);
    expect(JSON.parse(readFileSync(join(out, "app.status.json"), "utf8"))).toMatchObject({
      also_check: { file: null, result: "none", reason: `a session backup held ${sessions} at the time; the next run checks it` },
    });
  }, 120_000);

  it("carries a failed check over from an older keel's status, which kept no list of failed checks", () => {
    const db = makeDb(join(dir, "app.db"), { rows: 50 });
    for (let i = 0; i < 3; i++) expect(backup(db, out).code).toBe(0);
    const [first] = finals(out);
    // What the keel before .app.failed-checks left: the last run's failed check in the status alone.
    rmSync(join(out, ".app.failed-checks"));
    const old = status(out);
    writeFileSync(join(out, "app.status.json"), JSON.stringify({ ...old, kept_check: { file: join(out, first), result: "failed", reason: "it changed on disk" }, kept_failed: undefined }) + "\n");
    writeFileSync(join(out, ".app.checked"), `${first}\n`);
    expect(backup(db, out).code).toBe(0);
    expect(status(out).kept_failed).toEqual([first]);
    expect(readFileSync(join(out, ".app.failed-checks"), "utf8")).toBe(`${first}\n`);
  });

  it("gives two backups within one second distinct names", () => {
    const db = makeDb(join(dir, "app.db"));
    expect(backup(db, out).code).toBe(0);
    expect(backup(db, out).code).toBe(0);
    expect(finals(out)).toHaveLength(2);
  });

  it("rejects a retention that is not a whole number >= 1", () => {
    const db = makeDb(join(dir, "app.db"));
    for (const keep of ["0", "-1", "x"]) expect(backup("--keep", keep, db, out).code).toBe(2);
    expect(script("backup", [db, out], { KEEL_DB_BACKUP_KEEP: "zero" }).code).toBe(2);
  });

  it("refuses to run beside another backup of the same DB into the same directory (exit 3)", async () => {
    const db = makeDb(join(dir, "app.db"));
    mkdirSync(out);
    const holder = spawn("flock", [join(out, ".app.backup.lock"), "sleep", "30"], { stdio: "ignore" });
    try {
      for (let i = 0; i < 200; i++) {
        const probe = spawnSync("flock", ["-n", join(out, ".app.backup.lock"), "true"]);
        if (probe.status !== 0) break;
        await new Promise((r) => setTimeout(r, 10));
      }
      const r = backup(db, out);
      expect(r.code).toBe(3);
      expect(r.stderr).toMatch(/another backup of app into .* is running/);
      expect(finals(out)).toEqual([]);
    } finally {
      holder.kill("SIGKILL");
    }
  });

  it("fails a damaged live DB with exit 1, records why, and leaves no final-named file", () => {
    const db = makeDb(join(dir, "app.db"), { rows: 300 });
    sql(db, "PRAGMA writable_schema=ON; UPDATE sqlite_schema SET sql = 'CREATE INDEX t_k ON t(v)' WHERE name = 't_k';");
    const before = fingerprint(db);
    const r = backup(db, out);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/integrity_check: row \d+ missing from index t_k/);
    expect(finals(out)).toEqual([]);
    expect(readdirSync(out).filter((f) => f.includes(".partial."))).toEqual([]);
    expect(status(out)).toMatchObject({ result: "failed", exit_code: 1, file: null });
    expect(status(out).reason).toMatch(/missing from index t_k/);
    expect(fingerprint(db)).toEqual(before);
  });

  it("fails visibly on a full disk: exit 5, the reason in the status file, no final-named file, the live DB intact", () => {
    const db = makeDb(join(dir, "app.db"), { rows: 4000, blob: 1000, wal: true }); // ~4.5 MB of random bytes
    const before = fingerprint(db)["db"];
    mkdirSync(out);
    const umount = mount(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", out], out);
    try {
      writeFileSync(join(out, "app-20250101T000000Z.db"), "an older backup");
      const r = backup(db, out);
      expect(r.code).toBe(5);
      expect(r.stderr).toMatch(/writing the copy failed: .* is full/);
      expect(finals(out)).toEqual(["app-20250101T000000Z.db"]);
      expect(readFileSync(join(out, "app-20250101T000000Z.db"), "utf8")).toBe("an older backup");
      expect(readdirSync(out).filter((f) => f.includes(".partial."))).toEqual([]);
      expect(status(out)).toMatchObject({ result: "failed", exit_code: 5, file: null, sha256: null });
      expect(status(out).reason).toMatch(/is full/);
    } finally {
      umount();
    }
    expect(fingerprint(db)["db"]).toBe(before);
    expect(gate("verify", db).code).toBe(0);
    expect(sql(db, "SELECT count(*) FROM t;")).toBe("4000");
  });

  it("refuses a DB that does not exist (exit 1) and records it", () => {
    const r = backup(join(dir, "app.db"), out);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/no such DB file/);
    expect(status(out)).toMatchObject({ result: "failed", exit_code: 1 });
  });

  it("keeps backups of a DB named without an extension apart from the status file", () => {
    const db = join(dir, "engine");
    copyFileSync(makeDb(join(dir, "x.db")), db);
    const r = backup(db, out);
    expect(r.code).toBe(0);
    expect(readdirSync(out).filter((f) => /^engine-\d{8}T\d{6}Z\.db$/.test(f))).toHaveLength(1);
    expect(existsSync(join(out, "engine.status.json"))).toBe(true);
  });

  // Issue 17, item 3: the clock stepped back (it ran ahead, then NTP corrected it). The state that
  // leaves is a backup named in the future; it stands in for the fake clock.
  describe("after the clock stepped back", () => {
    const stamp = (offsetSeconds: number) => new Date(Date.now() + offsetSeconds * 1000).toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");

    it("refuses (exit 5) and records it when the newest backup is dated well after the clock: nothing written, nothing pruned", () => {
      const db = makeDb(join(dir, "app.db"), { rows: 10 });
      expect(backup("--keep", "1", db, out).code).toBe(0);
      const future = `app-${stamp(3 * 86400)}.db`;
      copyFileSync(join(out, finals(out)[0]), join(out, future));
      const before = finals(out);
      const r = backup("--keep", "1", db, out);
      expect(r.code).toBe(5);
      expect(r.stderr).toMatch(new RegExp(`the newest backup in ${out} is dated ${future.slice(4, -3)}, \\d+ s after this clock .*: the clock went back, or that file is dated in the future; nothing was written`));
      expect(finals(out)).toEqual(before);
      expect(status(out)).toMatchObject({ result: "failed", exit_code: 5, file: null, reason: expect.stringContaining("the clock went back") });
    });

    it("waits for a clock less than two minutes behind, and keeps the backup it writes (never pruned at once)", () => {
      const db = makeDb(join(dir, "app.db"), { rows: 10 });
      mkdirSync(out, { mode: 0o700 });
      const ahead = `app-${stamp(4)}.db`;
      copyFileSync(makeDb(join(dir, "other.db"), { rows: 3 }), join(out, ahead));
      const r = backup("--keep", "1", db, out);
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      const written = r.stdout.trim().split("/").at(-1)!;
      expect(written > ahead).toBe(true);
      expect(finals(out)).toEqual([written]);
      expect(status(out)).toMatchObject({ result: "ok", file: join(out, written) });
    });
  });

  // Issue 17, item 6: sync(1) reports the disk's error (EIO); it must not fall back to a global sync.
  it("fails (exit 5) when fsync fails: no file under a final name, the status says why", () => {
    const db = makeDb(join(dir, "app.db"), { rows: 10 });
    const bin = join(dir, "bin");
    mkdirSync(bin);
    writeFileSync(join(bin, "sync"), '#!/bin/sh\n[ "$1" = --version ] && exec /usr/bin/sync --version\n[ $# -eq 0 ] && exit 0\necho "sync: error syncing \'$2\': Input/output error" >&2\nexit 1\n', { mode: 0o755 });
    const r = script("backup", [db, out], { PATH: `${bin}:${process.env.PATH}` });
    expect(r.code).toBe(5);
    expect(r.stderr).toContain("fsync of ");
    expect(r.stderr).toContain("Input/output error");
    expect(finals(out)).toEqual([]);
    expect(readdirSync(out).filter((f) => f.includes(".partial."))).toEqual([]);
    expect(status(out)).toMatchObject({ result: "failed", exit_code: 5, file: null, reason: expect.stringContaining("Input/output error") });
  });

  // Issue 17, item 9: on a full backup disk, lowering the retention and taking a backup frees
  // nothing (pruning ran only after a new backup succeeded). --prune-only (keel-ops prune) does.
  describe("--prune-only", () => {
    it("frees a full backup disk without taking a backup, so the next backup fits (RUNBOOK \"Disk full\")", () => {
      const db = makeDb(join(dir, "app.db"), { rows: 800, blob: 1000 }); // ~0.9 MB
      mkdirSync(out);
      const umount = mount(["mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs", out], out);
      try {
        let last = 0;
        for (let i = 0; i < 6 && last === 0; i++) last = backup("--keep", "10", db, out).code ?? -1;
        expect(last).toBe(5);
        const full = finals(out);
        expect(full.length).toBeGreaterThanOrEqual(2);
        // What the runbook used to say: fewer backups, then a backup. It cannot start for lack of room.
        expect(backup("--keep", "1", db, out).code).toBe(5);
        expect(finals(out)).toEqual(full);
        const pruned = backup("--prune-only", "--keep", "1", db, out);
        expect(pruned.stderr).not.toContain("what to do");
        expect(pruned.code).toBe(0);
        expect(pruned.stdout).toMatch(new RegExp(`^pruned ${out}: removed ${full.length - 1} backup\\(s\\), freed \\d+ bytes; kept 1, the newest verified ${join(out, full.at(-1)!)}\n$`));
        expect(finals(out)).toEqual([full.at(-1)]);
        expect(status(out)).toMatchObject({ result: "failed" }); // the last run's record stays the last run's
        expect(backup("--keep", "1", db, out).code).toBe(0);
      } finally {
        umount();
      }
    });

    it("keeps the newest backup that passes the gate besides the newest N, and removes nothing when none passes", () => {
      const db = makeDb(join(dir, "app.db"), { rows: 2000 });
      for (let i = 0; i < 3; i++) expect(backup("--keep", "10", db, out).code).toBe(0);
      const [oldest, middle, newest] = finals(out);
      const damage = (file: string) => {
        const bytes = readFileSync(join(out, file));
        bytes.fill(0x5a, 5 * 4096 + 8, 6 * 4096 - 8);
        writeFileSync(join(out, file), bytes);
      };
      damage(newest);
      const r = backup("--prune-only", "--keep", "1", db, out);
      expect(r.code).toBe(0);
      expect(r.stderr).toContain(`${join(out, newest)} fails the integrity gate; it does not count as the backup that is kept`);
      expect(finals(out)).toEqual([middle, newest]);
      damage(middle);
      const none = backup("--prune-only", "--keep", "1", db, out);
      expect(none.code).toBe(1);
      expect(none.stderr).toContain("passes the integrity gate; nothing was removed");
      expect(finals(out)).toEqual([middle, newest]);
      expect(oldest).toBeDefined();
    });
  });
});
