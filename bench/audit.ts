// Audit benchmark (issue 6): boots a Debian VM with keel's real first-boot payload and prints what
// an auditor would measure. Asserts nothing; the figures go to docs/HARDENING.md "Measured".
//   - boot to cloud-init done (this machine's clock, and the guest's uptime at boot-finished)
//   - ssh-audit (this machine's) against the forwarded SSH port: failures and warnings
//   - systemd-analyze security ssh.service in the guest
//   - Lynis (the guest's Debian package, `lynis audit system --quick`, default profile, as root):
//     hardening index, warnings, suggestions. ~11 min under TCG.
//
// Usage: npx ts-node --transpile-only bench/audit.ts [bookworm|trixie]     (default bookworm)
// Exit: 0 figures printed; 1 the VM did not boot or a tool failed to run.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  MINUTE,
  QEMU_HOST_CIDR,
  asRoot,
  bootKeelVm,
  cloudInitProblems,
  installRootHelper,
  keyPair,
  sh,
  vmStackConfig,
} from "../test/vm/support/keelVm";

const IMAGES = { bookworm: "debian-12", trixie: "debian-13" } as const;

function section(title: string): void {
  console.log(`\n== ${title}`);
}

async function main(): Promise<void> {
  const release = (process.argv[2] ?? "bookworm") as keyof typeof IMAGES;
  if (!(release in IMAGES)) throw new Error(`usage: bench/audit.ts [bookworm|trixie]; got "${release}"`);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "keel-audit-"));
  try {
    const admin = keyPair(tmp, "admin");
    const hostKey = keyPair(tmp, "host");
    const cfg = vmStackConfig({ image: IMAGES[release], adminKeys: [admin.publicKey], allowedSshCidrs: [QEMU_HOST_CIDR] });
    const { vm, bootToCloudInitSeconds } = await bootKeelVm({ cfg, hostKey, identityFile: admin.file });
    try {
      await installRootHelper(vm);
      section(`boot (${IMAGES[release]}, ${vm.accel})`);
      const finished = (await asRoot(vm, "cat /var/lib/cloud/instance/boot-finished")).split(" ")[0];
      const { status, logProblems } = await cloudInitProblems(vm);
      console.log(`qemu start to cloud-init boot-finished: ${bootToCloudInitSeconds} s (this machine's clock)`);
      console.log(`guest uptime at boot-finished: ${Math.round(Number(finished))} s`);
      console.log(`cloud-init: ${status.status}, ${status.errors.length} error(s), log problems: ${JSON.stringify(logProblems)}`);
      console.log((await sh(vm, "systemd-analyze time")).trim());

      section("ssh-audit (this machine's) against the forwarded SSH port");
      const audit = spawnSync("ssh-audit", ["-n", "-t", "30", "-p", String(vm.sshPort()), "127.0.0.1"], { encoding: "utf8", timeout: 5 * MINUTE });
      console.log((audit.stdout.match(/^# general[\s\S]*?\n\n/m)?.[0] ?? "").trim());
      const flagged = audit.stdout.split("\n").filter((l) => /-- \[(fail|warn)\]/.test(l));
      console.log(`${flagged.filter((l) => /\[fail\]/.test(l)).length} fail, ${flagged.filter((l) => /\[warn\]/.test(l)).length} warn`);
      for (const l of flagged) console.log(l);

      section("systemd-analyze security ssh.service (in the guest)");
      const security = await sh(vm, "systemd-analyze security ssh.service --no-pager");
      console.log(security.trim().split("\n").slice(-1)[0]);

      section("Lynis (the guest's Debian package), lynis audit system --quick");
      // Lynis is in the image's offline repository, not in keel's payload: the audit tool is not
      // part of the audited host.
      await asRoot(vm, "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends lynis", { timeoutMs: 10 * MINUTE });
      const started = Date.now();
      await asRoot(vm, "lynis audit system --quick --no-colors > /var/log/lynis-run.log 2>&1", { timeoutMs: 45 * MINUTE });
      console.log(`ran in ${Math.round((Date.now() - started) / 1000)} s; ${(await sh(vm, "dpkg-query -W -f '${Version}' lynis"))}`);
      const report = await asRoot(vm, "cat /var/log/lynis-report.dat");
      const values = (key: string) => report.split("\n").filter((l) => l.startsWith(`${key}=`)).map((l) => l.slice(key.length + 1));
      console.log(`hardening index: ${values("hardening_index")[0]}`);
      console.log(`tests performed: ${values("lynis_tests_done")[0]}`);
      const warnings = values("warning[]");
      const suggestions = values("suggestion[]");
      console.log(`warnings (${warnings.length}):`);
      for (const w of warnings) console.log(`  ${w}`);
      console.log(`suggestions (${suggestions.length}):`);
      for (const s of suggestions) console.log(`  ${s}`);
      const log = await asRoot(vm, "cat /var/log/lynis.log");
      const kept = path.join(os.homedir(), ".cache", "keel", "audit");
      fs.mkdirSync(kept, { recursive: true });
      fs.writeFileSync(path.join(kept, `lynis-${release}.log`), log);
      fs.writeFileSync(path.join(kept, `lynis-report-${release}.dat`), report);
      console.log(`Lynis log and report kept in ${kept}`);
      const lost = pointsLost(log);
      console.log(`hardening points: ${lost.points} of ${lost.total}; lost per test (test: lost of max):`);
      for (const [test, { lost: l, max }] of [...lost.byTest].sort((a, b) => b[1].lost - a[1].lost)) {
        console.log(`  ${test}: ${l} of ${max}`);
      }
    } finally {
      await vm.shutdown();
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/** Sums Lynis' partial hardening points per test from its log (functions: AddHP). */
export function pointsLost(log: string): { points: number; total: number; byTest: Map<string, { lost: number; max: number }> } {
  const byTest = new Map<string, { lost: number; max: number }>();
  let test = "?";
  let points = 0;
  let total = 0;
  for (const line of log.split("\n")) {
    const started = /Performing test ID (\S+)/.exec(line);
    if (started) test = started[1];
    const partial = /assigned partial number of hardening points \((\d+) of (\d+)\)\. Currently having (\d+) points \(out of (\d+)\)/.exec(line);
    const full = /assigned maximum number of hardening points for this item \((\d+)\)\. Currently having (\d+) points \(out of (\d+)\)/.exec(line);
    if (partial) {
      const entry = byTest.get(test) ?? { lost: 0, max: 0 };
      entry.lost += Number(partial[2]) - Number(partial[1]);
      entry.max += Number(partial[2]);
      byTest.set(test, entry);
      points = Number(partial[3]);
      total = Number(partial[4]);
    } else if (full) {
      points = Number(full[2]);
      total = Number(full[3]);
    }
  }
  return { points, total, byTest };
}

main().catch((err: unknown) => {
  console.error(`bench/audit: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
