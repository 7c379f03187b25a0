import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { registerChild, registerDir, unregisterChild, unregisterDir } from "./cleanup";
import type { ImageInfo } from "./image";
import { type Accel, chooseAccel, execFileAsync, freePort, isAlive, isOurQemu, qmp, sleep, vmName } from "./qemu";
import { type ExecResult, type SshLogin, knownHostsLine, parsePublicKey, runSsh, sshArgs, writePrivateFile } from "./ssh";

export interface BootOptions {
  readonly image: ImageInfo;
  /** The user-data, byte for byte what Hetzner would get. */
  readonly userData: string;
  /** Defaults to an instance-id unique to this boot and local-hostname keel-vm. */
  readonly metaData?: string;
  /** The guest's SSH host public key ("ssh-ed25519 AAAA..."): every connection pins it. */
  readonly hostPublicKey: string;
  /** Default login for exec, waitForCloudInit and reboot. */
  readonly login?: SshLogin;
  /** The port sshd listens on in the guest. Defaults to 22. */
  readonly sshGuestPort?: number;
  /** More guest TCP ports to forward, each to a free port on 127.0.0.1. */
  readonly extraHostForwards?: readonly { readonly guestPort: number }[];
  /** Defaults to 1024. */
  readonly memoryMiB?: number;
  /** Defaults to 2. */
  readonly cpus?: number;
  /** Virtual disk size; cloud-init grows the root filesystem to it on first boot. Defaults to 10. */
  readonly diskGiB?: number;
  /** Defaults to "auto": KVM when a short probe boots under it, else TCG (see chooseAccel). */
  readonly accel?: "auto" | Accel;
  /**
   * Start qemu so that detach() can leave it running after this process exits (the CLI's
   * `boot`). Defaults to false: qemu dies with this process.
   */
  readonly detachable?: boolean;
}

export interface ExecOptions {
  /** Defaults to the boot login's user. */
  readonly user?: string;
  /** Defaults to the boot login's identity file. */
  readonly identityFile?: string;
  readonly stdin?: string;
  /** Defaults to 120000. */
  readonly timeoutMs?: number;
  /** Defaults to the SSH guest port. */
  readonly guestPort?: number;
  /** Pin this key instead of the boot's hostPublicKey (e.g. to prove a wrong key is refused). */
  readonly hostPublicKey?: string;
}

/** `cloud-init status --format json`, reduced to what decides success. */
export interface CloudInitStatus {
  /** "done" on success; "error", "running", "disabled", ... otherwise. */
  readonly status: string;
  readonly errors: readonly string[];
  /** By level (WARNING, DEPRECATED, ERROR, ...); cloud-init before 23.4 reports none. */
  readonly recoverableErrors: Readonly<Record<string, readonly string[]>>;
  /** The JSON as cloud-init printed it. */
  readonly raw: unknown;
}

/** A failed wait: carries the status (when one was read) and the tail of the serial console. */
export class VmError extends Error {
  constructor(message: string, readonly serialTail: string, readonly cloudInit?: CloudInitStatus) {
    super(`${message}\n--- serial console, last lines ---\n${serialTail}`);
    this.name = "VmError";
  }
}

/**
 * The guest's kernel panicked: it will never answer again. Thrown by every wait as soon as the
 * panic reaches the serial console, instead of at the wait's timeout. Under TCG this has been an
 * emulator fault (a double fault in the slab allocator, once, on Debian 13), not the user-data's.
 */
export class GuestPanicError extends VmError {
  constructor(message: string, serialTail: string) {
    super(message, serialTail);
    this.name = "GuestPanicError";
  }
}

/** The kernel's panic line in a serial console log ("Kernel panic - not syncing: …"), if any. */
export function kernelPanic(serialLog: string): string | undefined {
  return /Kernel panic - not syncing:[^\r\n]*/.exec(serialLog)?.[0].trim();
}

/** What vm.json in the VM directory records, for `stop` and for sweeping orphans. */
export interface VmState {
  readonly dir: string;
  readonly ownerPid: number;
  readonly pid?: number;
  readonly detached?: boolean;
  readonly accel?: Accel;
  /** Guest port → host port on 127.0.0.1. */
  readonly ports?: Readonly<Record<string, number>>;
}

