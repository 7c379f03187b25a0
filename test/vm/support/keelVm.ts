// Shared helpers for the VM tests (tier 3): throwaway SSH keys, a stack config for a VM, a boot
// with keel's real user-data (renderCloudConfig, byte for byte what Hetzner would get), root in
// the guest through a test-only keel tool, and ssh with options of the test's own choosing.
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { renderCloudConfig } from "../../../cloud-init/userData";
import { parseConfig, type KeelConfig } from "../../../config";
import { engineRepository, git, keyPair, localConfig, localUserData, pushEngineRepository, QEMU_HOST_CIDR, SAMPLE_ENGINE, type KeyPair } from "../../../local/localStack";
import { runSteps, type StepRun } from "../../../local/runSteps";
import { bootVm, buildImage, firstBoot, GuestPanicError, resumeReady, type CloudInitStatus, type Release, type Vm, type VmSession } from "../../../local/vm";
import { withDirLock } from "../../../local/vm/lock";
import { type ExecResult, runSsh, sshArgs, writePrivateFile, knownHostsLine } from "../../../local/vm/ssh";
import { logProblems, parseCloudInitStatus } from "../../../local/vm/vm";
import { sha256, stableJson } from "../../../plan/hash";
import { buildHostPlan } from "../../../plan/hostPlan";
import { IMAGE_FACTS } from "../../../images";
import { renderEnvFile } from "../../../plan/secrets";
import { toolPath } from "../../../plan/tools";
import type { SecretName } from "../../../plan/types";
import { CANARY } from "../../support/stack";

export { keyPair, type KeyPair };

export const MINUTE = 60_000;

/**
 * How long keel's first boot may take under TCG. It varies several-fold with the machine's day
 * (docs/VM.md "Timings": Debian 12's 317 s alone on a good day, 1232-1918 s on slow ones; a CI run's
 * Debian 13 first boot was still configuring packages at 1800 s), so the limit only catches a hang.
 */
export const FIRST_BOOT_LIMIT = 45 * MINUTE;
/** A beforeAll that builds an image (or waits for its build) and then first boots, or waits for that. */
export const FIRST_BOOT_HOOK_LIMIT = FIRST_BOOT_LIMIT + 10 * MINUTE;

/** Under qemu's user networking every connection from this machine reaches the guest from here. */
export { QEMU_HOST_CIDR };

/** The Debian release each keel image is built from. */
export const RELEASE_OF = { "debian-12": "bookworm", "debian-13": "trixie" } as const satisfies Record<string, Release>;

/**
 * A validated stack config for a VM: the keys a test cares about, plus placeholders for the engine
 * keys the schema requires (the hardening tests deploy no engine). Values as Pulumi hands them over:
 * arrays and objects as JSON, numbers as strings.
 */
export function vmStackConfig(keys: {
  image: "debian-12" | "debian-13";
  adminKeys: readonly string[];
  allowedSshCidrs: readonly string[];
  retiredKeys?: readonly string[];
  sshPort?: number;
  minFreeDiskGiB?: number;
}): KeelConfig {
  return parseConfig({
    "keel:image": keys.image,
    "keel:adminKeys": JSON.stringify(keys.adminKeys),
    "keel:retiredKeys": JSON.stringify(keys.retiredKeys ?? []),
    "keel:allowedSshCidrs": JSON.stringify(keys.allowedSshCidrs),
    "keel:sshPort": String(keys.sshPort ?? 22),
    "keel:minFreeDiskGiB": String(keys.minFreeDiskGiB ?? 1),
    "keel:repoUrl": "file:///home/deploy/engine.git",
    "keel:repoRef": "0123456789abcdef0123456789abcdef01234567",
    "keel:pythonVersion": IMAGE_FACTS[keys.image].python,
    "keel:startCommand": "python -m engine",
    "keel:protect": "false",
  });
}

export interface KeelVm {
  readonly vm: Vm;
  /** The user-data the VM booted with, as renderCloudConfig rendered it. */
  readonly userData: string;
  /** Seconds from starting qemu to cloud-init's boot-finished, as seen from this machine. */
  readonly bootToCloudInitSeconds: number;
}

/**
 * Boots the image for `cfg.image` with keel's real user-data and `hostKey` pinned, logs in as the
 * deploy user with `identityFile`, and waits for cloud-init's first boot to end (status done, no
 * error). After a guest kernel panic it boots a fresh VM once more. Recoverable errors are not
 * judged here: cloud-init's log is root-only once keel's first boot ran, so read them with
 * cloudInitProblems once a root helper is in place.
 */
