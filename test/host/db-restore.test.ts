/**
 * scripts/host/keel-db-restore and scripts/host/keel-db-snapshot on real files (issue 5): a restore round trip
 * that keeps the current DB aside, refusals that change nothing, and read-only snapshots.
 */
import { ChildProcess, execFileSync } from "node:child_process";
import { chownSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { exited, fingerprint, gate, listing, makeDb, removeDir, script, sql, startWriter, tempDir } from "./db-helpers";

let dir: string;
beforeEach(() => {
  dir = tempDir();
});
afterEach(() => removeDir(dir));

describe("keel-db-restore", () => {
  it("round trip: backup, change the DB, restore; the DB is the backup again (WAL, 0600) and the changed one is kept aside", () => {
    const db = makeDb(join(dir, "app.db"), { rows: 500, wal: true });
    const b = script("backup", [db, join(dir, "backups")]);
    expect(b.code).toBe(0);
    const copy = b.stdout.trim();
    const copyBefore = fingerprint(copy);
    sql(db, "DELETE FROM t WHERE id > 100; INSERT INTO t(k) VALUES ('after the backup');");
    const changed = sql(db, "SELECT count(*) FROM t;");

    const r = script("restore", [copy, db]);
    expect(r.stderr).toMatch(/the previous DB is kept as .*app\.db\.pre-restore-\d{8}T\d{6}Z/);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("ok\n");
    expect(sql(db, "SELECT count(*) FROM t;")).toBe("500");
    expect(sql(db, "PRAGMA journal_mode;")).toBe("wal");
    expect(statSync(db).mode & 0o7777).toBe(0o600);
    expect(gate("verify", db).code).toBe(0);
    expect(fingerprint(copy)).toEqual(copyBefore);

    const aside = join(dir, listing(dir).find((f) => /^app\.db\.pre-restore-\d{8}T\d{6}Z$/.test(f))!);
    expect(sql(aside, "SELECT count(*) FROM t;")).toBe(changed);
    expect(listing(dir).filter((f) => f.includes(".restore."))).toEqual([]);
  });

  it("keeps the current DB's owner and moves its -wal aside with it", async () => {
    const db = join(dir, "app.db");
    const writer = await startWriter("hold", db);
    writer.kill("SIGKILL"); // leaves app.db-wal and app.db-shm behind, as a crashed engine does
    await exited(writer);
    expect(existsSync(`${db}-wal`)).toBe(true);
    const backup = makeDb(join(dir, "backup.db"), { rows: 5 });
    const nobody = Number(execFileSync("id", ["-u", "nobody"], { encoding: "utf8" }));
    chownSync(db, nobody, 0);

    const r = script("restore", [backup, db]);
    expect(r.code).toBe(0);
    expect(statSync(db).uid).toBe(nobody);
    expect(sql(db, "SELECT count(*) FROM t;")).toBe("5");
    const aside = listing(dir).find((f) => /^app\.db\.pre-restore-\d{8}T\d{6}Z$/.test(f))!;
    expect(existsSync(join(dir, `${aside}-wal`))).toBe(true);
    expect(sql(join(dir, aside), "SELECT count(*) FROM w;")).toBe("1");
  });

  it("is repeatable: restoring twice in a row keeps each previous DB aside under its own name", () => {
    const db = makeDb(join(dir, "app.db"), { rows: 1 });
    const backup = makeDb(join(dir, "backup.db"), { rows: 2 });
    expect(script("restore", [backup, db]).code).toBe(0);
    expect(script("restore", [backup, db]).code).toBe(0);
    const asides = listing(dir).filter((f) => /^app\.db\.pre-restore-\d{8}T\d{6}Z$/.test(f));
    expect(asides).toHaveLength(2);
    expect(asides.map((f) => sql(join(dir, f), "SELECT count(*) FROM t;"))).toEqual(["1", "2"]);
    expect(sql(db, "SELECT count(*) FROM t;")).toBe("2");
  });

  it("restores into a place where no DB exists yet", () => {
    const backup = makeDb(join(dir, "backup.db"), { rows: 9 });
    const r = script("restore", [backup, join(dir, "new.db")]);
    expect(r.code).toBe(0);
    expect(sql(join(dir, "new.db"), "SELECT count(*) FROM t;")).toBe("9");
  });

  it("refuses a damaged backup (exit 1): the DB and the backup stay as they were, no temporary file", () => {
    const db = makeDb(join(dir, "app.db"), { rows: 20, wal: true });
    const backup = makeDb(join(dir, "backup.db"), { rows: 300 });
    sql(backup, "PRAGMA writable_schema=ON; UPDATE sqlite_schema SET sql = 'CREATE INDEX t_k ON t(v)' WHERE name = 't_k';");
    const before = [fingerprint(db), fingerprint(backup)];
    const files = listing(dir);
    const r = script("restore", [backup, db]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/verify .*backup\.db: FAILED: integrity_check/);
    expect([fingerprint(db), fingerprint(backup)]).toEqual(before);
    expect(listing(dir)).toEqual(files);
  });

  it("rejects bad usage with exit 2", () => {
    expect(script("restore", []).code).toBe(2);
    expect(script("restore", [join(dir, "a"), join(dir, "a")]).code).toBe(2);
    expect(script("restore", ["-h"]).stdout).toMatch(/usage: keel-db-restore \[--owner USER\[:GROUP\]\] BACKUP DB/);
  });
});

describe("keel-db-snapshot", () => {
  let writer: ChildProcess | undefined;
  afterEach(() => {
    writer?.kill("SIGKILL");
    writer = undefined;
  });

  it("copies a live DB into a verified, read-only (0440) file that readers open without -wal/-shm", async () => {
    const db = makeDb(join(dir, "app.db"), { rows: 3000, wal: true });
    const log = join(dir, "committed.log");
    writer = await startWriter("loop", db, log, "30");
    const out = join(dir, "analysis", "snap.db");
    mkdirSync(join(dir, "analysis"));
    const r = script("snapshot", [db, out]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${out}\n`);
    writer.kill("SIGTERM");
    const w = await exited(writer);
    expect(w.code).toBe(0);

    expect(statSync(out).mode & 0o7777).toBe(0o440);
    expect(gate("verify", out).code).toBe(0);
    expect(sql(`file:${out}?mode=ro`, "SELECT count(*) FROM t;")).toBe("3000");
    expect(readdirSync(join(dir, "analysis"))).toEqual(["snap.db"]);
    expect([...readFileSync(out).subarray(18, 20)]).toEqual([1, 1]); // rollback-journal format
  });

  it("never overwrites: an existing OUT is refused (exit 5) and left as it was", () => {
    const db = makeDb(join(dir, "app.db"));
    const out = makeDb(join(dir, "snap.db"), { rows: 1 });
    const before = fingerprint(out);
    const r = script("snapshot", [db, out]);
    expect(r.code).toBe(5);
    expect(r.stderr).toMatch(/already exists; snapshots are never overwritten/);
    expect(fingerprint(out)).toEqual(before);
  });

  it("fails a damaged DB (exit 1) and leaves no OUT", () => {
    const db = makeDb(join(dir, "app.db"), { rows: 300 });
    sql(db, "PRAGMA writable_schema=ON; UPDATE sqlite_schema SET sql = 'CREATE INDEX t_k ON t(v)' WHERE name = 't_k';");
    const files = listing(dir);
    const r = script("snapshot", [db, join(dir, "snap.db")]);
    expect(r.code).toBe(1);
    expect(existsSync(join(dir, "snap.db"))).toBe(false);
    expect(listing(dir)).toEqual(files);
  });
});
