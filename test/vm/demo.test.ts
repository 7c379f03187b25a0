// Tier 3: the README's "try it without a Hetzner account" path, run as a user runs it: `npm run
// demo` (a VM with keel's user-data, the whole plan deployed, outputs and a healthy report, the VM
// left running), the printed ssh command, the runbook against the VM with the two lines the demo
// prints, a second `npm run demo` that converges and says nothing changed, the server replaced (its
// qemu gone: a new VM, every step again from the same step state), keel verify, keel compliance
// (OpenSCAP with the tailored ANSSI BP-028 profile), keel verify on a host broken on purpose, then
// `npm run demo:down`.
// The demo directory holds the run's test keys, so the demo's user-data is the run's test host's
// and its first boot resumes from the run's snapshot of it (support/keelVm.ts deployableVm; the
// demo's own first boot, from the image, is local/vm/firstBoot.ts, the same code).
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readStatic } from "../../plan/static";
import { REPO } from "../support/stack";
import { FIRST_BOOT_HOOK_LIMIT, MINUTE, ROOT_HELPER, ROOT_HELPER_BUNDLE, shellQuote, testRunDir, testRunKeys } from "./support/keelVm";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keel-demo-"));
const env = { ...process.env, KEEL_DEMO_DIR: dir, KEEL_FIRST_BOOT_CACHE: path.join(testRunDir(), "first-boots") };

/** The state letter of a process in /proc/PID/stat (R, S, Z, …), or "gone". */
function processState(pid: number): string {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
  } catch {
    return "gone";
  }
}

function npm(script: string) {
  return spawnSync("npm", ["run", "--silent", script], { cwd: REPO, env, encoding: "utf8", timeout: FIRST_BOOT_HOOK_LIMIT });
}

interface Report {
  status: string;
  checks: Record<string, { status: string; summary: string }>;
}

beforeAll(async () => {
  const keys = await testRunKeys();
  for (const name of ["admin", "host", "deploy"]) {
    for (const suffix of ["", ".pub"]) fs.copyFileSync(path.join(keys.dir, name + suffix), path.join(dir, name + suffix));
  }
}, MINUTE);

afterAll(() => {
  // Whatever happened, leave no VM behind.
  if (fs.existsSync(path.join(dir, "vm.json"))) npm("demo:down");
  fs.rmSync(dir, { recursive: true, force: true });
}, 5 * MINUTE);

