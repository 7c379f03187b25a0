import { describe, expect, it } from "vitest";
import { parseConfig, type KeelConfig } from "../../config";
import { GATE_FAILURE_STATUS } from "../../plan/engine";
import {
  ALERT_WEBHOOK_FILE,
  HOST_CONF,
  alertWebhookBundle,
  healthSteps,
  renderHealthService,
  renderHealthTimer,
  renderHostConf,
} from "../../plan/health";
import { buildHostPlan } from "../../plan/hostPlan";
import { toolFiles } from "../../plan/tools";
import { stackConfig } from "../support/stack";

function config(stack = "prod", overrides: Record<string, string> = {}): KeelConfig {
  const { raw, secretKeys } = stackConfig(stack);
  return parseConfig({ ...raw, ...overrides }, (k) => secretKeys.includes(k));
}

/** host.conf as a map (the way keel-health reads it: key=value lines, # comments). */
function conf(cfg: KeelConfig): Record<string, string> {
  const lines = renderHostConf(cfg).split("\n").filter((l) => l && !l.startsWith("#"));
  return Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]));
}

function rerun(a: KeelConfig, b: KeelConfig): string[] {
  const before = new Map(buildHostPlan(a).steps.map((s) => [s.name, s.hash]));
  return buildHostPlan(b).steps.filter((s) => before.get(s.name) !== s.hash).map((s) => s.name);
}

function unitValues(unit: string, key: string): string[] {
  return unit.split("\n").filter((l) => l.startsWith(`${key}=`)).map((l) => l.slice(key.length + 1));
}

describe("host.conf, the health check's config", () => {
  it("carries the stack's thresholds and the host's paths", () => {
    expect(conf(config())).toEqual({
      app: "engine",
      app_user: "engine",
      backup_dir: "/var/backups/engine",
      backup_user: "engine-backup",
      backup_keep: "30",
      backup_max_age_hours: "26",
      backup_service: "engine-backup.service",
      db: "/var/lib/engine/engine.db",
      db_check_timeout_seconds: "120",
      deploy_user: "deploy",
      disk_crit_percent: "95",
      disk_warn_percent: "80",
      engine_gate_status: String(GATE_FAILURE_STATUS),
      env_file: "/etc/engine/engine.env",
      fail2ban_jail: "sshd",
      health_timer: "keel-health.timer",
      journal_dir: "/var/log/journal",
      manifest: "/var/lib/keel/manifest.json",
      ops_lock: "/run/keel/engine.ops.lock",
      security_grace_hours: "48",
      session_backup_dir: "/var/backups/engine/sessions",
      settle_seconds: "5",
      ssh_ports: "22",
      state_file: "/var/lib/keel/health.state",
      tools_dir: "/usr/local/sbin",
      unit: "engine.service",
      webhook_file: "/etc/keel/alert-webhook",
    });
  });

  it("follows keel:healthBackupMaxAgeHours, the disk thresholds, appName and dbFile", () => {
    const cfg = config("staging", {
      "keel:healthBackupMaxAgeHours": "2",
      "keel:healthDiskWarnPercent": "60",
      "keel:healthDiskCritPercent": "70",
      "keel:appName": "trader",
      "keel:dbFile": "state.sqlite3",
    });
    expect(conf(cfg)).toMatchObject({
      backup_max_age_hours: "2",
      disk_warn_percent: "60",
      disk_crit_percent: "70",
      backup_keep: "5",
      unit: "trader.service",
      db: "/var/lib/trader/state.sqlite3",
      backup_dir: "/var/backups/trader",
      backup_user: "trader-backup",
    });
  });

  it("is sorted key=value lines whose values keel-health accepts without quoting", () => {
    const lines = renderHostConf(config()).split("\n").filter((l) => l && !l.startsWith("#"));
    expect(lines).toEqual([...lines].sort());
    for (const l of lines) expect(l).toMatch(/^[a-z0-9_]+=[A-Za-z0-9._/@,-]+$/);
    expect(conf(config("prod", { "keel:sshPortNext": "2222" })).ssh_ports).toBe("22,2222");
  });
});

describe("keel-health.service and keel-health.timer", () => {
  it("runs keel-health --record as a oneshot whose report codes are not failures", () => {
    const unit = renderHealthService(config());
    expect(unitValues(unit, "Type")).toEqual(["oneshot"]);
    expect(unitValues(unit, "ExecStart")).toEqual(["/usr/local/sbin/keel-health --record"]);
    expect(unitValues(unit, "SuccessExitStatus")).toEqual(["1 2"]);
    expect(unitValues(unit, "User")).toEqual([]);
  });

  it("is sandboxed: read-only but for keel's state and the DB's directory, four capabilities", () => {
    const unit = renderHealthService(config());
    expect(unitValues(unit, "ProtectSystem")).toEqual(["strict"]);
    expect(unitValues(unit, "ReadWritePaths")).toEqual(["/var/lib/keel /var/lib/engine"]);
    expect(unitValues(unit, "CapabilityBoundingSet")).toEqual(["CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_SETUID CAP_SETGID"]);
    expect(unitValues(unit, "NoNewPrivileges")).toEqual(["yes"]);
  });

  it("fires on keel:healthSchedule", () => {
    expect(unitValues(renderHealthTimer(config()), "OnCalendar")).toEqual(["*:0/15"]);
    expect(unitValues(renderHealthTimer(config("prod", { "keel:healthSchedule": "hourly" })), "OnCalendar")).toEqual(["hourly"]);
  });
});

