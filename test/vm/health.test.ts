// Tier 3 (DESIGN.md "Testing tiers"): the health check and the runbook on a real Debian 12 VM, the
// whole host plan deployed the way `pulumi up` deploys it (local/runSteps.ts) with the sample
// engine: the run's deployed test host (keelVm.ts deployedTestHost; usually continued from the
// snapshot the engine tests kept of it). The alert webhook is a listener on the guest's loopback;
// the clock keeps time from this machine's (docs/VM.md "Time"), and a test takes that away. The
// runbook's scripts run on this machine, fed a stack output JSON for the VM, over the pinned SSH
// connection. One VM; the tests run in order and share it:
//   healthy after deploy; the engine stopped is down and the webhook hears of it (and of the way
//   back); a stale backup is degraded; a hand-edited placed file is drift; a failed startup gate
//   reads as such; the runbook's status, logs, backup now, restore, snapshot, migrate and engine
//   stop/start; the webhook URL nowhere but its file.
import { execFile, spawnSync } from "node:child_process";
import { rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { knownHostsLine } from "../../components/keel";
import type { KeelConfig } from "../../config";
import { runSteps, type StepRun } from "../../local/runSteps";
import type { Vm } from "../../local/vm";
import { ALERT_WEBHOOK_FILE, HOST_CONF } from "../../plan/health";
import { buildHostPlan } from "../../plan/hostPlan";
import { hostPaths } from "../../plan/layout";
import { renderEnvFile } from "../../plan/secrets";
import type { SecretName } from "../../plan/types";
import { makeDb, sql } from "../host/db-helpers";
import { loseTimeSync, restoreTimeSync, startWebhookListener, type WebhookListener } from "./support/guestServices";
import { asRoot, deployedTestHost, MINUTE, sh, waitFor, FIRST_BOOT_HOOK_LIMIT, TEST_HOST_WEBHOOK } from "./support/keelVm";

const HOOK_TOKEN = TEST_HOST_WEBHOOK.token;
const DB = "/var/lib/engine/engine.db";
const BACKUPS = "/var/backups/engine";

let tmp: string;
let vm: Vm;
let cfg: KeelConfig;
let adminFile: string;
let hostPublicKey: string;
let secrets: Record<SecretName, string>;
let hook: WebhookListener;
const runs: StepRun[] = [];

interface Report {
  status: string;
  exit_code: number;
  checks: Record<string, { status: string; summary: string; todo: string | null; details: Record<string, unknown> }>;
}

async function health(args = ""): Promise<Report & { code: number; text: string }> {
  const r = await vm.exec(`sudo /usr/local/sbin/keel-health --json ${args}`, { timeoutMs: 5 * MINUTE });
  if (![0, 1, 2].includes(r.code)) throw new Error(`keel-health exit ${r.code}: ${r.stderr}`);
  return { ...(JSON.parse(r.stdout) as Report), code: r.code, text: r.stderr };
}

/** What keel-health.service (the timer's run) does: record the state and alert on a change. */
const recordRun = () => asRoot(vm, "systemctl start keel-health.service", { timeoutMs: 5 * MINUTE });

const up = async (names?: string[], withSecrets = secrets) => {
  const r = await runSteps(vm, buildHostPlan(cfg).steps.filter((s) => !names || names.includes(s.name)), withSecrets);
  runs.push(...r);
  return r;
};

async function unit(): Promise<Record<string, string>> {
  const out = await sh(vm, "systemctl show engine.service -p ActiveState -p SubState -p MainPID -p NRestarts -p Result -p ExecMainStatus");
  return Object.fromEntries(out.trim().split("\n").map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]));
}

/** A read-only query on a DB on the VM, as the engine's user (a reader's -shm stays the engine's). */
const query = async (text: string, db = DB) => (await asRoot(vm, `runuser -u engine -- sqlite3 -batch 'file:${db}?mode=ro' "${text}"`)).trim();

/** The stack outputs a real stack for this VM would print (knownHosts as components/keel.ts builds it). */
function stackOutputFile(): string {
  const file = join(tmp, "stack.json");
  const paths = hostPaths(cfg);
  const port = vm.sshPort();
  writeFileSync(
    file,
    JSON.stringify({ ipv4: "127.0.0.1", sshPort: port, deployUser: cfg.deployUser, knownHosts: knownHostsLine(["127.0.0.1"], port, hostPublicKey), serviceName: paths.unit, paths }),
  );
  return file;
}