const VM_DIR_PREFIX = "keel-vm-";
const SERIAL_TAIL_LINES = 80;

export class Vm {
  private exited = false;
  private finalSerial?: string;
  private closing?: Promise<void>;
  private readonly knownHosts = new Map<string, string>();

  /** @internal Use bootVm. */
  constructor(
    readonly dir: string,
    readonly pid: number,
    readonly accel: Accel,
    readonly sshGuestPort: number,
    private readonly ports: ReadonlyMap<number, number>,
    private readonly hostPublicKey: string,
    private readonly login: SshLogin | undefined,
    private readonly child: ChildProcess,
    private readonly detachable: boolean,
  ) {
    child.once("exit", () => {
      this.exited = true;
    });
  }

  /** The port on 127.0.0.1 that forwards to `guestPort` (defaults to the SSH guest port). */
  sshPort(guestPort: number = this.sshGuestPort): number {
    const port = this.ports.get(guestPort);
    if (port === undefined) {
      throw new Error(`guest port ${guestPort} is not forwarded; forwarded: ${[...this.ports.keys()].join(", ")}`);
    }
    return port;
  }

  /** Runs `command` (a shell command line) in the guest over ssh, pinning the host key. */
  exec(command: string, opts: ExecOptions = {}): Promise<ExecResult> {
    return runSsh(this.sshArgs(opts), command, opts.stdin, opts.timeoutMs ?? 120_000);
  }

  /** An ssh command line a person can paste while the VM runs. */
  sshCommandLine(opts: ExecOptions = {}): string {
    return ["ssh", ...this.sshArgs(opts)].map(shellQuote).join(" ");
  }

