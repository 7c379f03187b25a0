// Tier 3 (DESIGN.md "Testing tiers"): the engine deployed on a real Debian 12 VM the way `pulumi up`
// deploys it: the real user-data, then every step of the host plan over SSH as the deploy user
// (local/runSteps.ts), the sample engine (test/fixtures/engine) served from a git repository on the
// VM. The deploy is the run's deployed test host (keelVm.ts deployedTestHost: this file runs it, or
// continues from the snapshot another file kept of it). Then the checks of issue 3: the unit runs
// under its own user, files and modes, the DB and the journal, a second run changes nothing, a
// killed engine comes back, a missing secret stops it for good, a new secret or commit restarts it,
// the canary secret is nowhere else, the exposure. Last, the one safe move of the SSH port on a
// live server (issue 10, docs/LIFECYCLE.md): keel:sshPortNext on one up, keel:sshPort on the next.
// One VM; the tests run in order and share it.
import * as fs from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectionChangeProblems } from "../../components/connectionGuard";
import { sshPorts, type KeelConfig } from "../../config";
import { HARDENING_PATHS } from "../../plan/hardening";
import { runSteps, type StepRun } from "../../local/runSteps";
import type { Vm, VmSession } from "../../local/vm";
import { stableJson } from "../../plan/hash";
import { MAX_ENGINE_EXPOSURE } from "../../plan/engine";
import { buildHostPlan } from "../../plan/hostPlan";
import { hostPaths } from "../../plan/layout";
import { renderEnvFile } from "../../plan/secrets";
import type { SecretName, Step } from "../../plan/types";
import { CANARY } from "../support/stack";
import { tcpListeners, isLoopback, ufwStatus } from "./support/hardeningChecks";
import { asRoot, deployedHostConfig, deployedTestHost, FIRST_BOOT_HOOK_LIMIT, ROOT_HELPER, shellQuote, sshWith, TEST_HOST_SECRET_ENV, waitFor } from "./support/keelVm";

const MINUTE = 60_000;
const SECOND_SECRET = TEST_HOST_SECRET_ENV.ENGINE_DB_KEY;

let tmp: string;
let vm: Vm;
let cfg: KeelConfig;
let commits: readonly string[];
let secrets: Record<SecretName, string>;
let deployKey: string;
let adminKey: string;
let adminFile: string;
const allRuns: StepRun[] = [];

/** The deployed test host's config, or a later up's: `repoRef` and `overrides` changed. */
const config = (repoRef: string, overrides: Record<string, string> = {}): KeelConfig => deployedHostConfig(adminKey, repoRef, overrides);

/** Runs steps as `pulumi up` runs them, keeping every run for the canary check. */
async function up(steps: Step[], withSecrets: Partial<Record<SecretName, string>> = secrets): Promise<StepRun[]> {
  const runs = await runSteps(vm, steps, withSecrets);
  allRuns.push(...runs);
  return runs;
}

async function sh(command: string, opts: { stdin?: string; timeoutMs?: number } = {}): Promise<string> {
  const r = await vm.exec(command, { timeoutMs: 5 * MINUTE, ...opts });
  if (r.code !== 0) throw new Error(`${command} (exit ${r.code}):\n${r.stdout}${r.stderr}`);
  return r.stdout;
}

/** Root on the VM, through the test's own keel tool (the deploy user's sudo covers keel-* only). */
const root = (command: string, opts: { stdin?: string; timeoutMs?: number } = {}) => sh(`sudo ${ROOT_HELPER} ${command}`, opts);

async function unitState(): Promise<Record<string, string>> {
  const out = await sh("systemctl show engine.service -p ActiveState -p SubState -p MainPID -p NRestarts -p ActiveEnterTimestampMonotonic -p ExecMainStatus -p Result");
  return Object.fromEntries(out.trim().split("\n").map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]));
}

