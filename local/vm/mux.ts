import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { registerChild, unregisterChild } from "./cleanup";
import { execFileAsync, sleep } from "./qemu";
import { type ExecResult, runSsh } from "./ssh";

/**
 * Sessions one master connection carries at a time. keel's sshd allows two per connection
 * (MaxSessions 2, cloud-init/files/sshd-keel.conf); an exec beyond them gets a connection of its own.
 */
const SESSIONS_PER_MASTER = 2;
/** After a master could not be started (the guest is still booting), connect directly for this long. */
const RETRY_MASTER_MS = 10_000;
/** What the ssh client prints when a multiplexed session could not be opened over the master. */
const MUX_FAILURE = /mux_client|Session open refused|administratively prohibited|Control socket connect|ControlSocket .* already exists/;

interface Master {
  readonly socket: string;
  readonly child: ChildProcess;
  ready: Promise<boolean>;
  sessions: number;
  alive: boolean;
  /** A session on it timed out: no new sessions, and it ends once the last one does. */
  retiring?: boolean;
}

/**
 * OpenSSH connection sharing for one VM: the first exec with a given set of ssh arguments starts a
 * master connection (`ssh -M -N`, a child of this process that dies with it), and later execs run
 * as sessions over it. Under TCG a fresh connection costs the guest a fork, a key exchange and a
 * PAM session, 1.4–2.7 s each on the project's machine, and the tests make hundreds; a session over
 * the master skips all of that. Host-key pinning is unchanged: the master verified the pinned key,
 * and another key (or user, or port) gets a master of its own. A master that dies (a reboot, a
 * restarted guest) is started again on the next exec; any exec the master cannot carry connects
 * directly, exactly as before.
 */
export class SshMultiplexer {
  private readonly masters = new Map<string, Master>();
  private readonly failedAt = new Map<string, number>();

  constructor(private readonly dir: string) {}

  /** Runs `command` with `args` (sshArgs), over a master connection when one can carry it. */
  async exec(args: string[], command: string, stdin: string | undefined, timeoutMs: number): Promise<ExecResult> {
    const master = await this.master(args);
    if (master && !master.retiring && master.sessions < SESSIONS_PER_MASTER) {
      master.sessions++;
      let r: ExecResult | undefined;
      try {
        r = await runSsh(["-o", `ControlPath=${master.socket}`, "-o", "ControlMaster=no", ...args], command, stdin, timeoutMs);
      } finally {
        master.sessions--;
        // Killing a timed-out client ends nothing on the guest while the master carries its session;
        // ending the master does (sshd hangs up its sessions), as the end of a direct connection
        // would. A session still running on it finishes first: new execs get another master.
        if (r?.timedOut) master.retiring = true;
        if (master.retiring && master.sessions === 0) this.retire(master);
      }
      // The master went away under us, or refused a session: the command never ran. Connect directly.
      if (!(r.code === 255 && MUX_FAILURE.test(r.stderr))) return r;
    }
    return runSsh(["-o", "ControlPath=none", ...args], command, stdin, timeoutMs);
  }

  /** Ends every master connection (before a reboot or a power-off: they would die anyway). */
  closeAll(): void {
    for (const master of [...this.masters.values()]) this.retire(master);
  }

  private retire(master: Master): void {
    for (const [key, m] of this.masters) if (m === master) this.masters.delete(key);
    master.alive = false;
    master.child.kill("SIGTERM");
  }

  private async master(args: string[]): Promise<Master | undefined> {
    const key = args.join("\0");
    const existing = this.masters.get(key);
    if (existing && !existing.retiring) return (await existing.ready) && existing.alive ? existing : undefined;
    if (Date.now() - (this.failedAt.get(key) ?? 0) < RETRY_MASTER_MS) return undefined;

    const socket = path.join(this.dir, `mux.${this.masters.size}.${Date.now() % 100000}`);
    // PR_SET_PDEATHSIG: the master never outlives this process.
    const child = spawn("setpriv", ["--pdeathsig", "KILL", "--", "ssh", "-M", "-N", "-o", `ControlPath=${socket}`, "-o", "ControlPersist=no", ...args], { stdio: "ignore" });
    const pid = child.pid as number;
    registerChild({ pid, signal: "SIGTERM" });
    const master: Master = { socket, child, sessions: 0, alive: true, ready: Promise.resolve(false) };
    child.once("exit", () => {
      master.alive = false;
      unregisterChild(pid);
      if (this.masters.get(key) === master) this.masters.delete(key);
      fs.rmSync(socket, { force: true });
    });
    const target = args[args.length - 1];
    master.ready = (async () => {
      const deadline = Date.now() + 60_000;
      while (master.alive && Date.now() < deadline) {
        const check = await execFileAsync("ssh", ["-F", "/dev/null", "-o", `ControlPath=${socket}`, "-O", "check", target]).then(() => true, () => false);
        if (check) return true;
        await sleep(100);
      }
      child.kill("SIGTERM");
      this.failedAt.set(key, Date.now());
      return false;
    })();
    this.masters.set(key, master);
    return (await master.ready) && master.alive ? master : undefined;
  }
}