export async function bootKeelVm(opts: {
  cfg: KeelConfig;
  hostKey: KeyPair;
  identityFile: string;
  extraGuestPorts?: readonly number[];
  timeoutMs?: number;
}): Promise<KeelVm> {
  const image = await buildImage({ release: RELEASE_OF[opts.cfg.image as keyof typeof RELEASE_OF] });
  const userData = renderCloudConfig(opts.cfg, { privateKey: opts.hostKey.privateKey, publicKey: opts.hostKey.publicKey });
  for (let attempt = 1; ; attempt++) {
    const started = Date.now();
    const vm = await bootVm({
      image,
      userData,
      hostPublicKey: opts.hostKey.publicKey,
      login: { user: opts.cfg.deployUser, identityFile: opts.identityFile },
      sshGuestPort: opts.cfg.sshPort,
      extraHostForwards: (opts.extraGuestPorts ?? []).map((guestPort) => ({ guestPort })),
    });
    try {
      await vm.waitForCloudInit(opts.timeoutMs ?? FIRST_BOOT_LIMIT, { allowRecoverable: true });
      return { vm, userData, bootToCloudInitSeconds: Math.round((Date.now() - started) / 1000) };
    } catch (err) {
      await vm.shutdown();
      // A guest kernel panic during the first boot has been the emulator's fault (TCG), not the
      // user-data's: boot a fresh overlay once more, and say so. A second panic fails the test.
      if (err instanceof GuestPanicError && attempt === 1) {
        console.warn(`bootKeelVm: ${err.message.split("\n")[0]}; booting a fresh VM once more`);
        continue;
      }
      throw err;
    }
  }
}

export interface DeployableVm {
  readonly vm: Vm;
  /** A fresh directory on this machine for the test's files (keys, known_hosts, DBs); rmSync it in afterAll. */
  readonly tmp: string;
  /** The stack config the first boot's user-data was rendered from (testHostConfig). */
  readonly cfg: KeelConfig;
  readonly admin: KeyPair;
  readonly hostKey: KeyPair;
  /** The private half of the engine repository's read-only deploy key (the `deployKey` secret). */
  readonly deployKey: string;
  /** The sample engine's commit, as pushed to the VM's stand-in git host (keel:repoRef). */
  readonly commit: string;
  /** True when this VM was resumed from the run's snapshot of the first boot (the usual case). */
  readonly resumed: boolean;
}

export interface DeployableVmOptions {
  readonly extraGuestPorts?: readonly number[];
  /** The image's offline repository (buildImage); defaults to DEFAULT_REPO_PACKAGES. A benchmark adds its audit tool here. */
  readonly repoPackages?: readonly string[];
}

/**
 * The directory one test run shares between its files (vitest.config.mts sets KEEL_TEST_RUN_DIR and
 * removes it at the end): the run's keys, and snapshots of the first boots its VMs start from.
 */
export function testRunDir(): string {
  const dir = process.env.KEEL_TEST_RUN_DIR ?? path.join(tmpdir(), `keel-test-run-${process.pid}`);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  // Its name is predictable and it will hold keys and memory snapshots with host private keys: it
  // must be a directory of this user's that nobody else can enter, not something made beforehand.
  const st = fs.lstatSync(dir);
  if (!st.isDirectory() || st.uid !== process.getuid?.() || (st.mode & 0o077) !== 0) {
    throw new Error(`${dir}: expected a directory of uid ${process.getuid?.()} with mode 0700 (KEEL_TEST_RUN_DIR); found ${st.isSymbolicLink() ? "a symlink" : `uid ${st.uid}, mode ${(st.mode & 0o777).toString(8)}`}. Remove it or point KEEL_TEST_RUN_DIR elsewhere`);
  }
  return dir;
}

/** The run's admin, host and deploy keys, made once per run (under a lock: test files run in parallel). */
export async function testRunKeys(): Promise<{ admin: KeyPair; host: KeyPair; deploy: KeyPair; dir: string }> {
  const dir = path.join(testRunDir(), "keys");
  const make = () => ({ admin: keyPair(dir, "admin"), host: keyPair(dir, "host"), deploy: keyPair(dir, "deploy"), dir });
  return withDirLock(`${dir}.lock`, async () => {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const keys = make();
    fs.writeFileSync(path.join(dir, "done"), "");
    return keys;
  }, { timeoutMs: MINUTE, ready: () => (fs.existsSync(path.join(dir, "done")) ? make() : undefined) });
}

