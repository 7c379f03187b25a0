import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { registerChild, registerDir, unregisterChild, unregisterDir } from "./cleanup";
import type { ImageInfo } from "./image";
import { type Accel, chooseAccel, execFileAsync, freePort, isAlive, isOurQemu, qmp, sleep, vmName } from "./qemu";
import { SshMultiplexer } from "./mux";
import { type ExecResult, type SshLogin, knownHostsLine, parsePublicKey, sshArgs, writePrivateFile } from "./ssh";

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
  /** Defaults to $KEEL_VM_CPUS, else 2 (defaultCpus). */
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

/**
 * SSH to a running VM: exec over a shared master connection, the pinned host key, the forwarded
 * ports. A Vm is one, with the qemu process besides; attachVm gives one for a VM that another
 * process started and left running (the demo's).
 */
export class VmSession {
  private readonly knownHosts = new Map<string, string>();
  protected readonly mux: SshMultiplexer;

  /** @internal Use bootVm, resumeVm or attachVm. */
  constructor(
    readonly dir: string,
    readonly sshGuestPort: number,
    private readonly ports: ReadonlyMap<number, number>,
    private readonly hostPublicKey: string,
    protected readonly login: SshLogin | undefined,
  ) {
    this.mux = new SshMultiplexer(dir);
  }

  /** The boot login's user (undefined without a login). */
  get loginUser(): string | undefined {
    return this.login?.user;
  }

  /** The pinned host public key, "TYPE BASE64". */
  get hostKey(): string {
    return this.hostPublicKey;
  }

  /** The port on 127.0.0.1 that forwards to `guestPort` (defaults to the SSH guest port). */
  sshPort(guestPort: number = this.sshGuestPort): number {
    const port = this.ports.get(guestPort);
    if (port === undefined) {
      throw new Error(`guest port ${guestPort} is not forwarded; forwarded: ${[...this.ports.keys()].join(", ")}`);
    }
    return port;
  }

  /**
   * Runs `command` (a shell command line) in the guest over ssh, pinning the host key. Execs share
   * a master connection where they can (local/vm/mux.ts): the same command, a fraction of the cost.
   */
  exec(command: string, opts: ExecOptions = {}): Promise<ExecResult> {
    return this.mux.exec(this.sshArgs(opts), command, opts.stdin, opts.timeoutMs ?? 120_000);
  }

  /** An ssh command line a person can paste while the VM runs. */
  sshCommandLine(opts: ExecOptions = {}): string {
    return ["ssh", ...this.sshArgs(opts)].map(shellQuote).join(" ");
  }

  /**
   * The same VM reached on another forwarded guest port, for when its sshd serves SSH there too
   * (keel:sshPortNext) or has moved: execs go to that port, with the same login and pinned key.
   */
  onGuestPort(guestPort: number): VmSession {
    this.sshPort(guestPort);
    return new VmSession(this.dir, guestPort, this.ports, this.hostPublicKey, this.login);
  }

  /**
   * The Hetzner firewall's stand-in: of the guest ports forwarded at boot, only those in `open` are
   * let in from 127.0.0.1 (qemu's user-network forwards, removed or added again through the
   * monitor), as keel's firewall opens keel:sshPort (and keel:sshPortNext) alone. Connections
   * already made keep going, as through a stateful firewall.
   */
  async setFirewall(open: readonly number[]): Promise<void> {
    const sock = path.join(this.dir, "qmp.sock");
    const hmp = async (line: string) => String((await qmp(sock, "human-monitor-command", { "command-line": line })) ?? "");
    // `info usernet` lists each forward as "TCP[HOST_FORWARD] FD 127.0.0.1 HOSTPORT 10.0.2.15 GUESTPORT …".
    const active = new Set([...(await hmp("info usernet")).matchAll(/TCP\[HOST_FORWARD\]\s+\S+\s+127\.0\.0\.1\s+([0-9]+)/g)].map((m) => Number(m[1])));
    for (const guest of open) if (!this.ports.has(guest)) throw new Error(`setFirewall: guest port ${guest} was not forwarded at boot (${[...this.ports.keys()].join(", ")})`);
    for (const [guest, host] of this.ports) {
      const rule = `tcp:127.0.0.1:${host}`;
      const out = open.includes(guest) ? (active.has(host) ? "" : await hmp(`hostfwd_add net0 ${rule}-:${guest}`)) : active.has(host) ? await hmp(`hostfwd_remove net0 ${rule}`) : "";
      // HMP reports a failure as text, not as a QMP error; a removal says "host forwarding rule for … removed".
      if (out.trim() && !/removed/.test(out)) throw new Error(`setFirewall: guest port ${guest}: ${out.trim()}`);
    }
  }

