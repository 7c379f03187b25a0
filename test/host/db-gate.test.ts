/**
 * scripts/host/keel-db-gate on real SQLite files (issue 5, "Checks (automated)"): clean DBs pass; damaged
 * ones fail with a clear reason and stay byte-for-byte untouched; prepare folds a -wal into the DB;
 * adopt installs a DB atomically; a DB held open by a process is refused.
 */
import { ChildProcess, execFileSync, spawnSync } from "node:child_process";
import { chmodSync, closeSync, copyFileSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, statSync, symlinkSync, truncateSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { fingerprint, gate, listing, makeDb, removeDir, script, SCRIPTS, sql, startWriter, tempDir, writerOnce } from "./db-helpers";

let dir: string;
beforeEach(() => {
  dir = tempDir();
});
afterEach(() => removeDir(dir));

/** A DB whose committed transactions are still in its -wal (and whose -shm is left behind). */
function crashed(name: string, rows = 200): string {
  const db = join(dir, name);
  writerOnce("crash", db, String(rows));
  expect(statSync(`${db}-wal`).size).toBeGreaterThan(32);
  return db;
}

/** Overwrites `bytes` at `offset` in a file. */
function overwrite(file: string, offset: number, bytes: Buffer): void {
  const fd = openSync(file, "r+");
  writeSync(fd, bytes, 0, bytes.length, offset);
  closeSync(fd);
}

const damaged: Array<[string, RegExp, () => string]> = [
  [
    "a file truncated at a page boundary",
    /truncated: the header says \d+ pages/,
    () => {
      const db = makeDb(join(dir, "app.db"), { rows: 2000 });
      truncateSync(db, Math.floor(statSync(db).size / 2 / 4096) * 4096);
      return db;
    },
  ],
  [
    "a file truncated mid-page",
    /size \d+ is not a multiple of the page size 4096/,
    () => {
      const db = makeDb(join(dir, "app.db"), { rows: 2000 });
      truncateSync(db, statSync(db).size - 1000);
      return db;
    },
  ],
  [
    "a DB with an overwritten page",
    /integrity_check: /,
    () => {
      const db = makeDb(join(dir, "app.db"), { rows: 2000 });
      const root = Number(sql(db, "SELECT rootpage FROM sqlite_schema WHERE name = 't';"));
      overwrite(db, (root - 1) * 4096, Buffer.alloc(4096, 0x5a));
      return db;
    },
  ],
  [
    "a file that is not an SQLite DB",
    /not an SQLite database \(no 'SQLite format 3' header\)/,
    () => {
      const db = join(dir, "app.db");
      writeFileSync(db, "id,name\n1,this is a CSV file, not a database\n".repeat(200));
      return db;
    },
  ],
  [
    "an empty file",
    /empty file \(0 bytes\): not an SQLite database/,
    () => {
      const db = join(dir, "app.db");
      writeFileSync(db, "");
      return db;
    },
  ],
  [
    "a DB with a broken index",
    /integrity_check: .*t_k/,
    () => {
      // The index's definition no longer matches its entries, as after a bad write to its pages.
      const db = makeDb(join(dir, "app.db"), { rows: 300 });
      sql(db, "PRAGMA writable_schema=ON; UPDATE sqlite_schema SET sql = 'CREATE INDEX t_k ON t(v)' WHERE name = 't_k';");
      return db;
    },
  ],
  [
    "a DB that violates a foreign key",
    /foreign_key_check \(table\|rowid\|parent\|fkid\): c\|1\|p\|0/,
    () => {
      const db = join(dir, "app.db");
      sql(db, "CREATE TABLE p(id INTEGER PRIMARY KEY); CREATE TABLE c(pid INTEGER REFERENCES p(id)); INSERT INTO c VALUES (42);");
      return db;
    },
  ],
  [
    "a DB whose -wal belongs to another DB (its -shm records other salts)",
    /the -wal's salt does not match the one recorded in the -shm: the -wal belongs to another DB/,
    () => {
      const db = crashed("app.db");
      const other = crashed("other.db");
      copyFileSync(`${other}-wal`, `${db}-wal`);
      rmSync(other);
      rmSync(`${other}-wal`);
      rmSync(`${other}-shm`);
      return db;
    },
  ],
  [
    "a DB whose -wal belongs to another DB (no -shm: the replayed DB disagrees)",
    /the -wal belongs to another DB/,
    () => {
      const db = makeDb(join(dir, "app.db"), { rows: 50, wal: true });
      const other = join(dir, "other.db");
      makeDb(other, { rows: 3000, wal: true });
      writerOnce("crash", other, "20");
      copyFileSync(`${other}-wal`, `${db}-wal`);
      for (const f of [other, `${other}-wal`, `${other}-shm`]) rmSync(f);
      return db;
    },
  ],
  [
    "a DB whose -wal has another page size",
    /the -wal has page size 4096 but the DB has 8192: the -wal belongs to another DB/,
    () => {
      const db = join(dir, "app.db");
      sql(db, "PRAGMA page_size=8192; PRAGMA journal_mode=WAL; CREATE TABLE a(x); INSERT INTO a VALUES (1);");
      const other = crashed("other.db");
      copyFileSync(`${other}-wal`, `${db}-wal`);
      for (const f of [other, `${other}-wal`, `${other}-shm`]) rmSync(f);
      return db;
    },
  ],
  [
    "a DB whose -wal was removed while it held committed frames",
    /the -wal is missing or empty, but the -shm records \d+ committed frame\(s\) not yet in the DB/,
    () => {
      const db = crashed("app.db");
      rmSync(`${db}-wal`);
      return db;
    },
  ],
  [
    "a DB with a hot rollback journal",
    /a hot rollback journal .* is beside it/,
    () => {
      const db = join(dir, "app.db");
      writerOnce("hot-journal", db);
      return db;
    },
  ],
  [
    "a -wal without its DB",
    /a -wal without its DB/,
    () => {
      const other = crashed("other.db");
      const db = join(dir, "app.db");
      copyFileSync(`${other}-wal`, `${db}-wal`);
      for (const f of [other, `${other}-wal`, `${other}-shm`]) rmSync(f);
      return db;
    },
  ],
];

describe("keel-db-gate verify", () => {
  it.each([
    ["a rollback-journal DB", () => makeDb(join(dir, "app.db"))],
    ["a WAL DB, closed cleanly", () => makeDb(join(dir, "app.db"), { wal: true })],
    ["a WAL DB with committed frames still in its -wal", () => crashed("app.db")],
    ["a new DB without tables", () => (sql(join(dir, "app.db"), "PRAGMA user_version = 7;"), join(dir, "app.db"))],
  ])("passes %s, prints ok and changes no byte", (_name, make) => {
    const db = make();
    const before = fingerprint(db);
    const files = listing(dir);
    const r = gate("verify", db);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("ok\n");
    expect(fingerprint(db)).toEqual(before);
    expect(listing(dir)).toEqual(files);
  });

  it.each(damaged)("fails %s with the reason, and leaves every file untouched", (_name, reason, make) => {
    const db = make();
    const before = fingerprint(db);
    const files = listing(dir);
    const r = gate("verify", db);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(reason);
    expect(r.stderr).toContain(`verify ${db}: FAILED`);
    expect(r.stderr).toMatch(/what to do: /);
    expect(fingerprint(db)).toEqual(before);
    expect(listing(dir)).toEqual(files);
  });

  it("fails a missing DB", () => {
    const r = gate("verify", join(dir, "nope.db"));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("no such file");
  });

  it("explains its interface with -h, and rejects bad usage with exit 2", () => {
    const h = gate("-h");
    expect(h.code).toBe(0);
    expect(h.stdout).toMatch(/usage: keel-db-gate verify DB/);
    expect(h.stdout).toMatch(/exit codes: 0 ok; 1 gate failed/);
    expect(gate().code).toBe(2);
    expect(gate("verify").code).toBe(2);
    expect(gate("frobnicate", "x").code).toBe(2);
  });
});

describe("keel-db-gate prepare", () => {
  it("folds committed -wal frames into the DB: the -wal ends empty and every row is there", () => {
    const db = crashed("app.db", 500);
    const r = gate("prepare", db);
    expect(r.stderr).toContain("is clean and its -wal is empty");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("ok\n");
    expect(!existsSync(`${db}-wal`) || statSync(`${db}-wal`).size === 0).toBe(true);
    expect(sql(db, "SELECT count(*) FROM w;")).toBe("500");
    expect(gate("verify", db).code).toBe(0);
  });

  it("is idempotent: a second run succeeds and changes no byte", () => {
    const db = makeDb(join(dir, "app.db"), { wal: true });
    expect(gate("prepare", db).code).toBe(0);
    const before = fingerprint(db);
    const again = gate("prepare", db);
    expect(again.code).toBe(0);
    expect(fingerprint(db)).toEqual(before);
  });

  it.each(damaged)("refuses %s and leaves it untouched", (_name, reason, make) => {
    const db = make();
    const before = fingerprint(db);
    const r = gate("prepare", db);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(reason);
    expect(fingerprint(db)).toEqual(before);
  });
});

describe("keel-db-gate adopt", () => {
  it("installs a clean DB atomically: WAL mode, mode 0600, the given owner, every row, SRC consumed", () => {
    const src = makeDb(join(dir, "incoming.db"), { rows: 700 });
    const dest = join(dir, "live", "app.db");
    mkdirSync(join(dir, "live"));
    const r = gate("adopt", "--owner", "nobody", src, dest);
    expect(r.stderr).toContain(`adopted into ${dest}`);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("ok\n");
    expect(existsSync(src)).toBe(false);
    const st = statSync(dest);
    expect(st.mode & 0o7777).toBe(0o600);
    expect(st.uid).toBe(Number(execFileSync("id", ["-u", "nobody"], { encoding: "utf8" })));
    const header = readFileSync(dest).subarray(18, 20);
    expect([...header]).toEqual([2, 2]); // WAL mode is recorded in the file
    expect(sql(dest, "SELECT count(*) FROM t;")).toBe("700");
    // The DB, and the swap lock its start gate waits on (DATABASE.md "An interrupted swap").
    expect(listing(join(dir, "live"))).toEqual([".app.db.swap.lock", "app.db"]);
    expect(gate("verify", dest).code).toBe(0);
  });

  it("carries the committed frames of SRC's -wal into DEST", () => {
    const src = crashed("incoming.db", 300);
    const dest = join(dir, "app.db");
    const r = gate("adopt", src, dest);
    expect(r.code).toBe(0);
    expect(sql(dest, "SELECT count(*) FROM w;")).toBe("300");
    expect(existsSync(`${src}-wal`)).toBe(false);
  });

  it("refuses an existing DEST without --replace and changes nothing", () => {
    const src = makeDb(join(dir, "incoming.db"));
    const dest = makeDb(join(dir, "app.db"), { rows: 3 });
    const before = [fingerprint(src), fingerprint(dest)];
    const r = gate("adopt", src, dest);
    expect(r.code).toBe(5);
    expect(r.stderr).toMatch(/already exists; nothing was changed/);
    expect(r.stderr).toMatch(/--replace/);
    expect([fingerprint(src), fingerprint(dest)]).toEqual(before);
  });

  it("with --replace, takes a verified backup of DEST, keeps it aside, then replaces it", () => {
    const src = makeDb(join(dir, "incoming.db"), { rows: 40 });
    const dest = makeDb(join(dir, "app.db"), { rows: 3, wal: true });
    const backups = join(dir, "backups");
    const old = fingerprint(dest)["db"];
    const r = gate("adopt", "--replace", "--backup-dir", backups, src, dest);
    expect(r.stderr).toMatch(/the previous .* is kept as .*app\.db\.pre-adopt-\d{8}T\d{6}Z/);
    expect(r.code).toBe(0);
    expect(sql(dest, "SELECT count(*) FROM t;")).toBe("40");
    const status = JSON.parse(readFileSync(join(backups, "app.status.json"), "utf8"));
    expect(status.result).toBe("ok");
    expect(sql(status.file, "SELECT count(*) FROM t;")).toBe("3");
    const aside = listing(dir).find((f) => f.startsWith("app.db.pre-adopt-"))!;
    expect(fingerprint(join(dir, aside))["db"]).toBe(old);
  });

  it("with --replace, refuses to replace a DEST it cannot back up cleanly", () => {
    const src = makeDb(join(dir, "incoming.db"));
    const dest = makeDb(join(dir, "app.db"), { rows: 300 });
    sql(dest, "PRAGMA writable_schema=ON; UPDATE sqlite_schema SET sql = 'CREATE INDEX t_k ON t(v)' WHERE name = 't_k';");
    const before = [fingerprint(src), fingerprint(dest)];
    const r = gate("adopt", "--replace", "--backup-dir", join(dir, "backups"), src, dest);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/could not take a verified backup of .*nothing was replaced/);
    expect([fingerprint(src), fingerprint(dest)]).toEqual(before);
  });

  it.each(damaged)("refuses %s as SRC: SRC untouched, no DEST, no temporary file", (_name, reason, make) => {
    const src = make();
    const dest = join(dir, "live.db");
    const before = fingerprint(src);
    const files = listing(dir);
    const r = gate("adopt", src, dest);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(reason);
    expect(fingerprint(src)).toEqual(before);
    expect(existsSync(dest)).toBe(false);
    expect(listing(dir)).toEqual(files);
  });
});