  /** Resolves once sshd answers with its banner on the forwarded port. */
  async waitForSsh(timeoutMs = 600_000, guestPort: number = this.sshGuestPort): Promise<void> {
    const port = this.sshPort(guestPort);
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      this.assertRunning("waiting for SSH");
      if (await sshBanner(port)) return;
      await sleep(1_000);
    }
    throw new VmError(`no SSH banner from guest port ${guestPort} (127.0.0.1:${port}) within ${timeoutMs} ms`, this.serialTail());
  }

  /**
   * Waits until cloud-init has finished (`cloud-init status --wait` AND boot-finished written: the
   * former can return while the final stage still runs after an earlier module failed), then
   * returns its status. Throws a VmError, with the serial log tail, when the status is not done,
   * on any error, and on any recoverable error unless `allowRecoverable`.
   */
  async waitForCloudInit(timeoutMs = 900_000, opts: { allowRecoverable?: boolean } = {}): Promise<CloudInitStatus> {
    const deadline = Date.now() + timeoutMs;
    const remaining = () => Math.max(deadline - Date.now(), 1_000);
    await this.waitForSsh(remaining());
    let waited: ExecResult | undefined;
    while (Date.now() < deadline) {
      this.assertRunning("waiting for cloud-init");
      waited = await this.exec("cloud-init status --wait --long", { timeoutMs: remaining() });
      // 255: the connection failed or dropped (e.g. the user-data restarted sshd); ask again.
      if (waited.code !== 255) break;
      await sleep(2_000);
    }
    while (Date.now() < deadline) {
      this.assertRunning("waiting for boot-finished");
      const finished = await this.exec("test -e /var/lib/cloud/instance/boot-finished", { timeoutMs: 30_000 });
      if (finished.code === 0) break;
      await sleep(2_000);
    }
    if (Date.now() >= deadline) {
      throw new VmError(`cloud-init did not finish within ${timeoutMs} ms; last status:\n${waited?.stdout ?? ""}${waited?.stderr ?? ""}`, this.serialTail());
    }
    const status = await this.cloudInitStatus();
    const problems = [
      ...(status.status === "done" ? [] : [`status is "${status.status}"`]),
      ...status.errors.map((e) => `error: ${e}`),
      ...(opts.allowRecoverable ? [] : Object.entries(status.recoverableErrors).flatMap(
        ([level, messages]) => messages.map((m) => `recoverable ${level}: ${m}`))),
    ];
    if (problems.length > 0) {
      throw new VmError(`cloud-init did not finish cleanly:\n${problems.join("\n")}`, this.serialTail(), status);
    }
    return status;
  }

  /** `cloud-init status --format json` now, without waiting. */
  async cloudInitStatus(): Promise<CloudInitStatus> {
    const result = await this.exec("cloud-init status --format json", { timeoutMs: 60_000 });
    // Exit 1 (error) and 2 (recoverable errors) still print the JSON.
    if (result.code === 255 || result.stdout.trim() === "") {
      throw new VmError(`cloud-init status --format json failed (exit ${result.code}): ${result.stderr.trim()}`, this.serialTail());
    }
    const status = parseCloudInitStatus(result.stdout);
    if (status.raw && typeof status.raw === "object" && "recoverable_errors" in status.raw) return status;
    // cloud-init before 23.4 (Debian 12 has 22.4) only logs its warnings: collect them the way
    // newer versions do, from the log levels WARNING and above.
    const log = await this.exec("sudo -n cat /var/log/cloud-init.log 2>/dev/null || cat /var/log/cloud-init.log", { timeoutMs: 60_000 });
    if (log.code !== 0) {
      // Fail closed: an unread log could hide the warnings this check exists for.
      const why = `cannot read /var/log/cloud-init.log as the login user: ${log.stderr.trim()}`;
      return { ...status, recoverableErrors: { ERROR: [why] } };
    }
    return { ...status, recoverableErrors: logProblems(log.stdout) };
  }

  /**
   * Reboots the guest with `command` (run over ssh as the login user) and waits until SSH
   * answers from the new boot (a new kernel boot_id).
   */
  async reboot(opts: { timeoutMs?: number; command?: string } = {}): Promise<void> {
    const timeoutMs = opts.timeoutMs ?? 600_000;
    const before = await this.bootId();
    if (!before) throw new VmError("reboot: could not read the boot_id over ssh before rebooting", this.serialTail());
    // The connection may drop before ssh sees the exit status: 255 is expected here.
    await this.exec(opts.command ?? "sudo -n systemctl reboot", { timeoutMs: 30_000 });
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      this.assertRunning("rebooting");
      const now = await this.bootId();
      if (now && now !== before) return;
      await sleep(2_000);
    }
    throw new VmError(`reboot: no new boot answered over SSH within ${timeoutMs} ms`, this.serialTail());
  }

  /** The serial console so far (kept after shutdown). */
  serialLog(): string {
    if (this.finalSerial !== undefined) return this.finalSerial;
    try {
      return fs.readFileSync(path.join(this.dir, "serial.log"), "utf8");
    } catch {
      return "";
    }
  }

  serialTail(lines = SERIAL_TAIL_LINES): string {
    return this.serialLog().split("\n").slice(-lines).join("\n");
  }

  get running(): boolean {
    return !this.exited;
  }

  /**
   * Powers the guest off (ACPI), kills qemu if it is still there after `timeoutMs`, and removes
   * the VM directory (overlay, seed, logs). Safe to call more than once.
   */
  shutdown(timeoutMs = 90_000): Promise<void> {
    this.closing ??= this.close(timeoutMs);
    return this.closing;
  }

  /**
   * Leaves the VM running after this process exits; only for a VM booted with detachable. The
   * VM is then stopped with stopVm(dir) (the CLI's `stop`).
   */
  detach(): VmState {
    if (!this.detachable) {
      throw new Error("detach: boot the VM with detachable: true");
    }
    unregisterChild(this.pid);
    unregisterDir(this.dir);
    this.child.unref();
    const state = { ...readState(this.dir), detached: true };
    writeState(state);
    return state;
  }

  private async close(timeoutMs: number): Promise<void> {
    // A panicked kernel ignores the ACPI power button: straight to the kill.
    if (!this.exited && !kernelPanic(this.serialLog())) {
      await qmp(path.join(this.dir, "qmp.sock"), "system_powerdown").catch(() => undefined);
      await this.waitForExit(timeoutMs);
    }
    if (!this.exited) {
      this.child.kill("SIGKILL");
      await this.waitForExit(10_000);
    }
    unregisterChild(this.pid);
    this.finalSerial = this.serialLog();
    fs.rmSync(this.dir, { recursive: true, force: true });
    unregisterDir(this.dir);
  }

  private waitForExit(timeoutMs: number): Promise<void> {
    if (this.exited) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      this.child.once("exit", () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  private async bootId(): Promise<string | undefined> {
    const result = await this.exec("cat /proc/sys/kernel/random/boot_id", { timeoutMs: 20_000 });
    return result.code === 0 ? result.stdout.trim() : undefined;
  }

  private assertRunning(doing: string): void {
    if (this.exited) {
      throw new VmError(`qemu exited while ${doing} (qemu log: ${readQemuLog(this.dir)})`, this.serialTail());
    }
    const panic = kernelPanic(this.serialLog());
    if (panic) {
      throw new GuestPanicError(`the guest kernel panicked while ${doing}: ${panic}`, this.serialTail());
    }
  }

  private sshArgs(opts: ExecOptions): string[] {
    const user = opts.user ?? this.login?.user;
    const identityFile = opts.identityFile ?? this.login?.identityFile;
    if (!user || !identityFile) throw new Error("exec: give user and identityFile, or a login to bootVm");
    const port = this.sshPort(opts.guestPort);
    return sshArgs({ port, login: { user, identityFile }, knownHostsFile: this.knownHostsFile(port, opts.hostPublicKey ?? this.hostPublicKey) });
  }

  private knownHostsFile(port: number, publicKey: string): string {
    const line = knownHostsLine(port, publicKey);
    let file = this.knownHosts.get(line);
    if (!file) {
      file = path.join(this.dir, `known_hosts.${this.knownHosts.size}`);
      writePrivateFile(file, line);
      this.knownHosts.set(line, file);
    }
    return file;
  }
}

/**
 * Boots `image` under qemu with `userData` on a NoCloud seed: a copy-on-write overlay (the cached
 * image stays clean), user networking with restrict=on (no way out of the guest), each
 * forwarded guest port on a free port of 127.0.0.1, the serial console to a file. Everything
 * lives in a fresh directory under the system temp dir, removed by shutdown() and, should this
 * process end first, by an exit handler that also kills qemu.
 */
export async function bootVm(opts: BootOptions): Promise<Vm> {
  const hostPublicKey = parsePublicKey(opts.hostPublicKey);
  const sshGuestPort = opts.sshGuestPort ?? 22;
  const guestPorts = [...new Set([sshGuestPort, ...(opts.extraHostForwards ?? []).map((f) => f.guestPort)])];
  for (const port of guestPorts) {
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`guest port: expected 1..65535, got ${port}`);
  }
  sweepOrphans();
  const accel = await chooseAccel(opts.image, opts.accel);

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), VM_DIR_PREFIX));
  registerDir(dir);
  writeState({ dir, ownerPid: process.pid });
  try {
    await execFileAsync("qemu-img", ["create", "-q", "-f", "qcow2", "-F", opts.image.format,
      "-b", opts.image.image, path.join(dir, "overlay.qcow2"), `${opts.diskGiB ?? 10}G`]);
    await makeSeed(dir, opts.userData, opts.metaData ?? defaultMetaData());
    for (let attempt = 1; ; attempt++) {
      const ports = new Map<number, number>();
      for (const guestPort of guestPorts) ports.set(guestPort, await freePort());
      const child = startQemu(dir, opts, accel, ports);
      const started = await waitForQmp(dir, child);
      if (started) {
        const pid = child.pid as number;
        writeState({ dir, ownerPid: process.pid, pid, accel, ports: Object.fromEntries(ports) });
        return new Vm(dir, pid, accel, sshGuestPort, ports, hostPublicKey, opts.login, child, opts.detachable ?? false);
      }
      const log = readQemuLog(dir);
      // Another process took a port between freePort() and qemu's bind: pick new ones.
      if (attempt < 3 && /host forwarding rule|Address already in use/.test(log)) continue;
      throw new Error(`qemu did not start: ${log}`);
    }
  } catch (err) {
    fs.rmSync(dir, { recursive: true, force: true });
    unregisterDir(dir);
    throw err;
  }
}