  /** Ends this session's shared connections (its execs open new ones when needed). */
  disconnect(): void {
    this.mux.closeAll();
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
      file = path.join(this.dir, `known_hosts.${process.pid}.${this.knownHosts.size}`);
      writePrivateFile(file, line);
      this.knownHosts.set(line, file);
    }
    return file;
  }
}

/**
 * SSH to a VM that bootVm started with `detachable` and another process left running (its
 * vm.json state, VmState), for as long as its qemu runs.
 */
export function attachVm(state: VmState, opts: { hostPublicKey: string; login: SshLogin; sshGuestPort?: number }): VmSession {
  if (state.pid === undefined || !isOurQemu(state.pid, state.dir)) throw new Error(`no running VM in ${state.dir}`);
  const ports = new Map(Object.entries(state.ports ?? {}).map(([guest, host]) => [Number(guest), host]));
  return new VmSession(state.dir, opts.sshGuestPort ?? 22, ports, parsePublicKey(opts.hostPublicKey), opts.login);
}

export class Vm extends VmSession {
  private exited = false;
  private finalSerial?: string;
  private closing?: Promise<void>;

  /** @internal Use bootVm or resumeVm. */
  constructor(
    dir: string,
    readonly pid: number,
    private readonly shape: VmShape,
    sshGuestPort: number,
    ports: ReadonlyMap<number, number>,
    hostPublicKey: string,
    login: SshLogin | undefined,
    private readonly child: ChildProcess,
    private readonly detachable: boolean,
  ) {
    super(dir, sshGuestPort, ports, hostPublicKey, login);
    child.once("exit", () => {
      this.exited = true;
      this.mux.closeAll();
    });
  }

  get accel(): Accel {
    return this.shape.accel;
  }

  /**
   * Saves the running guest, memory and disk, into `dest` (a new directory), so that resumeVm can
   * start any number of VMs exactly from this moment, and lets this VM run on. The guest is paused
   * for the copy (seconds): its clock falls behind by as much, which keel-vm-time corrects.
   * The snapshot holds whatever the guest holds, secrets included: `dest` is made 0700.
   */
  async snapshot(dest: string): Promise<void> {
    this.assertRunning("taking a snapshot");
    if (fs.existsSync(dest)) throw new Error(`snapshot: ${dest} already exists`);
    // No connection of this machine's lives on in the copy (its other end would be gone).
    this.mux.closeAll();
    await sleep(1_000);
    const tmp = `${dest}.tmp.${process.pid}`;
    fs.mkdirSync(tmp, { mode: 0o700 });
    const sock = path.join(this.dir, "qmp.sock");
    try {
      await qmp(sock, "stop");
      await qmp(sock, "migrate-set-parameters", { "max-bandwidth": 8 * 1024 ** 3 });
      await qmp(sock, "migrate", { uri: `exec:cat > ${shellQuote(path.join(tmp, "state"))}` });
      for (;;) {
        const info = (await qmp(sock, "query-migrate")) as { status?: string; "error-desc"?: string };
        if (info.status === "completed") break;
        if (info.status === "failed" || info.status === "cancelled") throw new Error(`snapshot: migration ${info.status}: ${info["error-desc"] ?? ""}`);
        await sleep(200);
      }
      // The guest is stopped and its disk flushed: the overlay is consistent with the state.
      fs.copyFileSync(path.join(this.dir, "overlay.qcow2"), path.join(tmp, "disk.qcow2"));
      fs.copyFileSync(path.join(this.dir, "seed.iso"), path.join(tmp, "seed.iso"));
      const file: SnapshotFile = { version: SNAPSHOT_FORMAT, shape: this.shape };
      fs.writeFileSync(path.join(tmp, "snapshot.json"), `${JSON.stringify(file, null, 2)}\n`);
      for (const f of fs.readdirSync(tmp)) fs.chmodSync(path.join(tmp, f), 0o600);
      fs.renameSync(tmp, dest);
    } catch (err) {
      fs.rmSync(tmp, { recursive: true, force: true });
      throw err;
    } finally {
      await qmp(sock, "cont").catch(() => undefined);
    }
  }