/** scripts/runbook/NAME.sh on this machine, against the VM. */
function runbook(name: string, args: string[] = [], timeoutMs = 10 * MINUTE): Promise<{ code: number; stdout: string; stderr: string }> {
  const env = { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: tmp, KEEL_STACK_OUTPUT: stackOutputFile(), KEEL_SSH_IDENTITY: adminFile, KEEL_KNOWN_HOSTS: join(tmp, "keel_known_hosts") };
  return new Promise((resolve) => {
    const child = execFile(join(__dirname, "..", "..", "scripts", "runbook", `${name}.sh`), args, { cwd: tmp, env, timeout: timeoutMs, encoding: "utf8" }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === "number" ? error.code : -1) : 0, stdout, stderr });
    });
    child.stdin!.end();
  });
}

let deployRuns: readonly StepRun[];

beforeAll(async () => {
  // Rare schedules (deployedHostConfig): the test runs the health check and the backups itself, nothing fires meanwhile.
  const d = await deployedTestHost("health");
  ({ tmp, vm, cfg, secrets } = d);
  deployRuns = d.runs;
  runs.push(...d.runs);
  adminFile = d.admin.file;
  hostPublicKey = d.hostKey.publicKey;
  hook = await startWebhookListener(vm, TEST_HOST_WEBHOOK.port, `/hooks/${HOOK_TOKEN}`);
  expect(hook.url).toBe(secrets.alertWebhook);
}, FIRST_BOOT_HOOK_LIMIT + 30 * MINUTE);

afterAll(async () => {
  await vm?.shutdown();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
}, 3 * MINUTE);