/** Every file in the places keel manages, with mtime, size, mode and owner (the live DB excluded). */
async function fileSnapshot(): Promise<string> {
  const dirs = ["/etc", "/opt", "/usr/local", "/var/lib/keel", "/var/backups/engine", "/home/deploy", "/var/lib/engine"];
  const out = await root(`find ${dirs.join(" ")} -xdev -printf '%p %T@ %s %m %u:%g\\n'`);
  return out
    .split("\n")
    .filter((l) => l && !/^\/var\/lib\/engine\/engine\.db(-wal|-shm)? /.test(l))
    .sort()
    .join("\n");
}

/**
 * Running services with their main PID and start time. A restart changes one of them; services
 * that come and go with SSH logins (the deploy user's manager) are left out.
 */
async function servicesSnapshot(): Promise<Map<string, string>> {
  const out = await sh(
    "for u in $(systemctl list-units --type=service --state=running --no-legend --plain | awk '{print $1}'); do echo \"$u $(systemctl show \"$u\" -p MainPID -p ActiveEnterTimestampMonotonic --value | paste -sd' ')\"; done",
  );
  const lines = out.trim().split("\n").filter((l) => !/^user(-runtime-dir)?@/.test(l));
  return new Map(lines.map((l) => [l.split(" ")[0], l]));
}

/** Services running in both snapshots whose main PID or start time differ. */
function restarted(before: Map<string, string>, after: Map<string, string>): string[] {
  return [...before].filter(([unit, line]) => after.has(unit) && after.get(unit) !== line).map(([unit]) => unit);
}

/**
 * For each of `secrets`, the files on the VM's disk and in its tmpfs mounts that hold it: one pass
 * over the disk for all of them (a whole-disk grep takes minutes under TCG), then each secret
 * against the few files that pass. The secrets travel on stdin and wait in a private directory
 * the search leaves out, so the search itself puts none of them in a command line (sudo logs those
 * to the journal).
 */
async function filesHolding(...secrets: string[]): Promise<string[][]> {
  const script = [
    'd=$(mktemp -d) && trap \'rm -rf "$d"\' EXIT && cat >"$d/all" || exit 1',
    'n=0; while IFS= read -r s; do n=$((n + 1)); printf "%s\\n" "$s" >"$d/$n"; done <"$d/all"',
    '{ find / -xdev -type f -print0; find /run /tmp /var/tmp /dev/shm -xdev -type f -print0; } 2>/dev/null | grep -zv "^$d/" | xargs -0 grep -lF --binary-files=text -f "$d/all" 2>/dev/null | sort -u >"$d/hits"',
    'i=1; while [ "$i" -le "$n" ]; do echo "#$i"; xargs -rd "\\n" grep -lF --binary-files=text -f "$d/$i" <"$d/hits" 2>/dev/null; i=$((i + 1)); done; exit 0',
  ].join("\n");
  const out = await root(`sh -c ${shellQuote(script)}`, { stdin: secrets.map((s) => `${s}\n`).join(""), timeoutMs: 15 * MINUTE });
  const found: string[][] = secrets.map(() => []);
  let current = -1;
  for (const line of out.split("\n").filter(Boolean)) {
    const m = /^#(\d+)$/.exec(line);
    if (m) current = Number(m[1]) - 1;
    else found[current].push(line);
  }
  expect(current, "the search went through every secret").toBe(secrets.length - 1);
  return found;
}

const stepsNamed = (names: string[]) => buildHostPlan(cfg).steps.filter((s) => names.includes(s.name));

let deployRuns: readonly StepRun[];
let deployedHere: boolean;

beforeAll(async () => {
  // Guest port 2222 is forwarded too, for the port move at the end.
  const d = await deployedTestHost("engine", { extraGuestPorts: [2222] });
  ({ tmp, vm, commits, secrets, deployedHere } = d);
  adminKey = d.admin.publicKey;
  adminFile = d.admin.file;
  deployKey = d.deployKey;
  cfg = d.cfg;
  deployRuns = d.runs;
  allRuns.push(...d.runs);
}, FIRST_BOOT_HOOK_LIMIT + 30 * MINUTE);

