import * as fs from "node:fs";

/**
 * Processes and directories this process created and must not leave behind, whatever way it
 * ends: a normal exit, process.exit, an uncaught exception, or SIGINT/SIGTERM/SIGHUP. Only the
 * PIDs registered here are ever signalled. (A SIGKILL of this process runs nothing: qemu then dies
 * through PR_SET_PDEATHSIG, and the next bootVm sweeps the orphaned directory.)
 */
export interface TrackedChild {
  readonly pid: number;
  /** Signal the child's whole process group (it was spawned detached, as its leader). */
  readonly group?: boolean;
  /** Defaults to SIGTERM. */
  readonly signal?: NodeJS.Signals;
}

const children = new Map<number, TrackedChild>();
const dirs = new Set<string>();
let installed = false;

export function registerChild(child: TrackedChild): void {
  install();
  children.set(child.pid, child);
}

export function unregisterChild(pid: number): void {
  children.delete(pid);
}

export function registerDir(dir: string): void {
  install();
  dirs.add(dir);
}

export function unregisterDir(dir: string): void {
  dirs.delete(dir);
}

/** Synchronous on purpose: it runs inside the "exit" event. */
function cleanupNow(): void {
  for (const child of children.values()) {
    try {
      process.kill(child.group ? -child.pid : child.pid, child.signal ?? "SIGTERM");
    } catch {
      // Already gone.
    }
  }
  children.clear();
  for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
  dirs.clear();
}

function install(): void {
  if (installed) return;
  installed = true;
  process.on("exit", cleanupNow);
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.once(signal, () => {
      cleanupNow();
      // Our listener is gone now: re-raising ends the process as the signal would have.
      process.kill(process.pid, signal);
    });
  }
}