describe("keel-health on a Debian 12 VM deployed by the host plan", () => {
  it("deploys: the health steps run last but the integrity baseline's, the timer is enabled on keel:healthSchedule, the webhook file is root's alone", async () => {
    expect(deployRuns.map((s) => s.name)).toEqual(buildHostPlan(cfg).steps.map((s) => s.name));
    expect(deployRuns.slice(-5).map((s) => s.name)).toEqual(["alert-webhook", "health-units", "integrity-package", "integrity-units", "integrity-baseline"]);
    const timer = await sh(vm, "systemctl show keel-health.timer -p ActiveState -p UnitFileState -p TimersCalendar");
    expect(timer).toContain("ActiveState=active");
    expect(timer).toContain("UnitFileState=enabled");
    expect(timer).toContain("OnCalendar=*-01-01 00:00:00");
    expect((await asRoot(vm, `stat -c '%U:%G %a' ${ALERT_WEBHOOK_FILE} ${HOST_CONF}`)).trim().split("\n")).toEqual(["root:root 600", "root:root 644"]);
    expect((await asRoot(vm, `cat ${ALERT_WEBHOOK_FILE}`)).trim()).toBe(hook.url);
    expect((await vm.exec(`cat ${ALERT_WEBHOOK_FILE}`)).code).not.toBe(0);
    // Again: nothing changes.
    const again = await up(["tools", "alert-webhook", "health-units"]);
    for (const s of again) expect(s.name === "alert-webhook" || s.stdout.startsWith("keel-place: 0 changed"), s.name).toBe(true);
  }, 30 * MINUTE);

  it("reports an unsynchronized clock as degraded, not as fine, and ok again once it synchronizes", async () => {
    await loseTimeSync(vm);
    const r = await health("--only time");
    expect([r.code, r.checks.time.status]).toEqual([1, "degraded"]);
    await restoreTimeSync(vm);
    const back = await health("--only time");
    expect([back.code, back.checks.time.status]).toEqual([0, "ok"]);
  }, 5 * MINUTE);

  it("is healthy after deploy (exit 0): every check ok", async () => {
    await waitFor("engine running", unit, (u) => u.SubState === "running");
    const r = await health();
    const notOk = Object.entries(r.checks).filter(([, c]) => c.status !== "ok");
    expect(notOk).toEqual([]);
    expect(r.code).toBe(0);
    expect(r.checks.engine.summary).toMatch(/^engine\.service active \(running\) since .*, pid \d+, 0 automatic restart\(s\)$/);
    expect(r.checks.db.summary).toMatch(/^quick_check ok on \/var\/lib\/engine\/engine\.db/);
    expect(r.checks.fail2ban.summary).toMatch(/^jail sshd: \d+ banned now/);
    expect(r.checks.drift.summary).toBe("every file keel placed is as placed");
    expect(r.checks.timer.summary).toMatch(/^keel-health\.timer active, .*; alerts go to the webhook$/);
    console.log(`keel-health on the VM:\n${(await vm.exec("sudo /usr/local/sbin/keel-health")).stdout}`);
    // The timer's service: it records the state; a first healthy run alerts nobody.
    await recordRun();
    expect(await asRoot(vm, "cat /var/lib/keel/health.state")).toMatch(/^status=healthy\n/);
    expect(await hook.received()).toEqual([]);
  }, 10 * MINUTE);

  it("runs sandboxed: systemd-analyze security rates the live keel-health.service", async () => {
    const out = await sh(vm, "systemd-analyze security keel-health.service --no-pager");
    const level = Number(/Overall exposure level for keel-health\.service: (\d+\.\d+)/.exec(out)![1]);
    console.log(`systemd-analyze security keel-health.service on the VM: exposure ${level}`);
    expect(level).toBeLessThanOrEqual(3.0);
    expect(await sh(vm, "journalctl -u keel-health.service --no-pager -o cat")).toMatch(/keel-health: engine on \S+ at .*: HEALTHY \(exit 0\)/);
  }, 5 * MINUTE);

  it("is down (2) with the engine stopped, says so to the webhook, and again when it is back", async () => {
    const stop = await runbook("engine", ["stop"]);
    expect(stop.code, stop.stderr).toBe(0);
    expect(stop.stdout).toContain("keel-ops: stopped engine.service");
    const status = await runbook("status");
    expect(status.code).toBe(2);
    expect(status.stdout).toMatch(/: DOWN \(exit 2\)\n/);
    expect(status.stdout).toMatch(/ DOWN {6}engine {4}engine\.service is inactive \(result success\); last exit status=0\/SUCCESS/);
    await recordRun();
    const down = await hook.received();
    expect(down).toHaveLength(1);
    expect(down[0]).toMatchObject({ path: `/hooks/${HOOK_TOKEN}`, type: "application/json", body: { status: "down", previous: "healthy", app: "engine", exit_code: 2 } });
    expect((down[0].body.problems as string[])[0]).toMatch(/^engine: engine\.service is inactive/);

    const start = await runbook("engine", ["start"]);
    expect(start.code, start.stderr).toBe(0);
    expect(start.stdout).toMatch(/keel-ops: engine\.service active and steady \(pid \d+\)/);
    await recordRun();
    expect((await hook.received()).slice(1).map((a) => [a.body.status, a.body.previous])).toEqual([["healthy", "down"]]);
    expect(await asRoot(vm, "journalctl -u keel-health.service --no-pager -o cat")).toContain("keel-health-alert: delivered (HTTP 204)");
  }, 15 * MINUTE);

  it("reads a failed startup gate as such: status=78/CONFIG, the gate's meaning, down", async () => {
    await up(["secrets"], { ...secrets, envFile: renderEnvFile({}) }).catch(() => undefined);
    await waitFor("gate failure", unit, (u) => u.ActiveState === "failed", 60_000);
    const r = await health("--only engine");
    expect(r.code).toBe(2);
    expect(r.checks.engine.summary).toContain("engine.service is failed (result exit-code); last exit status=78/CONFIG: the startup gate failed; the engine refused to start and says why in its journal");
    expect(r.checks.engine.details.last_exit).toMatchObject({ code: 1, status: 78 });
    await up(["secrets"]);
    await waitFor("running again", unit, (u) => u.SubState === "running");
  }, 10 * MINUTE);
});