describe("a DB held open by a process (the engine still running)", () => {
  let writer: ChildProcess | undefined;
  afterEach(() => {
    writer?.kill("SIGKILL");
    writer = undefined;
  });

  it("makes verify, prepare and adopt exit 3, name the process, and change nothing", async () => {
    const db = join(dir, "app.db");
    writer = await startWriter("hold", db);
    const before = fingerprint(db);
    for (const args of [["verify", db], ["prepare", db], ["adopt", db, join(dir, "dest.db")]]) {
      const r = gate(...args);
      expect(r.code, args[0]).toBe(3);
      expect(r.stderr).toContain(`is in use: held open by ${writer.pid} (`);
      expect(r.stderr).toMatch(/stop the engine first/);
    }
    expect(existsSync(join(dir, "dest.db"))).toBe(false);
    expect(fingerprint(db)).toEqual(before);
  });

  it("makes adopt exit 3 when DEST is the one held open", async () => {
    const src = makeDb(join(dir, "incoming.db"));
    const dest = join(dir, "app.db");
    writer = await startWriter("hold", dest);
    const before = [fingerprint(src), fingerprint(dest)];
    const r = gate("adopt", "--replace", "--backup-dir", join(dir, "b"), src, dest);
    expect(r.code).toBe(3);
    expect([fingerprint(src), fingerprint(dest)]).toEqual(before);
  });

  it("makes restore exit 3 and leaves the DB alone", async () => {
    const backup = makeDb(join(dir, "backup.db"));
    const db = join(dir, "app.db");
    writer = await startWriter("hold", db);
    const before = fingerprint(db);
    const r = script("restore", [backup, db]);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain(`held open by ${writer.pid}`);
    expect(fingerprint(db)).toEqual(before);
  });
});

