/**
 * Shared helpers for the db-* host tests: real sqlite3, real files, real processes. No mocks.
 */
import { ChildProcess, spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const REPO = join(__dirname, "..", "..");
/** keel's host tools, named as installed (scripts/host/). */
export const SCRIPTS = join(REPO, "scripts", "host");
/** The scripts `pulumi up` runs as steps (scripts/steps/). */
export const STEP_SCRIPTS = join(REPO, "scripts", "steps");
export const WRITER = join(__dirname, "db-writer.py");
/** The system python3 (stdlib sqlite3), as on the host; a pyenv shim also works. */
export const PYTHON = existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3";

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs scripts/host/keel-db-NAME with a clean environment (plus `env`), bounded in time. */
export function script(name: "gate" | "backup" | "restore" | "snapshot", args: string[], env: Record<string, string> = {}): Run {
  const r = spawnSync(join(SCRIPTS, `keel-db-${name}`), args, {
    encoding: "utf8",
    timeout: 120_000,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/root", ...env },
  });
  if (r.error) throw r.error;
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

export const gate = (...args: string[]) => script("gate", args);

/** sqlite3 on a DB; throws with sqlite3's message on failure. */
export function sql(db: string, statements: string): string {
  const r = spawnSync("sqlite3", ["-init", "/dev/null", "-batch", "-bail", db, statements], { encoding: "utf8", timeout: 120_000 });
  if (r.status !== 0) throw new Error(`sqlite3 ${db} failed: ${r.stderr}`);
  return r.stdout.trim();
}

export function tempDir(prefix = "keel-db-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export function sha256(file: string): string {
  return createHash("sha256").update(readFileSync(file)).digest("hex");
}

/** sha256 of DB and of each -wal/-shm/-journal beside it ("absent" where there is none). */
export function fingerprint(db: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const ext of ["", "-wal", "-shm", "-journal"]) out[`db${ext}`] = existsSync(db + ext) ? sha256(db + ext) : "absent";
  return out;
}

export const listing = (dir: string) => readdirSync(dir).sort();

/** A clean DB: table t with `rows` rows of `blob` random bytes and an index; WAL mode if asked. */
export function makeDb(db: string, opts: { rows?: number; blob?: number; wal?: boolean } = {}): string {
  const { rows = 500, blob = 100, wal = false } = opts;
  sql(
    db,
    `${wal ? "PRAGMA journal_mode=WAL;" : ""}
     CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v BLOB);
     CREATE INDEX t_k ON t(k);
     WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ${rows})
     INSERT INTO t(k, v) SELECT 'key-' || i, randomblob(${blob}) FROM c;`,
  );
  return db;
}

/** Runs db-writer.py in a mode that ends by itself (crash, hot-journal): waits for it to die. */
export function writerOnce(mode: "crash" | "hot-journal", ...args: string[]): void {
  const r = spawnSync(PYTHON, [WRITER, mode, ...args], { encoding: "utf8", timeout: 60_000 });
  if (r.stdout.trim() !== "ready" || r.signal !== "SIGKILL") throw new Error(`db-writer ${mode} did not reach its kill: ${r.stderr}`);
}

/** Starts db-writer.py (hold, loop) and resolves once it printed "ready". */
export function startWriter(mode: "hold" | "loop", ...args: string[]): Promise<ChildProcess> {
  const child = spawn(PYTHON, [WRITER, mode, ...args], { stdio: ["pipe", "pipe", "pipe"] });
  return new Promise((resolve, reject) => {
    let out = "";
    let err = "";
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`db-writer ${mode} not ready in 20 s: ${err}`));
    }, 20_000);
    child.stderr!.on("data", (d) => (err += d));
    child.stdout!.on("data", (d) => {
      out += d;
      if (out.includes("ready\n")) {
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`db-writer ${mode} exited (${code}) before ready: ${err}`));
    });
  });
}

/**
 * Waits (bounded) until a child has exited and its output pipes are drained ("close", not "exit",
 * which can come before the last output); resolves with its code and its stdout from now on.
 */
export function exited(child: ChildProcess, ms = 30_000): Promise<{ code: number | null; stdout: string }> {
  return new Promise((resolve, reject) => {
    let out = "";
    child.stdout?.on("data", (d) => (out += d));
    const timer = setTimeout(() => reject(new Error(`process ${child.pid} did not exit in ${ms} ms`)), ms);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: out });
    });
  });
}

/** Mounts a filesystem for a test (we are root); returns the unmount function. */
export function mount(args: string[], target: string): () => void {
  const r = spawnSync(args[0], args.slice(1), { encoding: "utf8", timeout: 20_000 });
  if (r.status !== 0) throw new Error(`${args.join(" ")} failed: ${r.stderr}`);
  return () => {
    const u = spawnSync("umount", [target], { encoding: "utf8", timeout: 20_000 });
    if (u.status !== 0) throw new Error(`umount ${target} failed: ${u.stderr}`);
  };
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}
