/**
 * keel without a Hetzner account: boots a local Debian VM with the same user-data keel sends to
 * Hetzner, runs the same converge steps over SSH, prints the stack outputs and the host's health
 * report, and leaves the VM running to explore; the runbook works against it.
 *
 *   npm run demo                 boot and deploy (Debian 12; --release trixie for Debian 13), or,
 *                                while the demo VM runs, converge it again as `pulumi up` would
 *   npm run demo:down            stop the VM and remove its files
 *
 * The demo deploys keel's sample engine (test/fixtures/engine). Its keys, secret, step state and
 * stack outputs live in $KEEL_DEMO_DIR (default ~/.cache/keel/demo); the VM image and a snapshot
 * of the demo's first boot are cached by the VM runner (docs/VM.md), so a later demo starts from
 * the finished first boot.
 * Exit codes: 0 done, 1 failed (the reason on stderr), 2 usage.
 */
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { knownHostsLine } from "../components/keel";
import { sshPorts, type KeelConfig } from "../config";
import { buildHostPlan } from "../plan/hostPlan";
import { hostPaths } from "../plan/layout";
import { renderEnvFile } from "../plan/secrets";
import { toolPath } from "../plan/tools";
import type { SecretName } from "../plan/types";
import { engineRepository, keyPair, localConfig, localUserData, pushEngineRepository, SAMPLE_ENGINE, VM_REPO_PATH, type KeyPair } from "./localStack";
import { runSteps, type StepRun } from "./runSteps";
import { attachVm, buildImage, firstBoot, RELEASES, stopVm, type Release, type VmSession, type VmState } from "./vm";
import { isOurQemu } from "./vm/qemu";

const USAGE = "usage: npm run demo [-- --release bookworm|trixie]   |   npm run demo:down";
const MINUTE = 60_000;

function demoDir(): string {
  return process.env.KEEL_DEMO_DIR ?? path.join(os.homedir(), ".cache", "keel", "demo");
}

/** The files of a demo, all in its directory. */
function files(dir: string) {
  return {
    /** The running VM (written when the demo leaves it running). */
    vm: path.join(dir, "vm.json"),
    /** The Debian release the running VM was booted from. */
    release: path.join(dir, "release"),
    /** What each step last ran with: the demo's Pulumi state (runSteps' engine mode). */
    steps: path.join(dir, "steps-state.json"),
    /** The engine's secret environment, made once per demo directory. */
    secretEnv: path.join(dir, "secret-env.json"),
    /** `pulumi stack output --json` for the demo VM: what the runbook reads. */
    outputs: path.join(dir, "stack-outputs.json"),
    knownHosts: path.join(dir, "keel_known_hosts"),
  };
}

function readJson<T>(file: string): T | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, "utf8")) as T;
  } catch {
    return undefined;
  }
}

function writePrivate(file: string, content: string): void {
  fs.writeFileSync(`${file}.tmp`, content, { mode: 0o600 });
  fs.renameSync(`${file}.tmp`, file);
}

interface Demo {
  readonly dir: string;
  readonly admin: KeyPair;
  readonly host: KeyPair;
  readonly deploy: KeyPair;
  readonly commit: string;
  readonly bundle: string;
  readonly cfg: KeelConfig;
  readonly secrets: Record<SecretName, string>;
}

/** The demo's stack: its keys and secret (made once, kept in the demo directory) and config. */
function demoStack(release: Release): Demo {
  const dir = demoDir();
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const f = files(dir);
  const admin = keyPair(dir, "admin");
  const host = keyPair(dir, "host");
  const deploy = keyPair(dir, "deploy");
  const { commit, bundle } = engineRepository(SAMPLE_ENGINE, dir);
  let secretEnv = readJson<Record<string, string>>(f.secretEnv);
  if (!secretEnv) {
    secretEnv = { ENGINE_API_KEY: randomBytes(16).toString("hex") };
    writePrivate(f.secretEnv, `${JSON.stringify(secretEnv)}\n`);
  }
  const cfg = localConfig({ release, adminKey: admin.publicKey, repoRef: commit, secretEnv });
  const secrets = { envFile: renderEnvFile(secretEnv), deployKey: deploy.privateKey, alertWebhook: "" };
  return { dir, admin, host, deploy, commit, bundle, cfg, secrets };
}