describe("health steps", () => {
  const cfg = config();

  it("come last in the plan before the integrity baseline: the webhook secret, the units; host.conf comes with the tools that read it", () => {
    const steps = buildHostPlan(cfg).steps;
    expect(steps.map((s) => s.name).slice(-5)).toEqual(["alert-webhook", "health-units", "integrity-package", "integrity-units", "integrity-baseline"]);
    const tools = steps.find((s) => s.name === "tools")!;
    expect(tools.bundle!.files.filter((f) => f.path === HOST_CONF).map((f) => [f.path, f.owner, f.mode])).toEqual([[HOST_CONF, "root", "0644"]]);
    expect(tools.bundle!.files.map((f) => f.path)).toContain("/usr/local/sbin/keel-health");
  });

  it("place host.conf and the units (verified, then the timer enabled); the webhook file is in no plain bundle", () => {
    const [webhook, units] = healthSteps(cfg);
    expect(units.bundle!.files.map((f) => f.path)).toEqual(["/etc/systemd/system/keel-health.service", "/etc/systemd/system/keel-health.timer"]);
    expect(units.bundle!.check).toEqual(["systemd-analyze", "verify", "/etc/systemd/system/keel-health.service", "/etc/systemd/system/keel-health.timer"]);
    expect(units.bundle!.onChange).toEqual([
      ["systemctl", "enable", "--no-reload", "keel-health.timer"],
      ["systemctl", "daemon-reload"],
      ["systemctl", "start", "keel-health.timer"],
    ]);
    expect(webhook.stdin).toBeUndefined();
    expect(webhook.bundle).toBeUndefined();
    expect(buildHostPlan(cfg).files.map((f) => f.path)).not.toContain(ALERT_WEBHOOK_FILE);
  });

  it("deliver the webhook URL only on stdin, into a root-only file; an unset URL empties it", () => {
    const webhook = healthSteps(cfg)[0];
    expect(webhook.secret!.name).toBe("alertWebhook");
    expect(webhook.command).toBe("sudo /usr/local/sbin/keel-place");
    const url = "https://hooks.example.com/services/T0/B0/secret-token";
    expect(webhook.secret!.bundle(url).files).toEqual([{ path: ALERT_WEBHOOK_FILE, owner: "root", group: "root", mode: "0600", content: `${url}\n` }]);
    expect(alertWebhookBundle("").files[0].content).toBe("");
    expect(JSON.stringify(webhook)).not.toContain("secret-token");
  });

  it("re-run only what a config change touches; a new webhook URL changes no hash", () => {
    expect(rerun(cfg, config("prod", { "keel:healthSchedule": "hourly" }))).toEqual(["health-units"]);
    expect(rerun(cfg, config("prod", { "keel:healthBackupMaxAgeHours": "50" }))).toEqual(["tools"]);
    expect(rerun(cfg, config("prod", { "keel:healthDiskWarnPercent": "70", "keel:healthDiskCritPercent": "90" }))).toEqual(["tools"]);
    expect(rerun(cfg, config("prod", { "keel:backupRetention": "7" }))).toContain("tools");
    const a = healthSteps(cfg)[0];
    const withUrl = parseConfig({ ...stackConfig("prod").raw, "keel:alertWebhookUrl": "https://hooks.example.com/x" }, (k) =>
      [...stackConfig("prod").secretKeys, "keel:alertWebhookUrl"].includes(k),
    );
    expect(withUrl.alertWebhook).toBe(true);
    expect(healthSteps(withUrl)[0].hash).toBe(a.hash);
  });
});

describe("the health and runbook tools", () => {
  it("are installed as keel-health, keel-health-alert and keel-ops, root-owned 0755", () => {
    const files = toolFiles().filter((f) => /keel-(health|health-alert|ops)$/.test(f.path));
    expect(files.map((f) => [f.path, f.owner, f.mode])).toEqual([
      ["/usr/local/sbin/keel-health", "root", "0755"],
      ["/usr/local/sbin/keel-health-alert", "root", "0755"],
      ["/usr/local/sbin/keel-ops", "root", "0755"],
    ]);
  });
});