  /** @internal Waits until a VM started with -incoming has loaded its state and runs. */
  async waitForIncoming(timeoutMs = 300_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      this.assertRunning("loading the snapshot");
      const sock = path.join(this.dir, "qmp.sock");
      const status = (await qmp(sock, "query-status").catch(() => undefined)) as { status?: string } | undefined;
      if (status?.status === "running") return;
      // The snapshot was taken of a stopped guest, and qemu keeps that run state: go on.
      if (status?.status === "paused") await qmp(sock, "cont");
      await sleep(200);
    }
    throw new VmError(`the snapshot did not load within ${timeoutMs} ms (qemu log: ${readQemuLog(this.dir)})`, this.serialTail());
  }

  /**
   * Resolves once the guest's clock is within `toleranceMs` of this machine's, as keel-vm-time
   * makes it after a resume (it checks every 2 s). Returns the last offset seen, in ms.
   */
  async waitForClock(timeoutMs = 120_000, toleranceMs = 1_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    let offset = Number.NaN;
    while (Date.now() < deadline) {
      this.assertRunning("waiting for the guest's clock");
      const before = Date.now();
      const r = await this.exec("date +%s%3N", { timeoutMs: 30_000 });
      const after = Date.now();
      if (r.code === 0) {
        offset = Number(r.stdout.trim()) - (before + after) / 2;
        if (Math.abs(offset) <= toleranceMs + (after - before) / 2) return offset;
      }
      await sleep(1_000);
    }
    throw new VmError(`the guest's clock is still ${Math.round(offset)} ms off this machine's after ${timeoutMs} ms (keel-vm-time not running?)`, this.serialTail());
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
    // The master connections die with the old boot; waiting for their keep-alives to notice costs time.
    this.mux.closeAll();
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
    this.mux.closeAll();
    unregisterChild(this.pid);
    unregisterDir(this.dir);
    this.child.unref();
    const state = { ...readState(this.dir), detached: true };
    writeState(state);
    return state;
  }

  private async close(timeoutMs: number): Promise<void> {
    this.mux.closeAll();
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
}

/**
 * vCPUs of a VM unless its caller says: $KEEL_VM_CPUS, else 2. Under TCG one VM alone boots faster
 * with 2 (the project's 2-core machine: 467 s to keel's cloud-init done, 558 s with 1), but VMs that
 * run side by side do better with 1 each (two at once: 716 s each with 1 vCPU, over 950 s with 2:
 * the guests' spinning vCPUs steal the cores from each other). The VM tier sets 1 (docs/VM.md).
 */
export function defaultCpus(): number {
  const env = process.env.KEEL_VM_CPUS;
  if (env === undefined || env === "") return 2;
  if (!/^[1-8]$/.test(env)) throw new Error(`KEEL_VM_CPUS: expected a number of vCPUs from 1 to 8, got "${env}"`);
  return Number(env);
}

/** What a VM runs on, beyond its disk: a snapshot must be resumed on exactly this. */
export interface VmShape {
  readonly image: ImageInfo;
  readonly memoryMiB: number;
  readonly cpus: number;
  readonly accel: Accel;
  /** qemu's -cpu: the host's own CPU under KVM, tcgCpuModel() under TCG. */
  readonly cpuModel: string;
}

/**
 * The CPU model TCG emulates. qemu64 (x86-64 baseline: SSE2, no AVX) rather than max: with max the
 * guest's glibc picks its AVX2/EVEX string functions, which TCG runs far slower than the SSE2 ones
 * (docs/VM.md "The CPU model under TCG": a bare boot 33 s against 47 s, a fork/exec, perl, python
 * and dpkg mix 33 s against 38 s, `npm run bench:tcg`). Debian 12 and 13 need nothing above the
 * baseline; what keel configures does not depend on the CPU's features. An engine whose wheels need
 * more (x86-64-v2 and up, as a Hetzner CPU has) sets KEEL_VM_TCG_CPU, e.g. Nehalem (v2) or max.
 */