/**
 * The stack config of the run's Debian 12 test host: the demo's (localConfig) with the run's admin
 * key and the sample engine's commit. Its user-data is what every Debian 12 VM of the run first
 * boots with (and `npm run demo` too, given the run's keys), so they share one first boot.
 */
export function testHostConfig(adminKey: string, commit: string, overrides: Record<string, string> = {}, secretEnv: Record<string, string> = { ENGINE_API_KEY: "test-host-key" }): KeelConfig {
  return localConfig({ release: "bookworm", adminKey, repoRef: commit, overrides, secretEnv });
}

/**
 * A Debian 12 VM whose first boot with keel's real user-data (testHostConfig) is done, ready for
 * the host plan's steps: resumed from the run's snapshot of that first boot (firstBoot; the first
 * caller of a run boots for real and takes the snapshot, the others wait for it), with the root
 * helper and the engine's repository pushed. Each caller gets its own VM.
 */
export async function deployableVm(name: string, opts: DeployableVmOptions & { repository?: { commit: string; bundle: string } } = {}): Promise<DeployableVm> {
  const tmp = fs.mkdtempSync(path.join(tmpdir(), `keel-${name}-vm-`));
  try {
    const keys = await testRunKeys();
    const repo = opts.repository ?? engineRepository(SAMPLE_ENGINE, tmp);
    const cfg = testHostConfig(keys.admin.publicKey, repo.commit);
    const image = await buildImage({ release: "bookworm", repoPackages: opts.repoPackages });
    const booted = await firstBoot({
      image,
      userData: localUserData(cfg, keys.host),
      hostPublicKey: keys.host.publicKey,
      login: { user: cfg.deployUser, identityFile: keys.admin.file },
      cacheDir: path.join(testRunDir(), "first-boots"),
      extraHostForwards: (opts.extraGuestPorts ?? []).map((guestPort) => ({ guestPort })),
      allowRecoverable: true,
      timeoutMs: FIRST_BOOT_LIMIT,
      log: (line) => console.log(`${name} VM: ${line}`),
    });
    console.log(`${name} VM: ${booted.resumed ? "resumed from the run's first boot" : "first boot done"} in ${Math.round(booted.seconds)} s (${booted.vm.accel})`);
    try {
      await installRootHelper(booted.vm);
      await pushEngineRepository(booted.vm, repo.bundle);
    } catch (err) {
      await booted.vm.shutdown();
      throw err;
    }
    return { vm: booted.vm, tmp, cfg, admin: keys.admin, hostKey: keys.host, deployKey: keys.deploy.privateKey, commit: repo.commit, resumed: booted.resumed };
  } catch (err) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
}

/** The deployed test host's engine secrets: the canary (tests hunt for it) and a second key. */
export const TEST_HOST_SECRET_ENV = { ENGINE_API_KEY: CANARY, ENGINE_DB_KEY: "second-secret-4b1e" } as const;
/** The deployed test host's alert webhook: a listener on the guest's loopback (guestServices.ts), started by the tests that need it. */
export const TEST_HOST_WEBHOOK = { port: 8787, token: "hook-token-5d1c9a", url: "http://127.0.0.1:8787/hooks/hook-token-5d1c9a" } as const;

/**
 * The stack config of the deployed test host: testHostConfig with the health check and backups on
 * a yearly schedule (the tests run them; nothing fires meanwhile) and TEST_HOST_SECRET_ENV.
 * `overrides` are a later up's changes.
 */
export function deployedHostConfig(adminKey: string, commit: string, overrides: Record<string, string> = {}): KeelConfig {
  return testHostConfig(
    adminKey,
    commit,
    {
      "keel:healthSchedule": "yearly",
      "keel:backupSchedule": "yearly",
      ...overrides,
    },
    TEST_HOST_SECRET_ENV,
  );
}

/** The sample engine as a git repository of two commits, the second a change of code only (VERSION 2). */
export function twoCommitRepository(dir: string): { commits: [string, string]; bundle: string } {
  // The sample engine's one-commit repository (engineRepository), then the second commit on top.
  const { commit: first } = engineRepository(SAMPLE_ENGINE, dir);
  const src = path.join(dir, "engine");
  fs.writeFileSync(path.join(src, "VERSION"), "2\n");
  git(src, "add", "VERSION");
  git(src, "commit", "-q", "-m", "sample engine, second commit");
  const bundle = path.join(dir, "engine-two-commits.bundle");
  git(src, "bundle", "create", "-q", bundle, "main");
  return { commits: [first, git(src, "rev-parse", "HEAD")], bundle };
}

