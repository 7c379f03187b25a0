import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { registerChild, unregisterChild } from "./cleanup";

/** Debian releases the runner can build: Debian 12 and Debian 13. */
export type Release = "bookworm" | "trixie";
export const RELEASES: readonly Release[] = ["bookworm", "trixie"];

/**
 * Packages the offline apt repository inside the image holds (with their dependencies), so that
 * cloud-init's package steps succeed in a VM without network. The payload settles the final
 * list; until then this is a generous superset of what a hardened host installs.
 */
export const DEFAULT_REPO_PACKAGES: readonly string[] = [
  "ufw", "fail2ban", "python3-systemd", "python3-gi", "nftables", "iptables", "unattended-upgrades",
  "apt-listchanges", "chrony", "sqlite3", "git", "python3-venv", "python3-pip", "lynis",
  "needrestart", "debsums", "apt-show-versions", "acct", "sysstat", "auditd", "rkhunter",
  "libpam-tmpdir",
  // The integrity-package step installs it (plan/integrity.ts), without aide-common.
  "aide",
  // Not keel's payload: keel-compliance installs it on a live host when asked (docs/COMPLIANCE.md).
  "openscap-scanner",
  // keel:https's https-package step installs Caddy (plan/https.ts); the VM tier's ACME server is pebble.
  "caddy",
  "pebble",
];

/** A built image in the cache. Every path is absolute; nothing in the cache is ever modified. */
export interface ImageInfo {
  readonly release: Release;
  /** sha256 of the build inputs (release, package list, build script); names the cache entry. */
  readonly key: string;
  readonly dir: string;
  /** Root filesystem (ext4, label keel-root) on the whole disk, no bootloader. */
  readonly image: string;
  readonly format: "qcow2";
  readonly kernel: string;
  readonly initrd: string;
  readonly kernelVersion: string;
  /** Kernel command line for qemu's direct kernel boot. */
  readonly cmdline: string;
  readonly repoPackages: readonly string[];
  /** Seconds the build took when this entry was built. */
  readonly buildSeconds: number;
  /** True when this call found the image in the cache. */
  readonly fromCache: boolean;
}

export interface BuildImageOptions {
  readonly release: Release;
  /** Defaults to DEFAULT_REPO_PACKAGES. */
  readonly repoPackages?: readonly string[];
  /** Defaults to $KEEL_VM_CACHE, else ~/.cache/keel/vm. */
  readonly cacheDir?: string;
  /** Receives the build's output as it comes (it also goes to `<entry>.build.log`). */
  readonly onOutput?: (chunk: string) => void;
}

export const BUILD_SCRIPT = path.join(__dirname, "build-image.sh");
const KERNEL_CMDLINE = "root=/dev/vda ro console=ttyS0,115200n8 net.ifnames=0";
const PACKAGE_NAME = /^[a-z0-9][a-z0-9+.-]+$/;

export function defaultCacheDir(): string {
  return process.env.KEEL_VM_CACHE || path.join(os.homedir(), ".cache", "keel", "vm");
}

/** The VM-only files the build bakes into the image (the time source relay). */
export const GUEST_FILES_DIR = path.join(__dirname, "guest");

/** The cache key: a change to the release, the package list, the build script or a guest file builds anew. */
export function imageKey(release: Release, repoPackages: readonly string[]): string {
  const sha = (file: string) => createHash("sha256").update(fs.readFileSync(file)).digest("hex");
  const inputs = JSON.stringify({
    release,
    repoPackages: normalisePackages(repoPackages),
    script: sha(BUILD_SCRIPT),
    guest: fs.readdirSync(GUEST_FILES_DIR).sort().map((name) => [name, sha(path.join(GUEST_FILES_DIR, name))]),
  });
  return createHash("sha256").update(inputs).digest("hex");
}

function normalisePackages(packages: readonly string[]): string[] {
  for (const name of packages) {
    if (!PACKAGE_NAME.test(name)) {
      throw new Error(`repoPackages: "${name}" is not a Debian package name (expected ${PACKAGE_NAME})`);
    }
  }
  return [...new Set(packages)].sort();
}

/**
 * Builds the image for these inputs unless the cache has it, and describes it. Concurrent calls
 * for the same inputs (in this or other processes) build once: the script holds a lock, builds
 * in a temporary directory and renames it into place.
 */
export async function buildImage(opts: BuildImageOptions): Promise<ImageInfo> {
  if (!RELEASES.includes(opts.release)) {
    throw new Error(`release: expected one of ${RELEASES.join(", ")}, got "${opts.release}"`);
  }
  const packages = normalisePackages(opts.repoPackages ?? DEFAULT_REPO_PACKAGES);
  const key = imageKey(opts.release, packages);
  const cacheDir = path.resolve(opts.cacheDir ?? defaultCacheDir());
  const dir = path.join(cacheDir, "images", `${opts.release}-${key.slice(0, 16)}`);
  if (fs.existsSync(dir)) return describe(dir, opts.release, key, packages, true);

  fs.mkdirSync(path.dirname(dir), { recursive: true });
  const logFile = `${dir}.build.log`;
  await runBuild([BUILD_SCRIPT, opts.release, dir, ...packages], logFile, opts.onOutput);
  return describe(dir, opts.release, key, packages, false);
}

function runBuild(args: string[], logFile: string, onOutput?: (chunk: string) => void): Promise<void> {
  const log = fs.createWriteStream(logFile);
  return new Promise((resolve, reject) => {
    // Own process group, so a cleanup at exit can end the whole build (debootstrap, apt, ...).
    const child = spawn("bash", args, { stdio: ["ignore", "pipe", "pipe"], detached: true });
    const pid = child.pid;
    if (pid !== undefined) registerChild({ pid, group: true });
    const write = (chunk: Buffer) => {
      log.write(chunk);
      onOutput?.(chunk.toString());
    };
    child.stdout.on("data", write);
    child.stderr.on("data", write);
    child.on("error", (err) => {
      log.end();
      reject(new Error(`image build could not start: ${err.message}`));
    });
    child.on("close", (code, signal) => {
      if (pid !== undefined) unregisterChild(pid);
      log.end(() => {
        if (code === 0) return resolve();
        const tail = fs.readFileSync(logFile, "utf8").split("\n").slice(-40).join("\n");
        reject(new Error(
          `image build failed (${signal ?? `exit ${code}`}); full log: ${logFile}\n--- last lines ---\n${tail}`,
        ));
      });
    });
  });
}

function describe(dir: string, release: Release, key: string, repoPackages: string[], fromCache: boolean): ImageInfo {
  const read = (name: string) => fs.readFileSync(path.join(dir, name), "utf8").trim();
  return {
    release,
    key,
    dir,
    image: path.join(dir, "image.qcow2"),
    format: "qcow2",
    kernel: path.join(dir, "vmlinuz"),
    initrd: path.join(dir, "initrd.img"),
    kernelVersion: read("kernel-version"),
    cmdline: KERNEL_CMDLINE,
    repoPackages,
    buildSeconds: Number(read("build-seconds")),
    fromCache,
  };
}