function startQemu(dir: string, opts: BootOptions, accel: Accel, ports: ReadonlyMap<number, number>): ChildProcess {
  const forwards = [...ports].map(([guest, host]) => `hostfwd=tcp:127.0.0.1:${host}-:${guest}`).join(",");
  const qemuArgs = [
    "-name", vmName(dir),
    "-nodefaults", "-no-user-config", "-display", "none",
    "-machine", "q35",
    "-accel", accel === "kvm" ? "kvm" : "tcg,thread=multi",
    "-cpu", accel === "kvm" ? "host" : "max",
    "-smp", String(opts.cpus ?? 2),
    "-m", String(opts.memoryMiB ?? 1024),
    "-kernel", opts.image.kernel,
    "-initrd", opts.image.initrd,
    "-append", opts.image.cmdline,
    "-drive", `file=${path.join(dir, "overlay.qcow2")},if=virtio,format=qcow2,discard=unmap`,
    "-drive", `file=${path.join(dir, "seed.iso")},if=virtio,format=raw,readonly=on`,
    "-netdev", `user,id=net0,restrict=on,${forwards}`,
    "-device", "virtio-net-pci,netdev=net0",
    "-device", "virtio-rng-pci",
    "-serial", `file:${path.join(dir, "serial.log")}`,
    "-qmp", `unix:${path.join(dir, "qmp.sock")},server=on,wait=off`,
  ];
  const log = fs.openSync(path.join(dir, "qemu.log"), "a");
  try {
    if (opts.detachable) {
      // A session of its own: a Ctrl-C in the terminal after the CLI returned does not reach it.
      const child = spawn("qemu-system-x86_64", qemuArgs, { stdio: ["ignore", log, log], detached: true });
      registerChild({ pid: child.pid as number, signal: "SIGKILL" });
      return child;
    }
    // PR_SET_PDEATHSIG: even a SIGKILL of this process takes qemu with it.
    const child = spawn("setpriv", ["--pdeathsig", "KILL", "--", "qemu-system-x86_64", ...qemuArgs], { stdio: ["ignore", log, log] });
    registerChild({ pid: child.pid as number, signal: "SIGKILL" });
    return child;
  } finally {
    fs.closeSync(log);
  }
}