export interface DeployedTestHost extends DeployableVm {
  /** The config the whole plan was deployed with (deployedHostConfig at the first commit). */
  readonly cfg: KeelConfig;
  readonly secrets: Record<SecretName, string>;
  /** The engine repository's two commits; the first is deployed. */
  readonly commits: readonly [string, string];
  /** The deploy's step runs, in order: this VM's own, or those of the VM whose snapshot it continues. */
  readonly runs: readonly StepRun[];
  /** True when this VM ran the deploy; false when it was resumed from the run's snapshot of it. */
  readonly deployedHere: boolean;
}

/**
 * A Debian 12 VM with the whole host plan deployed (deployedHostConfig, TEST_HOST_SECRET_ENV, the
 * webhook URL of TEST_HOST_WEBHOOK): the first caller of a run resumes the run's first boot, runs
 * every step as `pulumi up` runs them, and keeps a snapshot of the result; later callers (other
 * test files, in parallel) wait for it and continue from it, each in a VM of its own. A deploy is
 * minutes under TCG; a resume is seconds. The snapshot holds the secrets: it lives in the run's
 * private directory (testRunDir) and goes with it.
 */
export async function deployedTestHost(name: string, opts: DeployableVmOptions = {}): Promise<DeployedTestHost> {
  const keys = await testRunKeys();
  const repoDir = fs.mkdtempSync(path.join(tmpdir(), `keel-${name}-repo-`));
  try {
    const repo = twoCommitRepository(repoDir);
    const cfg = deployedHostConfig(keys.admin.publicKey, repo.commits[0]);
    const secrets: Record<SecretName, string> = { deployKey: keys.deploy.privateKey, envFile: renderEnvFile(TEST_HOST_SECRET_ENV), alertWebhook: TEST_HOST_WEBHOOK.url };
    const steps = buildHostPlan(cfg).steps;
    const key = sha256(stableJson({ steps: steps.map((s) => s.hash), secrets: sha256(stableJson(secrets)), commits: repo.commits, repoPackages: opts.repoPackages ?? null }));
    const cache = path.join(testRunDir(), "deployed");
    fs.mkdirSync(cache, { recursive: true, mode: 0o700 });
    const entry = path.join(cache, key.slice(0, 24));
    const runsFile = `${entry}.runs.json`;
    const login = { user: cfg.deployUser, identityFile: keys.admin.file };

    const failedFile = `${entry}.failed`;
    const made = await withDirLock<DeployedTestHost | "resume">(
      `${entry}.lock`,
      async () => {
        const d = await deployableVm(name, { ...opts, repository: { commit: repo.commits[0], bundle: repo.bundle } });
        try {
          const started = Date.now();
          const runs = await runSteps(d.vm, steps, secrets);
          console.log(`${name} VM: the whole plan deployed in ${Math.round((Date.now() - started) / 1000)} s; keeping a snapshot of it for the run's other files`);
          fs.writeFileSync(runsFile, JSON.stringify(runs), { mode: 0o600 });
          await d.vm.snapshot(entry);
          return { ...d, cfg, secrets, commits: repo.commits, runs, deployedHere: true };
        } catch (err) {
          // The files waiting for this deploy fail at once with its reason, not after deploying again.
          fs.writeFileSync(failedFile, `${name}: ${err instanceof Error ? err.message : String(err)}`.slice(0, 4000), { mode: 0o600 });
          await d.vm.shutdown();
          fs.rmSync(d.tmp, { recursive: true, force: true });
          throw err;
        }
      },
      // Another file's deploy of the same plan finished: continue from its snapshot instead; or it failed: say why.
      {
        timeoutMs: FIRST_BOOT_HOOK_LIMIT + 30 * MINUTE,
        ready: () => {
          if (fs.existsSync(failedFile)) throw new Error(`the run's deploy of the test host failed in ${fs.readFileSync(failedFile, "utf8")}`);
          return fs.existsSync(entry) ? ("resume" as const) : undefined;
        },
      },
    );
    if (made !== "resume") return made;

    const runs = JSON.parse(fs.readFileSync(runsFile, "utf8")) as StepRun[];
    const started = Date.now();
    const vm = await resumeReady(entry, { hostPublicKey: keys.host.publicKey, login, extraHostForwards: (opts.extraGuestPorts ?? []).map((guestPort) => ({ guestPort })) });
    console.log(`${name} VM: resumed from the run's deployed test host in ${Math.round((Date.now() - started) / 1000)} s (${vm.accel})`);
    const tmp = fs.mkdtempSync(path.join(tmpdir(), `keel-${name}-vm-`));
    return { vm, tmp, cfg, secrets, commits: repo.commits, runs, deployedHere: false, admin: keys.admin, hostKey: keys.host, deployKey: keys.deploy.privateKey, commit: repo.commits[0], resumed: true };
  } finally {
    fs.rmSync(repoDir, { recursive: true, force: true });
  }
}

