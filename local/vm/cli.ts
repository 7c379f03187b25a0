// The local VM runner's command line (`npm run vm -- ...`). Exit codes: 0 done, 1 failed,
// 2 usage error.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { buildImage, RELEASES, type Release } from "./image";
import { bootVm, stopVm } from "./vm";

const USAGE = `usage: npm run vm -- build [--release bookworm|trixie]
       npm run vm -- boot --user-data FILE --host-key-pub FILE [--release bookworm|trixie]
                          [--user NAME] [--identity FILE] [--ssh-port N] [--memory MiB] [--cpus N]
       npm run vm -- stop PID-or-DIR

build  builds (or finds in the cache, $KEEL_VM_CACHE or ~/.cache/keel/vm) the Debian image.
boot   boots it with the user-data on a NoCloud seed, waits for cloud-init, prints the ssh
       command line and leaves the VM running. --user defaults to deploy, --identity to
       ~/.ssh/id_ed25519, --ssh-port (the guest's sshd port) to 22.
stop   powers off a VM that boot started (by its qemu PID or its directory) and removes its files.`;

class UsageError extends Error {}

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      release: { type: "string", default: "bookworm" },
      "user-data": { type: "string" },
      "host-key-pub": { type: "string" },
      user: { type: "string", default: "deploy" },
      identity: { type: "string", default: path.join(os.homedir(), ".ssh", "id_ed25519") },
      "ssh-port": { type: "string", default: "22" },
      memory: { type: "string" },
      cpus: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const [command, ...rest] = positionals;
  const release = values.release as Release;
  if (!RELEASES.includes(release)) throw new UsageError(`--release: expected ${RELEASES.join(" or ")}, got "${release}"`);
  const progress = (chunk: string) => process.stderr.write(chunk);

  switch (command) {
    case "build": {
      const image = await buildImage({ release, onOutput: progress });
      console.log(`${image.fromCache ? "cached" : "built"}: ${image.image} (kernel ${image.kernelVersion})`);
      return 0;
    }
    case "boot": {
      const userData = requireFile(values["user-data"], "--user-data");
      const hostKey = requireFile(values["host-key-pub"], "--host-key-pub");
      const image = await buildImage({ release, onOutput: progress });
      const started = Date.now();
      const vm = await bootVm({
        image,
        userData: fs.readFileSync(userData, "utf8"),
        hostPublicKey: fs.readFileSync(hostKey, "utf8"),
        login: { user: values.user as string, identityFile: values.identity as string },
        sshGuestPort: toInt(values["ssh-port"] as string, "--ssh-port"),
        memoryMiB: values.memory === undefined ? undefined : toInt(values.memory, "--memory"),
        cpus: values.cpus === undefined ? undefined : toInt(values.cpus, "--cpus"),
        detachable: true,
      });
      console.error(`qemu PID ${vm.pid} (${vm.accel}), serial console: ${path.join(vm.dir, "serial.log")}`);
      try {
        const status = await vm.waitForCloudInit();
        console.error(`cloud-init ${status.status} after ${Math.round((Date.now() - started) / 1000)} s`);
      } catch (err) {
        await vm.shutdown();
        throw err;
      }
      vm.detach();
      console.log(`ssh:  ${vm.sshCommandLine()}`);
      console.log(`qemu PID: ${vm.pid}`);
      console.log(`stop: npm run vm -- stop ${vm.dir}`);
      return 0;
    }
    case "stop": {
      if (rest.length !== 1) throw new UsageError("stop: give one qemu PID or VM directory");
      const state = await stopVm(rest[0]);
      console.log(`stopped ${state.pid ?? "(no qemu)"}, removed ${state.dir}`);
      return 0;
    }
    default:
      throw new UsageError(command === undefined ? "no command given" : `unknown command "${command}"`);
  }
}

function requireFile(file: string | undefined, flag: string): string {
  if (file === undefined) throw new UsageError(`${flag} FILE is required`);
  if (!fs.existsSync(file)) throw new UsageError(`${flag}: no such file: ${file}`);
  return file;
}

function toInt(value: string, flag: string): number {
  if (!/^\d+$/.test(value)) throw new UsageError(`${flag}: expected a whole number, got "${value}"`);
  return Number(value);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")) {
      console.error(`vm: ${(err as Error).message}\n${USAGE}`);
      process.exit(2);
    }
    console.error(`vm: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