describe("installed as the host has them (/usr/local/sbin/keel-db-*, without .sh)", () => {
  it("finds keel-db-lib and keel-db-backup beside itself, whether copied or symlinked", () => {
    const sbin = join(dir, "sbin");
    mkdirSync(sbin);
    for (const name of ["gate", "backup", "restore", "snapshot"]) copyFileSync(join(SCRIPTS, `keel-db-${name}`), join(sbin, `keel-db-${name}`));
    copyFileSync(join(SCRIPTS, "keel-db-lib"), join(sbin, "keel-db-lib"));
    for (const name of ["gate", "backup", "restore", "snapshot"]) chmodSync(join(sbin, `keel-db-${name}`), 0o755);
    symlinkSync(join(SCRIPTS, "keel-db-gate"), join(dir, "linked-gate"));

    const src = makeDb(join(dir, "incoming.db"), { rows: 4 });
    const dest = makeDb(join(dir, "app.db"), { rows: 2 });
    const run = (cmd: string, ...args: string[]) => spawnSync(cmd, args, { encoding: "utf8", timeout: 60_000 });
    const verify = run(join(sbin, "keel-db-gate"), "verify", src);
    expect(verify.stdout).toBe("ok\n");
    expect(verify.stderr).toBe("");
    expect(run(join(dir, "linked-gate"), "verify", src).stdout).toBe("ok\n");
    const adopt = run(join(sbin, "keel-db-gate"), "adopt", "--replace", "--backup-dir", join(dir, "backups"), src, dest);
    expect(adopt.stderr).toMatch(/^keel-db-gate: /m);
    expect(adopt.status).toBe(0);
    expect(sql(dest, "SELECT count(*) FROM t;")).toBe("4");
    expect(JSON.parse(readFileSync(join(dir, "backups", "app.status.json"), "utf8")).result).toBe("ok");
  });
});

