/**
 * keel without a Hetzner account: boots a local Debian VM with the same user-data keel sends to
 * Hetzner, runs the same converge steps over SSH, prints the stack outputs and the host's health
 * report, and leaves the VM running to explore.
 *
 *   npm run demo                 boot and deploy (Debian 12; --release trixie for Debian 13)
 *   npm run demo:down            stop the VM and remove its files
 *
 * The demo deploys keel's sample engine (test/fixtures/engine). Its keys and state live in
 * $KEEL_DEMO_DIR (default ~/.cache/keel/demo); the VM image is cached by the VM runner.
 * Exit codes: 0 done, 1 failed (the reason on stderr), 2 usage.
 */
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { buildHostPlan } from "../plan/hostPlan";
import { hostPaths } from "../plan/layout";
import { renderEnvFile } from "../plan/secrets";
import { toolPath } from "../plan/tools";
import { engineRepository, keyPair, localConfig, localUserData, pushEngineRepository, SAMPLE_ENGINE } from "./localStack";
import { runSteps } from "./runSteps";
import { bootVm, buildImage, RELEASES, stopVm, type Release, type VmState } from "./vm";

const USAGE = "usage: npm run demo [-- --release bookworm|trixie]   |   npm run demo:down";
const MINUTE = 60_000;

function demoDir(): string {
  return process.env.KEEL_DEMO_DIR ?? path.join(os.homedir(), ".cache", "keel", "demo");
}

const statePath = () => path.join(demoDir(), "vm.json");

function readState(): VmState | undefined {
  try {
    return JSON.parse(fs.readFileSync(statePath(), "utf8")) as VmState;
  } catch {
    return undefined;
  }
}

async function up(release: Release): Promise<void> {
  const dir = demoDir();
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const running = readState();
  if (running) {
    throw new Error(`a demo VM is already running (${running.dir}); stop it first with: npm run demo:down`);
  }
  const log = (line: string) => process.stderr.write(`demo: ${line}\n`);

  const admin = keyPair(dir, "admin");
  const host = keyPair(dir, "host");
  const deploy = keyPair(dir, "deploy");
  const { commit, bundle } = engineRepository(SAMPLE_ENGINE, dir);
  const secretEnv = { ENGINE_API_KEY: randomBytes(16).toString("hex") };
  const cfg = localConfig({ release, adminKey: admin.publicKey, repoRef: commit, secretEnv });

  log(`building or reusing the ${release} image (first build: a few minutes)`);
  const image = await buildImage({ release });
  log("booting the VM with keel's user-data (under TCG about a minute to cloud-init done)");
  const vm = await bootVm({ image, userData: localUserData(cfg, host), hostPublicKey: host.publicKey, login: { user: cfg.deployUser, identityFile: admin.file }, detachable: true });
  try {
    await vm.waitForCloudInit(20 * MINUTE, { allowRecoverable: true });
    log("first boot done; pushing the sample engine's repository to the VM");
    await pushEngineRepository(vm, bundle);
    const plan = buildHostPlan(cfg);
    log(`running the ${plan.steps.length} steps of the host plan, as pulumi up would`);
    await runSteps(vm, plan.steps, { envFile: renderEnvFile(secretEnv), deployKey: deploy.privateKey, alertWebhook: "" }, log);

    const port = vm.sshPort();
    const knownHostsFile = path.join(dir, "keel_known_hosts");
    fs.writeFileSync(knownHostsFile, `[127.0.0.1]:${port} ${host.publicKey}\n`);
    const outputs = {
      ipv4: "127.0.0.1",
      sshPort: port,
      deployUser: cfg.deployUser,
      sshCommand: `ssh -o StrictHostKeyChecking=yes -o UserKnownHostsFile=${knownHostsFile} -o IdentitiesOnly=yes -i ${admin.file} -p ${port} ${cfg.deployUser}@127.0.0.1`,
      knownHosts: `[127.0.0.1]:${port} ${host.publicKey}`,
      deployPublicKey: deploy.publicKey,
      serviceName: hostPaths(cfg).unit,
      paths: hostPaths(cfg),
    };
    process.stdout.write(`\nStack outputs (as pulumi stack output --json prints them):\n${JSON.stringify(outputs, null, 2)}\n`);
    const health = await vm.exec(`sudo ${toolPath("health")}`, { timeoutMs: 2 * MINUTE });
    process.stdout.write(`\nHealth report (keel-health, exit ${health.code}):\n${health.stdout}${health.stderr}`);
    process.stdout.write("(The demo VM has no way out to the Internet, so its clock cannot synchronize: the time check reads DEGRADED here and ok on a real server.)\n");
    const state = vm.detach();
    fs.writeFileSync(statePath(), JSON.stringify(state, null, 2) + "\n");
    process.stdout.write(`\nThe VM keeps running. Log in:\n  ${outputs.sshCommand}\nStop it:\n  npm run demo:down\n`);
  } catch (err) {
    await vm.shutdown();
    throw err;
  }
}

async function down(): Promise<void> {
  const state = readState();
  if (!state) {
    process.stdout.write("no demo VM is running\n");
    return;
  }
  // A VM whose files are gone (the machine rebooted, /tmp was cleaned) has nothing left to stop.
  if (fs.existsSync(state.dir)) await stopVm(state.dir);
  fs.rmSync(statePath(), { force: true });
  process.stdout.write(`stopped the demo VM and removed ${state.dir}\n`);
}

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: { release: { type: "string", default: "bookworm" }, help: { type: "boolean", short: "h" } } });
  const release = values.release as Release;
  if (values.help || positionals.length > 1 || !RELEASES.includes(release) || (positionals[0] && !["up", "down"].includes(positionals[0]))) {
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
