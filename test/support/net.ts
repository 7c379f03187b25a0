// Loopback helpers for the host tests that start servers of their own (sshd, a git daemon).
import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { connect } from "node:net";

/** A TCP port on 127.0.0.1 that nothing listens on right now (the VM runner's own). */
export { freePort } from "../../local/vm/qemu";

/** Whether something accepts a TCP connection on 127.0.0.1:`port` now. */
export function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    socket.once("connect", () => (socket.destroy(), resolve(true)));
    socket.once("error", () => resolve(false));
  });
}

/** A real sshd of a host test: its log so far, and how to stop it. */
export interface TestSshd {
  log(): string;
  stop(): Promise<void>;
}

/**
 * Starts /usr/sbin/sshd in the foreground (-D, its log on stderr) with `configFile`, and returns
 * once it accepts connections on 127.0.0.1:`port` (at most 10 s, else it is stopped and this throws
 * with its log).
 */
export async function startSshd(configFile: string, port: number): Promise<TestSshd> {
  mkdirSync("/run/sshd", { recursive: true, mode: 0o755 }); // ssh.service's RuntimeDirectory
  const child = spawn("/usr/sbin/sshd", ["-D", "-e", "-f", configFile], { stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  child.stderr!.on("data", (chunk: Buffer) => (log += chunk.toString()));
  const stop = async () => {
    if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    process.kill(child.pid, "SIGTERM");
    await exited;
  };
  const deadline = Date.now() + 10_000;
  while (!(await listening(port))) {
    if (Date.now() > deadline || child.exitCode !== null) {
      await stop();
      throw new Error(`sshd did not listen on 127.0.0.1:${port}:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { log: () => log, stop };
}