describe("the runbook against the VM, from this machine", () => {
  it("status: the report over the pinned connection, --json too", async () => {
    const text = await runbook("status");
    expect(text.code, text.stdout).toBe(0);
    expect(text.stdout).toMatch(/^keel-health: engine on \S+ at \S+: HEALTHY \(exit 0\)\n/);
    const json = await runbook("status", ["--json", "--only", "engine,db"]);
    expect(JSON.parse(json.stdout)).toMatchObject({ status: "healthy", exit_code: 0 });
  }, 5 * MINUTE);

  it("logs: the engine's journal as the deploy user, and the health check's", async () => {
    const r = await runbook("logs", ["-n", "50"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/engine\[\d+\]: engine: heartbeat \d+ at /);
    const h = await runbook("logs", ["--health", "--since", "1 hour ago"]);
    expect(h.stdout).toContain("keel-health: status healthy -> down");
  }, 5 * MINUTE);

  it("backup now: a verified backup through the timer's own service; the health check sees it", async () => {
    const r = await runbook("backup-now");
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^\/var\/backups\/engine\/engine-\d{8}T\d{6}Z\.db\n$/);
    const file = r.stdout.trim();
    // The backup user's, readable by the engine's group (docs/DATABASE.md "The backup identity").
    expect((await asRoot(vm, `stat -c '%U:%G %a' ${file}`)).trim()).toBe("engine-backup:engine 640");
    expect((await asRoot(vm, `/usr/local/sbin/keel-db-gate verify ${file}`)).trim()).toBe("ok");
    const h = await health("--only backup");
    expect(h.code).toBe(0);
    expect(h.checks.backup.details).toMatchObject({ last_run: { result: "ok" }, newest: { file } });
  }, 10 * MINUTE);

  it("restore: the backup's rows back in the live DB, the engine steady on it, the old DB kept aside", async () => {
    const list = await runbook("restore", ["--list"]);
    const newest = list.stdout.trim().split("\n").slice(-1)[0].split("\t")[0];
    expect(newest).toMatch(/^engine-\d{8}T\d{6}Z\.db$/);
    const inBackup = Number(await query("SELECT max(id) FROM heartbeat", `${BACKUPS}/${newest}`));
    await waitFor("heartbeats after the backup", () => query("SELECT max(id) FROM heartbeat"), (n) => Number(n) >= inBackup + 2, 2 * MINUTE);
    const writtenAfter = await query(`SELECT pid FROM heartbeat WHERE id = ${inBackup + 1}`);
    const r = await runbook("restore", ["--yes", newest]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`keel-ops: restored ${newest} into ${DB}`);
    expect(r.stdout).toMatch(/keel-ops: engine\.service active and steady \(pid (\d+)\)/);
    const pid = /active and steady \(pid (\d+)\)/.exec(r.stdout)![1];
    // The row written after the backup is gone: the next one with that id is the new engine's.
    await waitFor("a heartbeat of the restored engine", () => query(`SELECT pid FROM heartbeat WHERE id = ${inBackup + 1}`), (p) => p === pid, 2 * MINUTE);
    expect(pid).not.toBe(writtenAfter);
    expect(await asRoot(vm, `ls ${DB}.pre-restore-*`)).toMatch(/engine\.db\.pre-restore-\d{8}T\d{6}Z/);
    expect((await health("--only engine,db")).code).toBe(0);
  }, 15 * MINUTE);

  it("snapshot: a clean read-only copy on this machine, nothing left on the host", async () => {
    const out = join(tmp, "analysis.db");
    const r = await runbook("snapshot", [out]);
    expect([r.code, r.stdout], r.stderr).toEqual([0, `${out}\n`]);
    expect(statSync(out).mode & 0o777).toBe(0o440);
    expect(sql(`file:${out}?mode=ro`, "PRAGMA integrity_check;")).toBe("ok");
    expect(Number(sql(`file:${out}?mode=ro`, "SELECT count(*) FROM heartbeat;"))).toBeGreaterThan(0);
    expect((await sh(vm, "ls -A /home/deploy/keel-snapshots")).trim()).toBe("");
  }, 10 * MINUTE);

  it("migrate: a DB from this machine passes the gate on both sides and replaces the live one, after a backup of it", async () => {
    const source = makeDb(join(tmp, "operator.db"), { rows: 321 });
    const before = Number((await asRoot(vm, `ls ${BACKUPS} | grep -cE '^engine-[0-9]{8}T[0-9]{6}Z\\.db$' || true`)).trim());
    const r = await runbook("migrate", ["--yes", source]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/keel-ops: adopted \/home\/deploy\/keel-incoming\/incoming-\d{8}T\d{6}Z\.db as \/var\/lib\/engine\/engine\.db/);
    expect(await query("SELECT count(*) FROM t")).toBe("321");
    expect(await query("PRAGMA journal_mode")).toBe("wal");
    expect((await asRoot(vm, `stat -c '%U:%G %a' ${DB}`)).trim()).toBe("engine:engine 600");
    const after = Number((await asRoot(vm, `ls ${BACKUPS} | grep -cE '^engine-[0-9]{8}T[0-9]{6}Z\\.db$' || true`)).trim());
    expect(after).toBe(before + 1);
    // The backup of the replaced DB is the backup user's, like every backup (its lock and status too).
    expect((await asRoot(vm, `stat -c %U ${BACKUPS}/.engine.backup.lock ${BACKUPS}/engine.status.json`)).trim().split("\n")).toEqual(["engine-backup", "engine-backup"]);
    expect((await sh(vm, "ls -A /home/deploy/keel-incoming")).trim()).toBe("");
    await waitFor("heartbeats in the migrated DB", () => query("SELECT count(*) FROM heartbeat"), (n) => Number(n) >= 1, 2 * MINUTE);
    // The backup timer's service still works after the adopt.
    expect((await runbook("backup-now")).code).toBe(0);
  }, 15 * MINUTE);
});