afterAll(async () => {
  await vm?.shutdown();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
}, 3 * MINUTE);

describe("the engine on a Debian 12 VM, deployed by the host plan's steps", () => {
  it("deploys: every step passes, in plan order", () => {
    console.log(`engine VM: ${deployedHere ? "deployed the whole plan itself" : "continues from the run's deployed test host"}`);
    const plan = buildHostPlan(cfg);
    expect(deployRuns.map((r) => r.name)).toEqual(plan.steps.map((s) => s.name));
    expect(deployRuns.every((r) => r.code === 0)).toBe(true);
    const byName = Object.fromEntries(deployRuns.map((r) => [r.name, r]));
    expect(byName["engine-source"].stdout).toContain(`source: /opt/engine/app is at ${commits[0]}`);
    expect(byName["engine-venv"].stdout).toContain("venv: built /opt/engine/venv from requirements.txt (no hashes) with python 3.11");
    expect(byName["engine-start"].stdout).toMatch(/start: enabled engine\.service\nstart: started engine\.service \(first deploy\)\nstart: engine\.service active and steady/);
  });

  it("runs the engine under its own user, from the venv, in the checkout", async () => {
    const state = await unitState();
    expect(state).toMatchObject({ ActiveState: "active", SubState: "running", NRestarts: "0" });
    const ps = await sh(`ps -o user=,args= -p ${state.MainPID}`);
    expect(ps.trim()).toBe("engine   /opt/engine/venv/bin/python -m engine");
    expect((await root(`readlink /proc/${state.MainPID}/cwd`)).trim()).toBe("/opt/engine/app");
  }, 5 * MINUTE);

  it("places every file with the owner and mode of DESIGN.md", async () => {
    const p = hostPaths(cfg);
    const paths = [p.appDir, p.venv, p.configFile, p.envFile, p.stateDir, p.backupDir, "/etc/systemd/system/engine.service", p.db];
    const out = await root(`stat -c '%n %U:%G %a' ${paths.join(" ")}`);
    expect(out.trim().split("\n")).toEqual([
      "/opt/engine/app deploy:deploy 755",
      "/opt/engine/venv deploy:deploy 755",
      "/etc/engine/config.yaml root:engine 640",
      "/etc/engine/engine.env root:root 600",
      "/var/lib/engine engine:engine 700",
      "/var/backups/engine engine-backup:engine 2750",
      "/etc/systemd/system/engine.service root:root 644",
      "/var/lib/engine/engine.db engine:engine 600",
    ]);
    // The engine's user can write none of its code.
    expect(await root("find /opt/engine -user engine -o -perm /022 ! -type l")).toBe("");
    expect((await sh("cat /opt/engine/app/.git/HEAD")).trim()).toBe(commits[0]);
  }, 5 * MINUTE);

  it("writes heartbeats into its DB in WAL mode, and journald has its output", async () => {
    const count = async () => Number(await root(`python3 -c "import sqlite3; print(sqlite3.connect('file:/var/lib/engine/engine.db?mode=ro', uri=True).execute('SELECT count(*) FROM heartbeat').fetchone()[0])"`));
    const before = await count();
    await waitFor("heartbeats", count, (n) => n >= before + 2, 2 * MINUTE);
    expect((await root(`python3 -c "import sqlite3; print(sqlite3.connect('/var/lib/engine/engine.db').execute('PRAGMA journal_mode').fetchone()[0])"`)).trim()).toBe("wal");
    const journal = await sh("journalctl -u engine.service --no-pager -o cat");
    expect(journal).toMatch(/engine: started \(pid \d+, settings \['heartbeatSeconds', 'session'\], secrets present: \['ENGINE_API_KEY'\]\)/);
    expect(journal).toMatch(/engine: heartbeat \d+ at /);
  }, 5 * MINUTE);

  it(`is sandboxed: systemd-analyze security rates the live unit at most ${MAX_ENGINE_EXPOSURE}`, async () => {
    const out = await sh("systemd-analyze security engine.service --no-pager");
    const level = Number(out.match(/Overall exposure level for engine\.service: (\d+\.\d+)/)![1]);
    console.log(`systemd-analyze security engine.service on the VM: exposure ${level}`);
    expect(level).toBeLessThanOrEqual(MAX_ENGINE_EXPOSURE);
  }, 5 * MINUTE);

  it("changes no file and restarts nothing when every step runs again", async () => {
    const files = await fileSnapshot();
    const services = await servicesSnapshot();
    const manifest = JSON.parse(await root("cat /var/lib/keel/manifest.json")) as Record<string, unknown>;
    const runs = await up(buildHostPlan(cfg).steps);
    const out = Object.fromEntries(runs.map((r) => [r.name, r.stdout]));
    expect(out["engine-preflight"]).toMatch(/^preflight ok: python3 3\.11; /);
    expect(out["engine-source"]).toBe(`source: /opt/engine/app already at ${commits[0]}, nothing changed\n`);
    expect(out["engine-venv"]).toBe("venv: /opt/engine/venv already built from requirements.txt (no hashes), nothing changed\n");
    expect(out["engine-config"]).toBe("keel-place: 0 changed, 1 file(s) already as planned\n");
    expect(out["engine-unit"]).toBe("keel-place: 0 changed, 1 file(s) already as planned\n");
    expect(out["engine-start"]).toMatch(/^start: engine\.service already active \(pid \d+, since .*\), nothing changed\n$/);
    const now = await servicesSnapshot();
    expect(restarted(services, now)).toEqual([]);
    expect(now.get("engine.service")).toBe(services.get("engine.service"));
    // What keel-place records must not change either.
    const manifestNow = JSON.parse(await root("cat /var/lib/keel/manifest.json")) as Record<string, unknown>;
    const differing = [...new Set([...Object.keys(manifest), ...Object.keys(manifestNow)])].filter((k) => stableJson(manifest[k]) !== stableJson(manifestNow[k]));
    expect(differing).toEqual([]);
    const after = await fileSnapshot();
    const changed = after.split("\n").filter((l) => !files.split("\n").includes(l));
    expect(changed).toEqual([]);
  }, 40 * MINUTE);

  it("restarts a killed engine", async () => {
    const before = await unitState();
    await root(`kill -KILL ${before.MainPID}`);
    const after = await waitFor("restart", unitState, (s) => s.SubState === "running" && s.MainPID !== before.MainPID && s.MainPID !== "0", 5 * MINUTE);
    expect(Number(after.NRestarts)).toBe(Number(before.NRestarts) + 1);
  }, 8 * MINUTE);

  it("restarts the engine when a secret changes, through the secrets step alone", async () => {
    const before = await unitState();
    const changed = { ...secrets, envFile: renderEnvFile({ ENGINE_API_KEY: CANARY, ENGINE_DB_KEY: `${SECOND_SECRET}-rotated` }) };
    await up(stepsNamed(["secrets"]), changed);
    const after = await waitFor("restart", unitState, (s) => s.SubState === "running" && s.MainPID !== before.MainPID, 5 * MINUTE);
    expect(after.ActiveState).toBe("active");
    // Back to the planned secrets for the rest of the tests.
    await up(stepsNamed(["secrets"]));
  }, 15 * MINUTE);

  it("stops for good, with the gate status, when a required secret is removed", async () => {
    const error = await up(stepsNamed(["secrets"]), { ...secrets, envFile: renderEnvFile({ ENGINE_DB_KEY: SECOND_SECRET }) }).then(
      () => undefined,
      (e: Error) => e,
    );
    // The step fails and says where to read why. Its output is what the provider puts into its error
    // (and so into state, the CI log and the PR comment) whatever `logging` says: pulumi-command
    // v1.2.1 provider/pkg/provider/remote/commandOutputs.go, `running %q:\n<stdout and stderr>`. No
    // journal line of the engine's may be in it.
    expect(error?.message).toContain("exit status 78 is the engine's failed startup gate");
    expect(error?.message).toContain("scripts/runbook/logs.sh -n 50");
    expect(error?.message).not.toMatch(/engine: (started|startup gate failed)/);
    const failed = await waitFor("gate failure", unitState, (s) => s.ActiveState === "failed", 5 * MINUTE);
    expect(failed).toMatchObject({ Result: "exit-code", ExecMainStatus: "78" });
    await new Promise((r) => setTimeout(r, 15_000));
    const later = await unitState();
    expect(later).toMatchObject({ ActiveState: "failed", NRestarts: failed.NRestarts });
    const status = await vm.exec("systemctl status engine.service --no-pager");
    expect(status.stdout).toContain("status=78/CONFIG");
    expect(await sh("journalctl -u engine.service --no-pager -o cat -n 20")).toContain("engine: startup gate failed: required environment variable(s) ENGINE_API_KEY missing or empty");
  }, 10 * MINUTE);

  it("comes back when the secret is restored, through the secrets step alone", async () => {
    await up(stepsNamed(["secrets"]));
    const state = await waitFor("start", unitState, (s) => s.SubState === "running", 5 * MINUTE);
    expect(state.ActiveState).toBe("active");
  }, 10 * MINUTE);

  it("deploys a new commit: the checkout moves, the engine restarts, the venv stays", async () => {
    const old = cfg;
    cfg = config(commits[1]);
    const before = await unitState();
    const venvInode = await sh("stat -c %i /opt/engine/venv");
    const rerun = buildHostPlan(cfg).steps.filter((s, i) => s.hash !== buildHostPlan(old).steps[i].hash);
    expect(rerun.map((s) => s.name)).toEqual(["engine-source", "engine-venv", "engine-start"]);
    const runs = await up(rerun);
    expect(runs[0].stdout).toContain(`source: checked out ${commits[1]} (was ${commits[0]})`);
    expect(runs[1].stdout).toBe("venv: /opt/engine/venv already built from requirements.txt (no hashes), nothing changed\n");
    expect(runs[2].stdout).toContain("start: restarted engine.service (commit changed)");
    expect((await sh("cat /opt/engine/app/VERSION")).trim()).toBe("2");
    expect(await sh("stat -c %i /opt/engine/venv")).toBe(venvInode);
    expect((await unitState()).MainPID).not.toBe(before.MainPID);
  }, 20 * MINUTE);

  it("keeps the canary secret in the env file only: not on disk elsewhere, not in the journal, not in any step", async () => {
    const body = deployKey.trim().split("\n");
    const keyLine = body[body.length - 3];
    expect(keyLine.length).toBeGreaterThanOrEqual(60);
    const [canaryFiles, keyFiles] = await filesHolding(CANARY, keyLine);
    expect(canaryFiles).toEqual(["/etc/engine/engine.env"]);
    expect(keyFiles).toEqual(["/home/deploy/.ssh/keel_deploy_ed25519"]);
    expect(await root(`sh -c 'read -r s; journalctl --no-pager --all -o verbose | grep -cF -e "$s" || true'`, { stdin: `${CANARY}\n`, timeoutMs: 5 * MINUTE })).toBe("0\n");
    for (const s of buildHostPlan(cfg).steps) expect(`${s.command}\n${s.stdin ?? ""}`).not.toContain(CANARY);
    for (const r of allRuns) expect(`${r.stdout}\n${r.stderr}`).not.toContain(CANARY);
    expect(allRuns.length).toBeGreaterThan(0);
  }, 40 * MINUTE);
});

