import * as fs from "node:fs";
import * as path from "node:path";
import { isAlive, sleep } from "./qemu";

/**
 * Runs `fn` holding the lock directory `lock`, across processes: mkdir is atomic, the holder's PID
 * is inside, and a lock whose holder is gone is taken over. Waits for another holder up to
 * `timeoutMs`; `ready()` is asked before each try and ends the wait early with its value (what
 * the other holder was making is there now).
 */
export async function withDirLock<T>(lock: string, fn: () => Promise<T>, opts: { timeoutMs: number; ready?: () => T | undefined }): Promise<T> {
  const deadline = Date.now() + opts.timeoutMs;
  for (;;) {
    const done = opts.ready?.();
    if (done !== undefined) return done;
    if (takeLock(lock)) break;
    if (Date.now() > deadline) throw new Error(`waited ${opts.timeoutMs} ms for the lock ${lock}, held by another process`);
    await sleep(1_000);
  }
  try {
    return (opts.ready?.() ?? (await fn()));
  } finally {
    fs.rmSync(lock, { recursive: true, force: true });
  }
}

/** Takes the lock directory, or removes it first when the process that holds it is gone. */
function takeLock(lock: string): boolean {
  try {
    fs.mkdirSync(lock, { mode: 0o700 });
    fs.writeFileSync(path.join(lock, "pid"), String(process.pid));
    return true;
  } catch {
    let holder = 0;
    try {
      holder = Number(fs.readFileSync(path.join(lock, "pid"), "utf8")) || 0;
    } catch {
      // Being made this instant, or just removed.
    }
    if (holder > 0 && !isAlive(holder)) fs.rmSync(lock, { recursive: true, force: true });
    return false;
  }
}