describe("npm run demo", () => {
  let outputs: Record<string, unknown>;
  const runbookEnv = () => ({ ...process.env, KEEL_STACK_OUTPUT: path.join(dir, "stack-outputs.json"), KEEL_SSH_IDENTITY: path.join(dir, "admin"), KEEL_KNOWN_HOSTS: path.join(dir, "runbook_known_hosts") });

  /**
   * The printed ssh command's arguments, with root on the VM for the test: its helper placed
   * through keel-place, the one way the deploy user's sudo allows (support/keelVm.ts installRootHelper).
   */
  function rootOnDemo(): string[] {
    const current = JSON.parse(fs.readFileSync(path.join(dir, "stack-outputs.json"), "utf8")) as { sshCommand: string };
    const args = [...current.sshCommand.split(" ").slice(1), "-o", "BatchMode=yes"];
    const placed = spawnSync("ssh", [...args, "sudo /usr/local/sbin/keel-place"], { input: ROOT_HELPER_BUNDLE, encoding: "utf8", timeout: 5 * MINUTE });
    expect(placed.status, placed.stderr).toBe(0);
    return args;
  }

  it("deploys the whole plan on a local VM, writes the stack outputs and prints a healthy report and the runbook's two lines", () => {
    const r = npm("demo");
    expect(r.status, r.stderr).toBe(0);
    outputs = JSON.parse(fs.readFileSync(path.join(dir, "stack-outputs.json"), "utf8")) as Record<string, unknown>;
    expect(outputs).toMatchObject({ ipv4: "127.0.0.1", deployUser: "deploy", serviceName: "engine.service" });
    expect(r.stdout).toContain(JSON.stringify(outputs, null, 2));
    // Every check ok, time included: the VM keeps time from this machine's clock (docs/VM.md "Time").
    expect(r.stdout).toMatch(/Health report \(keel-health, exit 0\):\nkeel-health: engine on \S+ at \S+: HEALTHY \(exit 0\)\n/);
    expect(r.stdout).toContain(`  export KEEL_STACK_OUTPUT=${path.join(dir, "stack-outputs.json")}\n  export KEEL_SSH_IDENTITY=${path.join(dir, "admin")}\n`);
    expect(r.stdout).toContain("npm run demo:down");
    expect(r.stderr).toMatch(/demo: resuming the first boot|demo: first boot done/);
  }, FIRST_BOOT_HOOK_LIMIT + 5 * MINUTE);

  it("leaves the VM running: the printed ssh command logs in with the pinned key, the engine is active, every check ok", () => {
    const command = String(outputs.sshCommand);
    expect(command).toContain("StrictHostKeyChecking=yes");
    const args = command.split(" ").slice(1);
    const out = execFileSync("ssh", [...args, "-o", "BatchMode=yes", "systemctl is-active engine.service"], { encoding: "utf8", timeout: 2 * MINUTE });
    expect(out.trim()).toBe("active");
    const health = spawnSync("ssh", [...args, "-o", "BatchMode=yes", "sudo /usr/local/sbin/keel-health --json"], { encoding: "utf8", timeout: 5 * MINUTE });
    const report = JSON.parse(health.stdout) as Report;
    const notOk = Object.entries(report.checks).filter(([, c]) => c.status !== "ok");
    expect(notOk).toEqual([]);
    expect(report.checks.time.summary).toBe("clock synchronized (NTP)");
  }, 5 * MINUTE);

  it("hands over to the runbook: status, logs and a backup run with the printed lines, no login banner in their output", () => {
    const banner = readStatic("cloud-init/files/banner.txt").split("\n")[0];
    for (const [script, args] of [["status.sh", ["--json"]], ["logs.sh", ["-n", "5"]], ["backup-now.sh", []], ["snapshot.sh", []]] as const) {
      const r = spawnSync("bash", [path.join(REPO, "scripts", "runbook", script), ...args], { cwd: dir, env: runbookEnv(), encoding: "utf8", timeout: 5 * MINUTE });
      expect(r.status, `${script}: ${r.stderr}`).toBe(0);
      expect(`${r.stdout}${r.stderr}`, script).not.toContain(banner);
    }
  }, 20 * MINUTE);

  it("converges the running VM on a second run and says that nothing changed", () => {
    const again = npm("demo");
    expect(again.status, again.stderr).toBe(0);
    expect(again.stderr).toContain("demo: the demo VM is running");
    expect(again.stdout).toMatch(/^0 steps to run: all \d+ steps ran before with the same inputs; nothing changed\.$/m);
    expect(again.stdout).toMatch(/Health report \(keel-health, exit 0\):\nkeel-health: engine on \S+ at \S+: HEALTHY \(exit 0\)\n/);
  }, 15 * MINUTE);

  it("replaces a server that is gone, as the engine does when it replaces one: a new VM, every step again in plan order (readiness first) from the same step state; healthy", () => {
    const state = JSON.parse(fs.readFileSync(path.join(dir, "vm.json"), "utf8")) as { dir: string; pid: number };
    const steps = JSON.parse(fs.readFileSync(path.join(dir, "steps-state.json"), "utf8")) as { steps: Record<string, unknown> };
    const total = Object.keys(steps.steps).length;
    // The server goes away under the stack (this test's own qemu).
    process.kill(state.pid, "SIGKILL");
    for (let i = 0; i < 100 && !/^(gone|Z|X)$/.test(processState(state.pid)); i++) spawnSync("sleep", ["0.1"]);
    const replaced = npm("demo");
    expect(replaced.status, replaced.stderr).toBe(0);
    expect(replaced.stderr).toContain(`demo: the demo VM of ${state.dir} is gone; starting a new one`);
    // The dead VM's files (its disk, its user-data) went with it.
    expect(fs.existsSync(state.dir)).toBe(false);
    // Only the server's identity changed, and with it every step's inputs: all of them ran, in plan order.
    expect(replaced.stdout).toContain(`${total} of ${total} steps ran (their inputs changed or they had not run):\n  ready: cloud-init done\n  tools:`);
    expect(replaced.stdout).toMatch(/Health report \(keel-health, exit 0\):\nkeel-health: engine on \S+ at \S+: HEALTHY \(exit 0\)\n/);
    const again = npm("demo");
    expect(again.stdout).toMatch(/^0 steps to run: all \d+ steps ran before with the same inputs; nothing changed\.$/m);
  }, 30 * MINUTE);

  it("keel verify passes against the demo VM, from its stack outputs", () => {
    const r = spawnSync("bash", [path.join(REPO, "scripts", "runbook", "verify.sh")], { cwd: dir, env: runbookEnv(), encoding: "utf8", timeout: 10 * MINUTE });
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
    for (const check of ["host-key", "password-login", "sshd-config", "listeners", "ufw", "fail2ban", "metadata-guard", "sysctl", "passwords", "audit", "engine", "engine-exposure", "env-file", "health-db", "health-backup", "health-updates", "health-drift", "health", "integrity"]) {
      expect(r.stdout, check).toMatch(new RegExp(`^ok +${check} `, "m"));
    }
    expect(r.stdout).toMatch(/^verify\.sh: 127\.0\.0\.1: \d+ checks, 0 failed$/m);
    // The baseline the plan's last step built, not checked yet: the timer runs daily.
    expect(r.stdout).toMatch(/^ok +integrity +baseline of \d{4}-\S+ \(\d+ entries\); not checked yet/m);
    // No compliance scan has run on the host yet.
    expect(r.stdout).toMatch(/^skipped +compliance +.*has not been evaluated on this host; scripts\/runbook\/compliance\.sh evaluates it/m);
  }, 15 * MINUTE);

  it("keel compliance evaluates the tailored ANSSI BP-028 intermediary profile on the demo host, and keel verify reports what it found", () => {
    // The first run installs openscap-scanner from the VM's offline repository; the pinned content
    // comes from this machine's cache (~/.cache/keel/compliance, downloaded once from Debian).
    const r = spawnSync("bash", [path.join(REPO, "scripts", "runbook", "compliance.sh")], { cwd: dir, env: runbookEnv(), encoding: "utf8", timeout: 50 * MINUTE });
    // Every rule the tailored profile selects decided and passed: AIDE's two included, now that
    // the plan builds the file-integrity baseline (docs/INTEGRITY.md).
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toMatch(/^keel-compliance: intermediary: \d+ pass \/ 0 fail \/ \d+ not applicable \/ 0 not decided, in \d+ s/m);
    expect(r.stdout).not.toMatch(/^keel-compliance: {3}fail: /m);
    const v = spawnSync("bash", [path.join(REPO, "scripts", "runbook", "verify.sh"), "--json"], { cwd: dir, env: runbookEnv(), encoding: "utf8", timeout: 10 * MINUTE });
    const report = JSON.parse(v.stdout) as { checks: Array<{ name: string; status: string; evidence: string }> };
    expect(report.checks.filter((c) => c.status === "failed"), v.stderr).toEqual([]);
    const compliance = report.checks.find((c) => c.name === "compliance")!;
    expect([compliance.status, compliance.evidence]).toEqual(["ok", expect.stringMatching(/^the tailored ANSSI BP-028 intermediary profile passed \d+ rules \(\d+ not applicable\) on \d{4}-\S+, ssg-debian 0\.1\.76-1; /)]);
    expect(v.status).toBe(0);
  }, 60 * MINUTE);

  it("keel integrity: the daily check explains a package's reinstall, names what an intruder added or changed, keel-health and keel verify report it, and accept makes it the baseline", () => {
    const args = rootOnDemo();
    // What a package update does (sqlite3 again, from the VM's offline repository), and what an
    // intruder does: a cron entry, a binary in /usr/local/bin, the set-uid bit on a packaged file
    // (/bin/true as dpkg lists it: /usr/bin/true on the merged /usr).
    const change = [
      "DEBIAN_FRONTEND=noninteractive apt-get install --reinstall -y -q sqlite3 >/dev/null",
      "mkdir -p /etc/cron.d && printf '* * * * * root /usr/local/bin/keel-test-backdoor\\n' > /etc/cron.d/keel-test-intruder",
      "cp /usr/bin/true /usr/local/bin/keel-test-backdoor",
      "chmod u+s /usr/bin/true",
    ].join(" && ");
    const changed = spawnSync("ssh", [...args, `sudo ${ROOT_HELPER} sh -c ${shellQuote(change)}`], { encoding: "utf8", timeout: 10 * MINUTE });
    expect(changed.status, changed.stderr).toBe(0);
    const integrity = (...a: string[]) => spawnSync("bash", [path.join(REPO, "scripts", "runbook", "integrity.sh"), ...a], { cwd: dir, env: runbookEnv(), encoding: "utf8", timeout: 60 * MINUTE });

    const check = integrity("check");
    expect(check.status, `${check.stdout}\n${check.stderr}`).toBe(1);
    const shown = integrity("show");
    expect(shown.status, shown.stderr).toBe(0);
    const last = (JSON.parse(shown.stdout) as { last_check: { unexplained: Array<{ path: string; change: string }>; explained: Record<string, { paths: string[] }>; pending_sha256: string } }).last_check;
    expect(last.unexplained.map((u) => `${u.path} ${u.change}`).sort()).toEqual(["/etc/cron.d/keel-test-intruder added", "/usr/bin/true changed", "/usr/local/bin/keel-test-backdoor added"]);
    // The reinstalled package's files are explained (same bytes, or dpkg's md5).
    expect(Object.values(last.explained).flatMap((e) => e.paths)).toContain("/usr/bin/sqlite3");
    expect(check.stderr).toContain("integrity.sh: changes no package and no keel step explains (above)");

    const v = spawnSync("bash", [path.join(REPO, "scripts", "runbook", "verify.sh"), "--json"], { cwd: dir, env: runbookEnv(), encoding: "utf8", timeout: 10 * MINUTE });
    expect([v.status, v.stderr]).toEqual([1, expect.any(String)]);
    const failed = (JSON.parse(v.stdout) as { checks: Array<{ name: string; status: string; evidence: string }> }).checks.filter((c) => c.status === "failed");
    expect(failed.map((c) => c.name).sort(), v.stderr).toEqual(["health", "integrity"]);
    // Named as the check found them: added, then changed.
    expect(failed.find((c) => c.name === "integrity")!.evidence).toMatch(/found 3 change\(s\) no package and no keel step explains: \/etc\/cron\.d\/keel-test-intruder \(added\), \/usr\/local\/bin\/keel-test-backdoor \(added\), \/usr\/bin\/true \(changed\)/);
    const health = spawnSync("ssh", [...args, "sudo /usr/local/sbin/keel-health --json --only integrity"], { encoding: "utf8", timeout: 5 * MINUTE });
    const report = JSON.parse(health.stdout) as Report;
    expect([health.status, report.checks.integrity.status]).toEqual([1, "degraded"]);

    // The operator has read them: the baseline takes them, verify is clean again.
    expect(integrity("accept", "0".repeat(64)).status).toBe(2);
    const accepted = integrity("--yes", "accept", last.pending_sha256);
    expect(accepted.status, accepted.stderr).toBe(0);
    const after = spawnSync("bash", [path.join(REPO, "scripts", "runbook", "verify.sh"), "--json"], { cwd: dir, env: runbookEnv(), encoding: "utf8", timeout: 10 * MINUTE });
    expect(after.status, after.stdout).toBe(0);

    // A copy of the baseline off the host, checked against the sha256 the host recorded.
    const copies = fs.mkdtempSync(path.join(dir, "integrity-"));
    const copy = integrity("copy", copies);
    expect(copy.status, copy.stderr).toBe(0);
    const [file] = fs.readdirSync(copies);
    expect(file).toBe(`aide-${last.pending_sha256}.db`);
    expect(fs.statSync(path.join(copies, file)).mode & 0o777).toBe(0o600);
  }, 90 * MINUTE);

  it("keel verify fails, naming each check, once sshd would take passwords, another port listens, a keel file changed, audit rules were deleted and the engine stopped", () => {
    const args = rootOnDemo();
    // sshd keeps the first value it reads: a drop-in sorted before keel's 00-keel.conf.
    const breakIt = [
      "printf 'PasswordAuthentication yes\\n' > /etc/ssh/sshd_config.d/00-0-verify-test.conf",
      "systemctl reload ssh.service",
      "systemd-run --quiet --unit keel-verify-test-listener python3 -m http.server 8081 --bind 0.0.0.0",
      "echo '# changed by hand' >> /etc/sysctl.d/99-zz-keel.conf",
      "auditctl -D -k time-change >/dev/null",
      "systemctl stop engine.service",
      "sleep 2",
    ].join(" && ");
    const broken = spawnSync("ssh", [...args, `sudo ${ROOT_HELPER} sh -c ${shellQuote(breakIt)}`], { encoding: "utf8", timeout: 5 * MINUTE });
    expect(broken.status, broken.stderr).toBe(0);
    const r = spawnSync("bash", [path.join(REPO, "scripts", "runbook", "verify.sh"), "--json"], { cwd: dir, env: runbookEnv(), encoding: "utf8", timeout: 10 * MINUTE });
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(1);
    const report = JSON.parse(r.stdout) as { status: string; checks: Array<{ name: string; status: string; evidence: string }> };
    expect(report.status).toBe("failed");
    const failed = Object.fromEntries(report.checks.filter((c) => c.status === "failed").map((c) => [c.name, c.evidence]));
    // keel's AuthenticationMethods publickey still stands, so no password is offered from outside;
    // sshd's effective config shows the change.
    expect(failed["sshd-config"]).toContain("passwordauthentication yes for root (planned: no)");
    expect(failed.listeners).toMatch(/tcp 0\.0\.0\.0:8081 \(python3\)/);
    expect(failed["health-drift"]).toContain("/etc/sysctl.d/99-zz-keel.conf");
    expect(failed.engine).toBe("engine.service is inactive");
    expect(failed.audit).toContain("not loaded: -w /etc/localtime -p wa -k time-change");
    expect(Object.keys(failed).sort()).toEqual(expect.arrayContaining(["audit", "engine", "health", "health-drift", "listeners", "sshd-config"]));
  }, 15 * MINUTE);

  it("demo:down stops the VM and removes its files", () => {
    const state = JSON.parse(fs.readFileSync(path.join(dir, "vm.json"), "utf8")) as { dir: string; pid: number };
    const down = npm("demo:down");
    expect(down.status, down.stderr).toBe(0);
    expect(fs.existsSync(state.dir)).toBe(false);
    expect(fs.existsSync(path.join(dir, "vm.json"))).toBe(false);
    // qemu ran detached, so its parent is the machine's init, which may reap it a moment later:
    // a zombie has exited all the same.
    expect(processState(state.pid), `qemu pid ${state.pid}`).toMatch(/^(gone|Z|X)$/);
  }, 5 * MINUTE);
});
