import { execFile, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import { registerChild, unregisterChild } from "./cleanup";
import type { ImageInfo } from "./image";

export const execFileAsync = promisify(execFile);
export type Accel = "kvm" | "tcg";

/** How long a guest gets to prove KVM works: a stock Debian kernel boots to poweroff in seconds. */
const KVM_PROBE_MS = 20_000;
let kvmProbe: Promise<boolean> | undefined;

/**
 * KVM when KVM_PROBE_MS shows a guest boots under it, TCG otherwise. Some hosts offer a /dev/kvm
 * that stock Debian kernels hang or die under (nested schemes such as PVM), so the device's mere
 * presence proves nothing. Probed once per process; $KEEL_VM_ACCEL=kvm|tcg skips the probe.
 */
export async function chooseAccel(image: ImageInfo, requested: "auto" | Accel = "auto"): Promise<Accel> {
  const forced = requested !== "auto" ? requested : process.env.KEEL_VM_ACCEL;
  if (forced === "kvm" || forced === "tcg") return forced;
  if (forced) throw new Error(`KEEL_VM_ACCEL: expected kvm or tcg, got "${forced}"`);
  kvmProbe ??= probeKvm(image);
  return (await kvmProbe) ? "kvm" : "tcg";
}

async function probeKvm(image: ImageInfo): Promise<boolean> {
  try {
    fs.accessSync("/dev/kvm", fs.constants.R_OK | fs.constants.W_OK);
  } catch {
    return false;
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keel-kvm-probe-"));
  const log = path.join(dir, "serial.log");
  try {
    const child = spawn("setpriv", ["--pdeathsig", "KILL", "--", "qemu-system-x86_64",
      "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
      "-accel", "kvm", "-cpu", "host", "-m", "512", "-smp", "1",
      "-kernel", image.kernel, "-initrd", image.initrd,
      "-append", `${image.cmdline} panic=-1 systemd.unit=poweroff.target`,
      "-drive", `file=${image.image},if=virtio,format=qcow2,snapshot=on`,
      "-serial", `file:${log}`,
    ], { stdio: "ignore" });
    const pid = child.pid;
    if (pid === undefined) return false;
    registerChild({ pid, signal: "SIGKILL" });
    const code = await new Promise<number | null>((resolve) => {
      const timer = setTimeout(() => child.kill("SIGKILL"), KVM_PROBE_MS);
      child.on("exit", (c) => {
        clearTimeout(timer);
        resolve(c);
      });
    });
    unregisterChild(pid);
    return code === 0 && fs.readFileSync(log, "utf8").includes("reboot: Power down");
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** A TCP port on 127.0.0.1 that nothing listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/**
 * Sends one QMP command (e.g. system_powerdown, or migrate with its arguments) over qemu's monitor
 * socket and resolves with its "return" value; rejects with QMP's error.
 */
export function qmp(socketPath: string, command: string, args?: Record<string, unknown>, timeoutMs = 5_000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(socketPath);
    let buffer = "";
    let step = 0;
    const done = (err?: Error, value?: unknown) => {
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve(value);
    };
    const timer = setTimeout(() => done(new Error(`QMP ${command}: no answer in ${timeoutMs} ms`)), timeoutMs);
    socket.on("error", (e) => done(new Error(`QMP ${command}: ${e.message}`)));
    socket.on("data", (chunk) => {
      buffer += chunk.toString();
      let newline: number;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const message = JSON.parse(buffer.slice(0, newline)) as Record<string, unknown>;
        buffer = buffer.slice(newline + 1);
        if ("error" in message) return done(new Error(`QMP ${command}: ${JSON.stringify(message.error)}`));
        if (step === 0 && "QMP" in message) {
          socket.write(`${JSON.stringify({ execute: "qmp_capabilities" })}\n`);
          step = 1;
        } else if (step === 1 && "return" in message) {
          socket.write(`${JSON.stringify(args ? { execute: command, arguments: args } : { execute: command })}\n`);
          step = 2;
        } else if (step === 2 && "return" in message) {
          return done(undefined, message.return);
        }
      }
    });
  });
}

/** True while `pid` is a qemu started for the VM directory `dir` (guards every kill by PID). */
export function isOurQemu(pid: number, dir: string): boolean {
  try {
    const argv = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    const name = argv.indexOf("-name");
    return name >= 0 && argv[name + 1] === vmName(dir) && argv.some((arg) => arg.includes(`${dir}/overlay.qcow2`));
  } catch {
    return false;
  }
}

export function vmName(dir: string): string {
  return path.basename(dir);
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