export function tcgCpuModel(): string {
  const env = process.env.KEEL_VM_TCG_CPU;
  if (env === undefined || env === "") return "qemu64";
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(env)) throw new Error(`KEEL_VM_TCG_CPU: expected a qemu CPU model name such as qemu64, Nehalem or max, got "${env}"`);
  return env;
}

/**
 * The guest address qemu forwards to this machine's time source (local/vm/ntp-responder.js, one
 * process per connection); keel-vm-time in the image relays timesyncd's requests there.
 */
export const TIME_SOURCE = { address: "10.0.2.100", port: 123 } as const;
const NTP_RESPONDER = path.join(__dirname, "ntp-responder.js");

/**
 * Boots `image` under qemu with `userData` on a NoCloud seed: a copy-on-write overlay (the cached
 * image stays clean), user networking with restrict=on (no way out of the guest), each
 * forwarded guest port on a free port of 127.0.0.1, the serial console to a file. Everything
 * lives in a fresh directory under the system temp dir, removed by shutdown() and, should this
 * process end first, by an exit handler that also kills qemu.
 */
export async function bootVm(opts: BootOptions): Promise<Vm> {
  const accel = await chooseAccel(opts.image, opts.accel);
  const shape: VmShape = { image: opts.image, memoryMiB: opts.memoryMiB ?? 1024, cpus: opts.cpus ?? defaultCpus(), accel, cpuModel: accel === "kvm" ? "host" : tcgCpuModel() };
  return launch(opts, shape, async (dir) => {
    await execFileAsync("qemu-img", ["create", "-q", "-f", "qcow2", "-F", opts.image.format,
      "-b", opts.image.image, path.join(dir, "overlay.qcow2"), `${opts.diskGiB ?? 10}G`]);
    await makeSeed(dir, opts.userData, opts.metaData ?? defaultMetaData());
  });
}

/** Where a VM's connections go: the login, the pinned key, the forwarded guest ports. */
export type ResumeOptions = Pick<BootOptions, "hostPublicKey" | "login" | "sshGuestPort" | "extraHostForwards" | "detachable">;

/**
 * Starts a new VM from a snapshot (Vm.snapshot): the guest goes on exactly where the snapshot
 * stopped it, in its own copy-on-write overlay over the snapshot's disk, so any number of VMs can
 * start from one snapshot. Its forwarded ports are new; its clock is stepped to this machine's
 * within seconds by keel-vm-time (waitForClock waits for that).
 */
export async function resumeVm(snapshotDir: string, opts: ResumeOptions): Promise<Vm> {
  const snapshot = readSnapshot(snapshotDir);
  return launch(opts, snapshot.shape, async (dir) => {
    await execFileAsync("qemu-img", ["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", path.join(snapshotDir, "disk.qcow2"), path.join(dir, "overlay.qcow2")]);
    fs.copyFileSync(path.join(snapshotDir, "seed.iso"), path.join(dir, "seed.iso"));
    fs.chmodSync(path.join(dir, "seed.iso"), 0o600);
  }, path.join(snapshotDir, "state"));
}