describe("keel-health on the VM: degraded states", () => {
  it("is degraded (1) with a stale backup, and tells the webhook", async () => {
    const names = (await asRoot(vm, `ls ${BACKUPS} | grep -E '^engine-[0-9]{8}T[0-9]{6}Z\\.db$'`)).trim().split("\n");
    // Backups as they would be after a month without one: old names, and no status file naming the
    // last run's file (which health checks is still there).
    await asRoot(vm, [...names.map((n, i) => `mv ${BACKUPS}/${n} ${BACKUPS}/engine-2025010${i + 1}T000000Z.db`), `mv ${BACKUPS}/engine.status.json ${BACKUPS}/engine.status.json.away`].join(" && "));
    try {
      const r = await health();
      expect(r.code).toBe(1);
      expect(Object.entries(r.checks).filter(([, c]) => c.status !== "ok").map(([n]) => n)).toEqual(["backup"]);
      expect(r.checks.backup.summary).toMatch(/^the newest backup is \d+\.\d h old \(more than 26 h\)/);
      await recordRun();
      expect((await hook.received()).slice(-1)[0].body).toMatchObject({ status: "degraded", previous: "healthy" });
    } finally {
      const stale = (await asRoot(vm, `ls ${BACKUPS} | grep -E '^engine-2025'`)).trim().split("\n");
      await asRoot(vm, [...stale.map((n, i) => `mv ${BACKUPS}/${n} ${BACKUPS}/${names[i]}`), `mv ${BACKUPS}/engine.status.json.away ${BACKUPS}/engine.status.json`].join(" && "));
    }
    expect((await health("--only backup")).code).toBe(0);
  }, 10 * MINUTE);

  it("reports a placed file edited by hand as drift (degraded) until the plan's step puts it back", async () => {
    await asRoot(vm, `echo '# edited by hand' >> ${HOST_CONF}`);
    const r = await health("--only drift");
    expect([r.code, r.checks.drift.details.drifted]).toEqual([1, [`changed ${HOST_CONF} (content)`]]);
    const fix = await up(["tools"]);
    expect(fix[0].stdout).toContain(`changed ${HOST_CONF}`);
    expect((await health("--only drift")).code).toBe(0);
    await recordRun();
    expect((await hook.received()).slice(-1)[0].body).toMatchObject({ status: "healthy", previous: "degraded" });
  }, 10 * MINUTE);

  it("keeps the webhook URL in its file only: not in the journal, not in any step's output", async () => {
    // The token goes to grep on stdin, never in a command line: sudo logs the command lines it runs
    // to the journal, so a probe with the token in its argv would itself put it there.
    const hits = await asRoot(vm, "grep -rlF -f - /etc /var /usr/local /home /root /tmp 2>/dev/null || true", { stdin: HOOK_TOKEN, timeoutMs: 5 * MINUTE });
    expect(hits.trim().split("\n")).toEqual([ALERT_WEBHOOK_FILE]);
    expect((await asRoot(vm, 'key=$(cat); journalctl --no-pager -o verbose | grep -cF -- "$key" || true', { stdin: HOOK_TOKEN, timeoutMs: 5 * MINUTE })).trim()).toBe("0");
    for (const r of runs) expect(`${r.stdout}${r.stderr}`).not.toContain(HOOK_TOKEN);
    expect(spawnSync("grep", ["-rF", HOOK_TOKEN, tmp]).status).toBe(1);
  }, 10 * MINUTE);
});