/** Polls `probe` every second until `ok` holds, for at most `ms`; throws with the last value then. */
export async function waitFor<T>(what: string, probe: () => Promise<T>, ok: (v: T) => boolean, ms = 60_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`${what}: still ${JSON.stringify(v)} after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 1000));
  }
}

/** Runs `command` as the login user and returns its stdout; throws with the output on a non-zero exit. */
export async function sh(vm: VmSession, command: string, opts: { stdin?: string; timeoutMs?: number } = {}): Promise<string> {
  const r = await vm.exec(command, { timeoutMs: 2 * MINUTE, ...opts });
  if (r.code !== 0) throw new Error(`${command} (exit ${r.code}):\n${r.stdout}${r.stderr}`);
  return r.stdout;
}

/**
 * The test-only root helper: `sudo keel-test-root CMD…` runs CMD as root, with a root login's
 * umask (022) rather than the 0077 keel's sudo defaults pass on, as an admin's root shell has.
 */
export const ROOT_HELPER = "/usr/local/sbin/keel-test-root";

/**
 * Places ROOT_HELPER through keel-place, as keel places its own tools: the deploy user's sudo is
 * limited to /usr/local/sbin/keel-*, so this is the tests' way to root in the guest. Not part of
 * keel's plan; a VM that has it is a test VM.
 */
export async function installRootHelper(vm: VmSession): Promise<void> {
  await sh(vm, `sudo ${toolPath("place")}`, { stdin: ROOT_HELPER_BUNDLE });
}

/** keel-place's bundle that installs ROOT_HELPER. */
export const ROOT_HELPER_BUNDLE = stableJson({ files: [{ path: ROOT_HELPER, owner: "root", group: "root", mode: "0755", content: '#!/bin/sh\numask 022\nexec "$@"\n' }] });

/** Runs the shell command line `command` as root in the guest (needs installRootHelper). */
export function asRoot(vm: VmSession, command: string, opts: { stdin?: string; timeoutMs?: number } = {}): Promise<string> {
  return sh(vm, `sudo ${ROOT_HELPER} sh -c ${shellQuote(command)}`, opts);
}

/** Like asRoot, but returns the result whatever the exit status. */
export function tryAsRoot(vm: VmSession, command: string, opts: { timeoutMs?: number } = {}): Promise<ExecResult> {
  return vm.exec(`sudo ${ROOT_HELPER} sh -c ${shellQuote(command)}`, { timeoutMs: 2 * MINUTE, ...opts });
}

export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * cloud-init's status and its log's WARNING/ERROR lines, read as root (keel's first boot makes the
 * log 0600; the runner's own check, as the login user, cannot read it then). Needs installRootHelper.
 */
export async function cloudInitProblems(vm: Vm): Promise<{ status: CloudInitStatus; logProblems: Record<string, string[]> }> {
  const r = await tryAsRoot(vm, "cloud-init status --format json");
  const status = parseCloudInitStatus(r.stdout);
  const log = await asRoot(vm, "cat /var/log/cloud-init.log", { timeoutMs: MINUTE });
  return { status, logProblems: logProblems(log) };
}

/**
 * ssh to the guest's forwarded port with the test's own extra options (given first, so they win
 * over the runner's defaults such as ConnectTimeout), pinning `hostPublicKey`. For what Vm.exec cannot express, such as offering only
 * password authentication.
 */
export function sshWith(
  vm: Vm,
  dir: string,
  opts: { user: string; identityFile: string; hostPublicKey: string; options?: readonly string[]; guestPort?: number },
  command = "true",
): Promise<ExecResult> {
  const port = vm.sshPort(opts.guestPort);
  const knownHosts = path.join(dir, `known_hosts.${port}.${opts.hostPublicKey.split(" ")[1].slice(-12).replace(/[^A-Za-z0-9]/g, "_")}`);
  writePrivateFile(knownHosts, knownHostsLine(port, opts.hostPublicKey));
  const args = sshArgs({ port, login: { user: opts.user, identityFile: opts.identityFile }, knownHostsFile: knownHosts });
  return runSsh([...(opts.options ?? []), ...args], command, undefined, 3 * MINUTE);
}