async function up(asked: Release | undefined): Promise<void> {
  const log = (line: string) => process.stderr.write(`demo: ${line}\n`);
  const f = files(demoDir());
  const running = readJson<VmState>(f.vm);
  const alive = running?.pid !== undefined && isOurQemu(running.pid, running.dir);
  const runningRelease = alive && fs.existsSync(f.release) ? (fs.readFileSync(f.release, "utf8").trim() as Release) : undefined;
  if (asked && runningRelease && asked !== runningRelease) {
    throw new Error(`the demo VM that runs is ${runningRelease}, not ${asked}; stop it first with: npm run demo:down`);
  }
  const release = asked ?? runningRelease ?? "bookworm";
  const demo = demoStack(release);
  const login = { user: demo.cfg.deployUser, identityFile: demo.admin.file };

  let session: VmSession;
  let state: VmState;
  let booted: Awaited<ReturnType<typeof firstBoot>> | undefined;
  if (running && alive) {
    log(`the demo VM is running (${running.dir}): converging it again, as pulumi up would`);
    session = attachVm(running, { hostPublicKey: demo.host.publicKey, login });
    state = running;
  } else {
    if (running) {
      log(`the demo VM of ${running.dir} is gone; starting a new one (every step runs again on it)`);
      // What the dead VM left (its disk, its user-data with the host key): removed, when the
      // directory still holds a keel VM's state (stopVm reads it first); anything else stays.
      await stopVm(running.dir).catch(() => undefined);
    }
    // The step state stays, as Pulumi's does when the engine replaces a server: every remote step
    // runs again on the new VM because its identity (the VM's directory) is among their inputs, as
    // the Hetzner server's id is among their triggers (components/hostSteps.ts).
    for (const file of [f.vm, f.release, f.outputs]) fs.rmSync(file, { force: true });
    log(`building or reusing the ${release} image (the first build: a few minutes)`);
    const image = await buildImage({ release });
    booted = await firstBoot({
      image,
      userData: localUserData(demo.cfg, demo.host),
      hostPublicKey: demo.host.publicKey,
      login,
      detachable: true,
      allowRecoverable: true,
      timeoutMs: 40 * MINUTE,
      log,
    });
    session = booted.vm;
    state = booted.vm.detach();
    writePrivate(f.vm, `${JSON.stringify(state, null, 2)}\n`);
    writePrivate(f.release, `${release}\n`);
  }

  try {
    // The demo's stand-in for the git host: the engine's repository on the VM itself.
    if ((await session.exec(`git -C ${VM_REPO_PATH} cat-file -e ${demo.commit}^{commit}`)).code !== 0) {
      log("pushing the sample engine's repository to the VM (the demo's git host)");
      await pushEngineRepository(session, demo.bundle);
    }
    const plan = buildHostPlan(demo.cfg);
    const runs = await runSteps(session, plan.steps, demo.secrets, { stateFile: f.steps, serverId: session.dir, firewall: sshPorts(demo.cfg), log });
    process.stdout.write(`\n${whatChanged(runs, plan.steps.length)}\n`);

    const port = session.sshPort();
    const knownHosts = knownHostsLine(["127.0.0.1"], port, demo.host.publicKey);
    fs.writeFileSync(f.knownHosts, `${knownHosts}\n`);
    const outputs = {
      ipv4: "127.0.0.1",
      sshPort: port,
      // The ports sshd serves inside the VM (keel:sshPort there); sshPort above is qemu's forward.
      sshPorts: sshPorts(demo.cfg),
      deployUser: demo.cfg.deployUser,
      sshCommand: `ssh -o StrictHostKeyChecking=yes -o UserKnownHostsFile=${f.knownHosts} -o GlobalKnownHostsFile=/dev/null -o IdentitiesOnly=yes -i ${demo.admin.file} -p ${port} ${demo.cfg.deployUser}@127.0.0.1`,
      knownHosts,
      deployPublicKey: demo.deploy.publicKey,
      serviceName: hostPaths(demo.cfg).unit,
      paths: hostPaths(demo.cfg),
    };
    writePrivate(f.outputs, `${JSON.stringify(outputs, null, 2)}\n`);
    process.stdout.write(`\nStack outputs (as pulumi stack output --json prints them; also in ${f.outputs}):\n${JSON.stringify(outputs, null, 2)}\n`);
    const health = await session.exec(`sudo ${toolPath("health")}`, { timeoutMs: 2 * MINUTE });
    process.stdout.write(`\nHealth report (keel-health, exit ${health.code}):\n${health.stdout}${health.stderr}`);
    process.stdout.write(
      `\nThe VM keeps running. Log in:\n  ${outputs.sshCommand}\n` +
        `The runbook (docs/RUNBOOK.md) works against it with these two lines:\n` +
        `  export KEEL_STACK_OUTPUT=${f.outputs}\n  export KEEL_SSH_IDENTITY=${demo.admin.file}\n` +
        `then, e.g., scripts/runbook/status.sh or scripts/runbook/logs.sh\n` +
        `Run npm run demo again to converge it as pulumi up would. Stop it:\n  npm run demo:down\n`,
    );
  } catch (err) {
    // A VM this run booted goes with the failure; one that was already running stays.
    if (booted) {
      await stopVm(state.dir);
      for (const file of [f.vm, f.release]) fs.rmSync(file, { force: true });
    }
    throw err;
  } finally {
    session.disconnect();
  }
}

/** What the converge did, in an operator's words: the steps that ran and what each said. */
export function whatChanged(runs: readonly StepRun[], total: number): string {
  if (runs.length === 0) return `0 steps to run: all ${total} steps ran before with the same inputs; nothing changed.`;
  const lines = runs.map((r) => `  ${r.name}: ${r.stdout.trim().split("\n").slice(-1)[0] || "(done)"}`);
  return `${runs.length} of ${total} steps ran (their inputs changed or they had not run):\n${lines.join("\n")}`;
}

async function down(): Promise<void> {
  const f = files(demoDir());
  const state = readJson<VmState>(f.vm);
  if (!state) {
    process.stdout.write("no demo VM is running\n");
    return;
  }
  // A VM whose files are gone (the machine rebooted, /tmp was cleaned) has nothing left to stop.
  if (fs.existsSync(state.dir)) await stopVm(state.dir);
  for (const file of [f.vm, f.release, f.steps, f.outputs]) fs.rmSync(file, { force: true });
  process.stdout.write(`stopped the demo VM and removed ${state.dir}\n`);
}

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: { release: { type: "string" }, help: { type: "boolean", short: "h" } } });
  const release = values.release as Release | undefined;
  if (values.help || positionals.length > 1 || (release && !RELEASES.includes(release)) || (positionals[0] && !["up", "down"].includes(positionals[0]))) {
    process.stderr.write(`${USAGE}\n`);
    return values.help ? 0 : 2;
  }
  if (positionals[0] === "down") await down();
  else await up(release);
  return 0;
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: Error) => {
      process.stderr.write(`demo: ${err.message}\n`);
      process.exit(1);
    },
  );
}
