// Issue 11: root never acts inside what the engine can write. An unprivileged user (`nobody`) stands
// in for a compromised engine: it owns the DB's directory, as the engine owns /var/lib/<app>. PATH
// wrappers around the file tools record who ran what, and one wrapper plays the engine's attack at
// the worst moment: when root is about to link into a temporary directory inside the engine's
// directory, the "engine" swaps that directory for a link to a directory of root's. Real sqlite3,
// real scripts, real setpriv.
import { execFileSync, spawnSync } from "node:child_process";
import { chmodSync, chownSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type Run, SCRIPTS, fingerprint, makeDb, removeDir, sha256, sql, tempDir, writerOnce } from "./db-helpers";

const TOOLS = ["mktemp", "ln", "cp", "mv", "chmod", "chown", "install", "dd"] as const;
const NOBODY = () => Number(execFileSync("id", ["-u", "nobody"], { encoding: "utf8" }));

let dir: string;
let engineDir: string;
let victim: string;
let bin: string;
let log: string;

beforeEach(() => {
  dir = tempDir("keel-db-privilege-");
  chmodSync(dir, 0o755);
  // The engine's directory: nobody's, as /var/lib/<app> is the engine's.
  engineDir = join(dir, "engine");
  mkdirSync(engineDir, { mode: 0o750 });
  chownSync(engineDir, NOBODY(), 0);
  chmodSync(engineDir, 0o755);
  // A directory of root's the attacker would like root to write into (stands in for /etc).
  victim = join(dir, "victim");
  mkdirSync(victim, { mode: 0o755 });
  bin = join(dir, "bin");
  mkdirSync(bin, { mode: 0o755 });
  log = join(dir, "calls.log");
  writeFileSync(log, "", { mode: 0o666 });
  chmodSync(log, 0o666);
  const attack = join(dir, "attack.sh");
  // Called by the ln wrapper with ln's arguments: for a root `ln SRC DIR/NAME` into a directory
  // inside the engine's, the engine moves DIR away and puts a link to the victim in its place.
  writeFileSync(
    attack,
    [
      "#!/bin/sh",
      '[ "$(id -u)" = 0 ] || exit 0',
      'for a in "$@"; do',
      '  case $a in',
      `    ${engineDir}/*/*) d=$(dirname -- "$a"); setpriv --reuid=nobody --regid=nogroup --clear-groups -- sh -c 'mv -- "$1" "$1.moved" && ln -s -- "$2" "$1"' sh "$d" ${victim} ;;`,
      "  esac",
      "done",
      "",
    ].join("\n"),
    { mode: 0o755 },
  );
  for (const tool of TOOLS) {
    const real = execFileSync("sh", ["-c", `command -v ${tool}`], { encoding: "utf8" }).trim();
    writeFileSync(
      join(bin, tool),
      [
        "#!/bin/sh",
        `printf '%s %s' "$(id -u)" ${tool} >>${log}; printf ' %s' "$@" >>${log}; echo >>${log}`,
        tool === "ln" ? `${attack} "$@"` : "",
        `exec ${real} "$@"`,
        "",
      ].join("\n"),
      { mode: 0o755 },
    );
  }
});
afterEach(() => removeDir(dir));