async function launch(opts: ResumeOptions, shape: VmShape, prepare: (dir: string) => Promise<void>, incoming?: string): Promise<Vm> {
  const hostPublicKey = parsePublicKey(opts.hostPublicKey);
  const sshGuestPort = opts.sshGuestPort ?? 22;
  const guestPorts = [...new Set([sshGuestPort, ...(opts.extraHostForwards ?? []).map((f) => f.guestPort)])];
  for (const port of guestPorts) {
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`guest port: expected 1..65535, got ${port}`);
  }
  sweepOrphans();

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), VM_DIR_PREFIX));
  registerDir(dir);
  writeState({ dir, ownerPid: process.pid });
  try {
    await prepare(dir);
    for (let attempt = 1; ; attempt++) {
      const ports = new Map<number, number>();
      for (const guestPort of guestPorts) ports.set(guestPort, await freePort());
      const child = startQemu(dir, shape, ports, opts.detachable ?? false, incoming);
      const started = await waitForQmp(dir, child);
      if (started) {
        const pid = child.pid as number;
        writeState({ dir, ownerPid: process.pid, pid, accel: shape.accel, ports: Object.fromEntries(ports) });
        const vm = new Vm(dir, pid, shape, sshGuestPort, ports, hostPublicKey, opts.login, child, opts.detachable ?? false);
        if (incoming) await vm.waitForIncoming();
        return vm;
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

/** qemu's -netdev/-device option syntax doubles a comma inside a value. */
const qemuValue = (s: string) => s.replace(/,/g, ",,");

function startQemu(dir: string, shape: VmShape, ports: ReadonlyMap<number, number>, detachable: boolean, incoming?: string): ChildProcess {
  const forwards = [...ports].map(([guest, host]) => `hostfwd=tcp:127.0.0.1:${host}-:${guest}`);
  // The only way out of the guest: its time source, answered on this machine (not a port here).
  const timeSource = `guestfwd=tcp:${TIME_SOURCE.address}:${TIME_SOURCE.port}-cmd:${qemuValue(`${process.execPath} ${NTP_RESPONDER}`)}`;
  const qemuArgs = [
    "-name", vmName(dir),
    "-nodefaults", "-no-user-config", "-display", "none",
    "-machine", "q35",
    "-accel", shape.accel === "kvm" ? "kvm" : "tcg,thread=multi",
    "-cpu", shape.cpuModel,
    "-smp", String(shape.cpus),
    "-m", String(shape.memoryMiB),
    "-kernel", shape.image.kernel,
    "-initrd", shape.image.initrd,
    "-append", shape.image.cmdline,
    // cache=unsafe: the guest's flushes are not passed on. A test VM's disk is thrown away; what a
    // crash of this machine could lose is never wanted again.
    "-drive", `file=${qemuValue(path.join(dir, "overlay.qcow2"))},if=virtio,format=qcow2,discard=unmap,cache=unsafe`,
    "-drive", `file=${qemuValue(path.join(dir, "seed.iso"))},if=virtio,format=raw,readonly=on`,
    "-netdev", ["user", "id=net0", "restrict=on", ...forwards, timeSource].join(","),
    "-device", "virtio-net-pci,netdev=net0",
    "-device", "virtio-rng-pci",
    "-serial", `file:${path.join(dir, "serial.log")}`,
    "-qmp", `unix:${path.join(dir, "qmp.sock")},server=on,wait=off`,
    ...(incoming ? ["-incoming", `exec:cat ${shellQuote(incoming)}`] : []),
  ];
  const log = fs.openSync(path.join(dir, "qemu.log"), "a");
  try {
    if (detachable) {
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

/** The version of snapshot.json: 2 added the shape's cpuModel (a resume must run the same CPU). */
const SNAPSHOT_FORMAT = 2;

/** snapshot.json in a snapshot directory: what the snapshot's VM ran on. */
interface SnapshotFile {
  readonly version: typeof SNAPSHOT_FORMAT;
  readonly shape: VmShape;
}

function readSnapshot(snapshotDir: string): SnapshotFile {
  let file: SnapshotFile;
  try {
    file = JSON.parse(fs.readFileSync(path.join(snapshotDir, "snapshot.json"), "utf8")) as SnapshotFile;
  } catch (err) {
    throw new Error(`${snapshotDir} is not a VM snapshot (no readable snapshot.json: ${(err as Error).message})`);
  }
  if (file.version !== SNAPSHOT_FORMAT) throw new Error(`${snapshotDir}: snapshot format ${String(file.version)}, this runner reads ${SNAPSHOT_FORMAT}`);
  // Image cache entries are never modified, only removed: the entry must still be there.
  for (const f of [file.shape.image.image, file.shape.image.kernel, file.shape.image.initrd]) {
    if (!fs.existsSync(f)) throw new Error(`${snapshotDir}: its image file ${f} is gone; the snapshot cannot be resumed`);
  }
  return file;
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
  // The directory removed below is the one the state names: it must be the one asked for.
  if (!/^\d+$/.test(pidOrDir) && path.resolve(state.dir) !== path.resolve(pidOrDir)) {
    throw new Error(`${pidOrDir}: its VM state names another directory (${state.dir}); nothing stopped or removed`);
  }
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