/** Resolves true once qemu's QMP socket accepts connections, false if qemu exits first. */
async function waitForQmp(dir: string, child: ChildProcess): Promise<boolean> {
  let exited = child.exitCode !== null;
  child.once("exit", () => {
    exited = true;
  });
  const deadline = Date.now() + 30_000;
  while (!exited && Date.now() < deadline) {
    if (await canConnect(path.join(dir, "qmp.sock"))) return true;
    await sleep(100);
  }
  if (!exited) child.kill("SIGKILL");
  if (child.pid !== undefined) unregisterChild(child.pid);
  return false;
}

function canConnect(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(socketPath);
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/**
 * The VM's network, as a cloud's datasource would describe it (Hetzner's does the same for its
 * servers): DHCPv4 on the one NIC and no DHCPv6. Without it cloud-init falls back
 * to its own guess, which on Debian 13 adds `inet6 dhcp`; qemu's user network has no DHCPv6 server,
 * so ifup waits out networking.service's 5-minute start timeout on every boot.
 */
const NETWORK_CONFIG = "version: 2\nethernets:\n  eth0:\n    dhcp4: true\n    dhcp6: false\n";

async function makeSeed(dir: string, userData: string, metaData: string): Promise<void> {
  // The user-data may hold a host private key: the directory is 0700 (mkdtemp), the files 0600,
  // and only the ISO is kept (NoCloud reads it on every boot).
  const seed = path.join(dir, "seed");
  fs.mkdirSync(seed, { mode: 0o700 });
  writePrivateFile(path.join(seed, "user-data"), userData);
  writePrivateFile(path.join(seed, "meta-data"), metaData);
  writePrivateFile(path.join(seed, "network-config"), NETWORK_CONFIG);
  try {
    await execFileAsync("genisoimage", ["-quiet", "-input-charset", "utf-8", "-output", path.join(dir, "seed.iso"),
      "-volid", "cidata", "-joliet", "-rock", ...["user-data", "meta-data", "network-config"].map((f) => path.join(seed, f))]);
    fs.chmodSync(path.join(dir, "seed.iso"), 0o600);
  } finally {
    fs.rmSync(seed, { recursive: true, force: true });
  }
}

function defaultMetaData(): string {
  return `instance-id: keel-${randomBytes(8).toString("hex")}\nlocal-hostname: keel-vm\n`;
}

function sshBanner(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    let data = "";
    const finish = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(5_000, () => finish(false));
    socket.on("data", (chunk) => {
      data += chunk.toString();
      if (data.includes("\n")) finish(data.startsWith("SSH-"));
    });
    socket.on("error", () => finish(false));
    socket.on("close", () => finish(false));
  });
}