function run(file: string, args: string[], opts: { input?: string; asNobody?: boolean } = {}): Run {
  const argv = opts.asNobody ? ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", file, ...args] : [file, ...args];
  const r = spawnSync(argv[0], argv.slice(1), {
    encoding: "utf8",
    input: opts.input,
    timeout: 120_000,
    env: { PATH: `${bin}:/usr/sbin:/usr/bin:/sbin:/bin`, HOME: "/root" },
  });
  if (r.error) throw r.error;
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/**
 * The recorded calls by which root created or changed something inside the engine's directory:
 * the last argument (what ln, cp, mv, install, chmod, chown and mktemp write) or dd's `of=` is in it.
 * Reading from it (the first arguments of ln and cp) is allowed.
 */
function rootCallsInEngineDir(): string[] {
  return readFileSync(log, "utf8")
    .split("\n")
    .filter((l) => l.startsWith("0 ") && l.split(" ").some((a, i, all) => (i === all.length - 1 || a.startsWith("of=")) && a.replace(/^of=/, "").startsWith(`${engineDir}/`)));
}

/** A DB of nobody's in the engine's directory whose last commits are still in its -wal. */
function liveDbWithWal(rows = 200): string {
  const db = join(engineDir, "engine.db");
  writerOnce("crash", db, String(rows));
  expect(statSync(`${db}-wal`).size).toBeGreaterThan(32);
  for (const f of [db, `${db}-wal`, `${db}-shm`]) if (existsSync(f)) chownSync(f, NOBODY(), 65534);
  return db;
}

describe("root's DB tools in a directory the engine owns", () => {
  it("verify replays a -wal in a private directory of root's, not beside the DB: the engine's swap reaches nothing", () => {
    const db = liveDbWithWal();
    const before = fingerprint(db);
    const r = run(join(SCRIPTS, "keel-db-gate"), ["verify", db]);
    expect(r.stderr).toBe("");
    expect([r.code, r.stdout]).toEqual([0, "ok\n"]);
    expect(rootCallsInEngineDir()).toEqual([]);
    expect(readdirSync(victim)).toEqual([]);
    expect(readdirSync(engineDir).sort()).toEqual(["engine.db", "engine.db-shm", "engine.db-wal"]);
    expect(fingerprint(db)).toEqual(before);
  });

  it("restore and adopt refuse to run as root there (exit 2), say how to run them as the owner, and change nothing", () => {
    const db = makeDb(join(engineDir, "engine.db"), { rows: 10, wal: true });
    chownSync(db, NOBODY(), 65534);
    const backup = makeDb(join(dir, "engine-20261201T031700Z.db"), { rows: 20 });
    const src = makeDb(join(dir, "incoming.db"), { rows: 30 });
    const before = fingerprint(db);
    const restore = run(join(SCRIPTS, "keel-db-restore"), [backup, db]);
    const adopt = run(join(SCRIPTS, "keel-db-gate"), ["adopt", "--replace", "--backup-dir", join(dir, "backups"), src, db]);
    for (const r of [restore, adopt]) {
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`refused: as root in ${engineDir}, which belongs to nobody:root or is writable by others; root writes nothing where another user can`);
      expect(r.stderr).toContain("setpriv --reuid=nobody --regid=root --clear-groups --");
    }
    expect(fingerprint(db)).toEqual(before);
    expect(readdirSync(engineDir).sort()).toEqual(["engine.db"]);
    expect(rootCallsInEngineDir()).toEqual([]);
  });

  it("restore as the directory's owner puts the backup in place: its rows, the previous DB kept aside, all nobody's", () => {
    const db = makeDb(join(engineDir, "engine.db"), { rows: 10, wal: true });
    chownSync(db, NOBODY(), 65534);
    const backup = makeDb(join(dir, "engine-20261201T031700Z.db"), { rows: 20 });
    chmodSync(backup, 0o644);
    const r = run(join(SCRIPTS, "keel-db-restore"), [backup, db], { asNobody: true });
    expect(r.stderr).toContain("restored");
    expect([r.code, r.stdout]).toEqual([0, "ok\n"]);
    expect(sql(db, "SELECT count(*) FROM t;")).toBe("20");
    for (const f of readdirSync(engineDir)) expect(statSync(join(engineDir, f)).uid, f).toBe(NOBODY());
    expect(readdirSync(engineDir).some((f) => /^engine\.db\.pre-restore-\d{8}T\d{6}Z$/.test(f))).toBe(true);
    expect(rootCallsInEngineDir()).toEqual([]);
  });

  it("keel-db-migrate adopts the upload as the DB's owner: root only reads the upload, the owner writes every file", () => {
    const incoming = join(dir, "incoming");
    mkdirSync(incoming, { mode: 0o700 });
    const staged = makeDb(join(incoming, "engine.db"), { rows: 42 });
    const live = join(engineDir, "engine.db");
    const sum = sha256(staged);
    const r = run(join(SCRIPTS, "keel-db-migrate"), ["--records", join(dir, "records"), "--owner", "nobody:nogroup", "--unit", "keel-test-no-such-unit.service", staged, live], {
      input: `${sum}  /home/op/engine.db\n`,
    });
    expect(r.stderr).toContain("has the sha256 of /home/op/engine.db");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`migrate: adopted /home/op/engine.db (sha256 ${sum}) as ${live}\n`);
    expect(sql(live, "SELECT count(*) FROM t;")).toBe("42");
    expect(statSync(live)).toMatchObject({ uid: NOBODY() });
    expect(statSync(live).mode & 0o777).toBe(0o600);
    expect(existsSync(staged)).toBe(false);
    expect(readdirSync(engineDir).sort()).toEqual([".engine.db.swap.lock", "engine.db"]);
    expect(rootCallsInEngineDir()).toEqual([]);
    expect(readdirSync(victim)).toEqual([]);
  });
});
