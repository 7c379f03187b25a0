import * as fs from "node:fs";
import * as path from "node:path";
import { defaultCacheDir } from "./image";
import { withDirLock } from "./lock";
import { bootVm, defaultCpus, resumeVm, tcgCpuModel, type BootOptions, type CloudInitStatus, type ResumeOptions, type Vm } from "./vm";
import { sha256 } from "../../plan/hash";

/** Bump when what a first-boot snapshot holds changes (a new field in the key changes it already). */
const FIRST_BOOT_FORMAT = 1;

export interface FirstBootOptions extends Omit<BootOptions, "metaData"> {
  /** For cloud-init's first boot to finish. Defaults to 30 minutes. */
  readonly timeoutMs?: number;
  /** Accept cloud-init's recoverable errors (see Vm.waitForCloudInit). Defaults to false. */
  readonly allowRecoverable?: boolean;
  /** Where first-boot snapshots are kept. Defaults to $KEEL_FIRST_BOOT_CACHE, else <VM cache>/first-boots. */
  readonly cacheDir?: string;
  /** Progress lines ("booting…", "resuming…"). */
  readonly log?: (line: string) => void;
}

export interface FirstBoot {
  readonly vm: Vm;
  /** True when the VM was resumed from an earlier first boot of the same user-data. */
  readonly resumed: boolean;
  /** Seconds until the VM was ready: the whole first boot, or the resume. */
  readonly seconds: number;
  /** cloud-init's status at the end of the first boot (read again on a resumed VM). */
  readonly cloudInit: CloudInitStatus;
}

export function firstBootCacheDir(): string {
  return process.env.KEEL_FIRST_BOOT_CACHE || path.join(defaultCacheDir(), "first-boots");
}

/**
 * The cache key of a first boot: everything that decides what the guest is once cloud-init is
 * done. The instance-id derives from the user-data, so the same user-data is the same instance.
 */
export function firstBootKey(opts: FirstBootOptions): string {
  return sha256(
    JSON.stringify({
      format: FIRST_BOOT_FORMAT,
      image: opts.image.key,
      userData: opts.userData,
      memoryMiB: opts.memoryMiB ?? 1024,
      cpus: opts.cpus ?? defaultCpus(),
      diskGiB: opts.diskGiB ?? 10,
      accel: opts.accel ?? "auto",
      tcgCpu: tcgCpuModel(),
    }),
  );
}

/**
 * A VM whose first boot with `userData` is done: resumed in seconds from a snapshot of an earlier
 * first boot of exactly this user-data on this image (Vm.snapshot, resumeVm), or booted for real,
 * waited for, and snapshotted for the next caller. Callers in other processes asking for the same
 * first boot at the same time wait for the one that boots (a lock directory beside the entry), so
 * a first boot runs once. The real first boot is what `cloud-init` does on Hetzner; a resumed VM
 * is that same machine at that same moment, its clock stepped to now by keel-vm-time.
 *
 * A snapshot holds the guest's secrets (its host private key, in memory and on disk): entries are
 * 0700 directories of 0600 files, in the caller's cache.
 */
export async function firstBoot(opts: FirstBootOptions): Promise<FirstBoot> {
  const log = opts.log ?? (() => undefined);
  const key = firstBootKey(opts);
  const cache = path.resolve(opts.cacheDir ?? firstBootCacheDir());
  const entry = path.join(cache, key.slice(0, 24));
  fs.mkdirSync(cache, { recursive: true, mode: 0o700 });
  const started = Date.now();
  const timeoutMs = opts.timeoutMs ?? 30 * 60_000;

  const booted = await withDirLock(
    `${entry}.lock`,
    async (): Promise<FirstBoot | "snapshot"> => {
      log("first boot: booting the image with the user-data and waiting for cloud-init");
      const metaData = `instance-id: keel-${key.slice(0, 16)}\nlocal-hostname: keel-vm\n`;
      const vm = await bootVm({ ...opts, metaData });
      try {
        const cloudInit = await vm.waitForCloudInit(timeoutMs, { allowRecoverable: opts.allowRecoverable });
        const seconds = (Date.now() - started) / 1000;
        log(`first boot done in ${Math.round(seconds)} s; keeping a snapshot of it for the next time`);
        await vm.snapshot(entry);
        return { vm, resumed: false, seconds, cloudInit };
      } catch (err) {
        await vm.shutdown();
        throw err;
      }
    },
    // Another process's first boot of the same user-data finished: resume from it instead.
    { timeoutMs, ready: () => (fs.existsSync(entry) ? "snapshot" : undefined) },
  );
  if (booted !== "snapshot") return booted;

  log(`resuming the first boot ${path.basename(entry)} from its snapshot`);
  const vm = await resumeReady(entry, opts);
  try {
    const cloudInit = await vm.cloudInitStatus();
    return { vm, resumed: true, seconds: (Date.now() - started) / 1000, cloudInit };
  } catch (err) {
    await vm.shutdown();
    throw err;
  }
}

/**
 * A VM resumed from the snapshot `entry` (Vm.snapshot) once it answers SSH and its clock is this
 * machine's again; shut down again if it does not.
 */
export async function resumeReady(entry: string, opts: ResumeOptions): Promise<Vm> {
  const vm = await resumeVm(entry, opts);
  try {
    await vm.waitForSsh(5 * 60_000);
    await vm.waitForClock();
    return vm;
  } catch (err) {
    await vm.shutdown();
    throw err;
  }
}