describe("moving SSH to another port on the live server: keel:sshPortNext, then keel:sshPort", () => {
  /** The TCP ports sshd listens on outside loopback. */
  const sshdPorts = async (session: VmSession) =>
    [...new Set((await tcpListeners(session)).filter((l) => l.processes.includes("sshd") && !isLoopback(l.address)).map((l) => l.port))].sort((a, b) => a - b);
  const ufwPorts = async (session: VmSession) => [...new Set((await ufwStatus(session)).rules.map((r) => r.to))].sort();
  /** A new SSH connection of its own (not the shared one, which outlives sshd's move). */
  const freshLogin = (guestPort: number) =>
    sshWith(vm, tmp, { user: "deploy", identityFile: adminFile, hostPublicKey: vm.hostKey, guestPort, options: ["-o", "ConnectTimeout=20"] }, "echo keel-ok");

  it("first up: SSH served on 22 and 2222 (sshd, UFW, fail2ban), every connection still on 22", async () => {
    const old = cfg;
    cfg = config(commits[1], { "keel:sshPortNext": "2222" });
    // What the last up left (its stack outputs): 22 only. The move to 2222 is not asked yet.
    expect(connectionChangeProblems(cfg, { sshPort: 22, sshPorts: [22], deployUser: "deploy" })).toEqual([]);
    const rerun = buildHostPlan(cfg).steps.filter((s, i) => s.hash !== buildHostPlan(old).steps[i].hash);
    expect(rerun.map((s) => s.name)).toEqual(["tools", "harden-kernel", "harden-sshd", "harden-firewall", "harden-fail2ban"]);
    // The Hetzner firewall first (the engine may update it before any step: nothing orders it after
    // them), then the steps whose inputs changed.
    await vm.setFirewall(sshPorts(cfg));
    await up(rerun);
    expect(await sshdPorts(vm)).toEqual([22, 2222]);
    expect(await ufwPorts(vm)).toEqual(["22/tcp", "2222/tcp"]);
    expect(await asRoot(vm, `grep '^port = ' ${HARDENING_PATHS.fail2banJail}`)).toBe("port = 22,2222\n");
    // Both ports reserved: no outgoing connection takes 2222 as its local port while sshd must bind it.
    expect(await asRoot(vm, "sysctl -n net.ipv4.ip_local_reserved_ports")).toBe("22,2222\n");
    expect(await asRoot(vm, "fail2ban-client status sshd")).toContain("Status for the jail: sshd");
    // A fresh connection on each port, the pinned host key on both.
    for (const guestPort of [22, 2222]) expect((await freshLogin(guestPort)).stdout, `port ${guestPort}`).toBe("keel-ok\n");
  }, 20 * MINUTE);

  it("second up: every step on 2222, 22 closed; a fresh connection on 22 is refused, 2222 lets the deploy user in", async () => {
    cfg = config(commits[1], { "keel:sshPort": "2222" });
    expect(connectionChangeProblems(cfg, { sshPort: 22, sshPorts: [22, 2222], deployUser: "deploy" })).toEqual([]);
    // The connection of every remote step changed, so the engine updates each of them, and an update
    // without an update command runs create again (pulumi-command v1.2.1
    // provider/pkg/provider/remote/commandController.go Update): the whole plan, on the new port.
    const moved = vm.onGuestPort(2222);
    // The firewall closes 22 before any step runs, as the engine may order it: the steps, on 2222
    // already served, are not locked out.
    const runs = await runSteps(moved, buildHostPlan(cfg).steps, secrets, { firewall: sshPorts(cfg) });
    allRuns.push(...runs);
    expect(runs.find((r) => r.name === "harden-sshd")?.stdout).toMatch(/^keel-place: 1 changed/m);
    expect(await sshdPorts(moved)).toEqual([2222]);
    expect(await ufwPorts(moved)).toEqual(["2222/tcp"]);
    expect(await asRoot(moved, `grep '^port = ' ${HARDENING_PATHS.fail2banJail}`)).toBe("port = 2222\n");
    expect(await asRoot(moved, "sysctl -n net.ipv4.ip_local_reserved_ports")).toBe("2222\n");
    expect(await asRoot(moved, "systemctl is-active engine.service")).toBe("active\n");
    const refused = await freshLogin(22);
    // Closed by the firewall's stand-in (its forward is gone); UFW's rule for 22 is gone too (above).
    expect(refused.code).toBe(255);
    expect(refused.stdout).toBe("");
    expect((await freshLogin(2222)).stdout).toBe("keel-ok\n");
  }, 30 * MINUTE);
});