function readQemuLog(dir: string): string {
  try {
    return fs.readFileSync(path.join(dir, "qemu.log"), "utf8").trim() || "(empty)";
  } catch {
    return "(none)";
  }
}

function readState(dir: string): VmState {
  return JSON.parse(fs.readFileSync(path.join(dir, "vm.json"), "utf8")) as VmState;
}

function writeState(state: VmState): void {
  const file = path.join(state.dir, "vm.json");
  fs.writeFileSync(`${file}.tmp`, `${JSON.stringify(state, null, 2)}\n`);
  fs.renameSync(`${file}.tmp`, file);
}

/**
 * Stops a VM this runner started, in this or another process (the CLI's `stop`): by its
 * directory or its qemu PID. Refuses a PID that is not a qemu of a keel VM directory.
 */
export async function stopVm(pidOrDir: string, timeoutMs = 90_000): Promise<VmState> {
  const state = /^\d+$/.test(pidOrDir) ? findStateByPid(Number(pidOrDir)) : readState(path.resolve(pidOrDir));
  if (state.pid !== undefined && isOurQemu(state.pid, state.dir)) {
    await qmp(path.join(state.dir, "qmp.sock"), "system_powerdown").catch(() => undefined);
    const deadline = Date.now() + timeoutMs;
    while (isOurQemu(state.pid, state.dir) && Date.now() < deadline) await sleep(500);
    if (isOurQemu(state.pid, state.dir)) process.kill(state.pid, "SIGKILL");
    while (isOurQemu(state.pid, state.dir)) await sleep(100);
  }
  fs.rmSync(state.dir, { recursive: true, force: true });
  return state;
}

function findStateByPid(pid: number): VmState {
  for (const dir of vmDirs()) {
    try {
      const state = readState(dir);
      if (state.pid === pid) return state;
    } catch {
      // Not ours, or half written.
    }
  }
  throw new Error(`no keel VM with qemu PID ${pid} under ${os.tmpdir()}`);
}

function vmDirs(): string[] {
  return fs.readdirSync(os.tmpdir())
    .filter((name) => name.startsWith(VM_DIR_PREFIX))
    .map((name) => path.join(os.tmpdir(), name));
}

/**
 * Removes VM directories whose owner process is gone and whose qemu no longer runs (left by a
 * SIGKILLed test run). A detached VM's directory stays while its qemu runs.
 */
function sweepOrphans(): void {
  for (const dir of vmDirs()) {
    let state: VmState;
    try {
      state = readState(dir);
    } catch {
      continue;
    }
    if (state.dir !== dir || state.ownerPid === process.pid || isAlive(state.ownerPid)) continue;
    if (state.pid !== undefined && isOurQemu(state.pid, dir)) continue;
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function shellQuote(arg: string): string {
  return /^[A-Za-z0-9@%+=:,./_-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

/** Reads `cloud-init status --format json` (cloud-init 22.4 to 25.x). */
export function parseCloudInitStatus(json: string): CloudInitStatus {
  const raw = JSON.parse(json) as Record<string, unknown>;
  const status = typeof raw.status === "string" ? raw.status : String(raw.extended_status ?? "unknown");
  const errors = Array.isArray(raw.errors) ? raw.errors.map(String) : [];
  const recoverable: Record<string, string[]> = {};
  if (raw.recoverable_errors && typeof raw.recoverable_errors === "object") {
    for (const [level, messages] of Object.entries(raw.recoverable_errors as Record<string, unknown>)) {
      if (Array.isArray(messages) && messages.length > 0) recoverable[level] = messages.map(String);
    }
  }
  return { status, errors, recoverableErrors: recoverable, raw };
}

/** WARNING, ERROR and CRITICAL lines of a cloud-init.log, by level. */
export function logProblems(log: string): Record<string, string[]> {
  const problems: Record<string, string[]> = {};
  for (const line of log.split("\n")) {
    const match = /\[(WARNING|ERROR|CRITICAL)\]: (.*)$/.exec(line);
    if (match) (problems[match[1]] ??= []).push(match[2]);
  }
  return problems;
}
