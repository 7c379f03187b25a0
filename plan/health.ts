import { sshPorts, type KeelConfig } from "../config";
import { backupServiceName, opsLockPath, sessionBackupDir } from "./database";
import { GATE_FAILURE_STATUS, SETTLE_SECONDS } from "./engine";
import { renderHostConfText, type HostConfKey } from "./hostConf";
import { backupUser, hostPaths } from "./layout";
import { PROTECT_KERNEL, RESTRICT } from "./sandbox";
import { placeStep, secretPlaceStep } from "./steps";
import { toolPath } from "./tools";
import type { Bundle, HostFile, Step } from "./types";

/**
 * The health check (seed 000 §9; docs/RUNBOOK.md "Status: the health report"): keel-health's
 * config, the root-only alert webhook file, and the timer that runs it on keel:healthSchedule and
 * alerts on a change of status.
 */

/** keel's own config directory on the host. */
export const KEEL_ETC = "/etc/keel";
/** What keel-health and keel-ops know about this host: paths, the unit, thresholds. */
export const HOST_CONF = `${KEEL_ETC}/host.conf`;
/** The alert webhook URL (the secret keel:alertWebhookUrl), root:root 0600; empty when unset. */
export const ALERT_WEBHOOK_FILE = `${KEEL_ETC}/alert-webhook`;
export const HEALTH_SERVICE = "keel-health.service";
export const HEALTH_TIMER = "keel-health.timer";
export const UNIT_DIR = "/etc/systemd/system";

/**
 * Hours a pending security update may wait before the host counts as degraded. unattended-upgrades
 * installs them once a day, so a day and a margin; reporting them sooner would flap every day.
 */
export const SECURITY_GRACE_HOURS = 48;
/** PRAGMA quick_check is O(DB size); past this the check reports "unknown" instead of hanging. */
export const DB_CHECK_TIMEOUT_SECONDS = 120;
/** fail2ban's jail for sshd (cloud-init/files/fail2ban-sshd.local). */
export const FAIL2BAN_JAIL = "sshd";

export function healthStatePath(cfg: KeelConfig): string {
  return `${hostPaths(cfg).keelState}/health.state`;
}

/**
 * host.conf: `key=value` lines, sorted, read (never sourced) through keel-host-conf by keel-health,
 * keel-ops and keel-verify. Its keys and their kinds: plan/hostConf.ts.
 */
export function renderHostConf(cfg: KeelConfig): string {
  const p = hostPaths(cfg);
  const values: Record<HostConfKey, string | number> = {
    app: cfg.appName,
    app_user: cfg.appName,
    backup_dir: p.backupDir,
    // The backup tree's owner (keel-ops prune and set-aside run as it).
    backup_user: backupUser(cfg),
    backup_keep: cfg.backupRetention,
    backup_max_age_hours: cfg.healthBackupMaxAgeHours,
    // The backup timer's service, which `keel-ops backup` starts.
    backup_service: backupServiceName(cfg),
    db: p.db,
    db_check_timeout_seconds: DB_CHECK_TIMEOUT_SECONDS,
    deploy_user: cfg.deployUser,
    disk_crit_percent: cfg.healthDiskCritPercent,
    disk_warn_percent: cfg.healthDiskWarnPercent,
    // keel-verify's planned values (scripts/host/keel-verify).
    env_file: p.envFile,
    engine_gate_status: GATE_FAILURE_STATUS,
    fail2ban_jail: FAIL2BAN_JAIL,
    health_timer: HEALTH_TIMER,
    journal_dir: "/var/log/journal",
    manifest: `${p.keelState}/manifest.json`,
    // keel-ops holds it from its stop of the engine to the swap's end; a start waits for it.
    ops_lock: opsLockPath(cfg),
    security_grace_hours: SECURITY_GRACE_HOURS,
    // The pre- and post-session backups' directory, which `keel-ops prune` prunes too.
    session_backup_dir: sessionBackupDir(cfg),
    settle_seconds: SETTLE_SECONDS,
    ssh_ports: sshPorts(cfg).join(","),
    state_file: healthStatePath(cfg),
    tools_dir: p.toolsDir,
    unit: p.unit,
    webhook_file: ALERT_WEBHOOK_FILE,
  };
  const header = [
    `${HOST_CONF}: written by keel (plan/health.ts) from the stack config; edits are overwritten on the next pulumi up.`,
    "Read through keel-host-conf by keel-health, keel-ops and keel-verify (docs/RUNBOOK.md).",
  ];
  return renderHostConfText(header, values);
}

/**
 * keel-health.service: one run of the checks, recorded, with an alert on a change. Root, because
 * the checks read what only root may (the placed secrets for drift, the backup directory, the
 * fail2ban socket), in a sandbox that leaves it the rest read-only: it writes only keel's state
 * and, as the DB's owner, SQLite's -shm beside the live DB.
 */
export function renderHealthService(cfg: KeelConfig): string {
  const p = hostPaths(cfg);
  return (
    [
      "# Written by keel (plan/health.ts); edits are overwritten on the next pulumi up.",
      "[Unit]",
      `Description=keel health check of ${cfg.appName} (docs/RUNBOOK.md "Status: the health report")`,
      "",
      "[Service]",
      "Type=oneshot",
      `ExecStart=${toolPath("health")} --record`,
      "# 1 (degraded) and 2 (down) are the report, not a failure of the check; 3 is (it could not run).",
      "SuccessExitStatus=1 2",
      "TimeoutStartSec=600",
      "# What it reads may be hostile (a compromised engine writes its DB and backups): bounded.",
      "MemoryMax=256M",
      "SyslogIdentifier=keel-health",
      "Nice=10",
      "IOSchedulingClass=idle",
      "UMask=0077",
      "",
      "# Sandbox: read-only everywhere but keel's state and the DB's directory (SQLite's -shm).",
      "ProtectSystem=strict",
      `ReadWritePaths=${p.keelState} ${p.stateDir}`,
      "ProtectHome=read-only",
      "PrivateTmp=yes",
      "PrivateDevices=yes",
      "ProtectProc=invisible",
      ...PROTECT_KERNEL,
      "# Read what root may read; become the DB's owner for the quick check. Nothing else.",
      "CapabilityBoundingSet=CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_SETUID CAP_SETGID",
      ...RESTRICT,
      "RemoveIPC=yes",
      "KeyringMode=private",
      "# Unix sockets for systemd and fail2ban; IPv4/IPv6 for the alert webhook.",
      "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
      "SystemCallArchitectures=native",
      "SystemCallFilter=@system-service",
      "SystemCallErrorNumber=EPERM",
    ].join("\n") + "\n"
  );
}

/** keel-health.timer: keel:healthSchedule. */
export function renderHealthTimer(cfg: KeelConfig): string {
  return (
    [
      "# Written by keel (plan/health.ts); edits are overwritten on the next pulumi up.",
      "[Unit]",
      `Description=keel health check of ${cfg.appName} on keel:healthSchedule`,
      "",
      "[Timer]",
      `OnCalendar=${cfg.healthSchedule}`,
      "AccuracySec=1min",
      "",
      "[Install]",
      "WantedBy=timers.target",
    ].join("\n") + "\n"
  );
}

export const keelEtc = { path: KEEL_ETC, owner: "root", group: "root", mode: "0755" };

export function hostConfFile(cfg: KeelConfig): HostFile {
  return { path: HOST_CONF, owner: "root", group: "root", mode: "0644", content: renderHostConf(cfg) };
}

export function healthUnitFiles(cfg: KeelConfig): HostFile[] {
  return [
    { path: `${UNIT_DIR}/${HEALTH_SERVICE}`, owner: "root", group: "root", mode: "0644", content: renderHealthService(cfg) },
    { path: `${UNIT_DIR}/${HEALTH_TIMER}`, owner: "root", group: "root", mode: "0644", content: renderHealthTimer(cfg) },
  ];
}

/** The webhook file: the URL on one line, or empty when keel:alertWebhookUrl is not set (no alerts). */
export function alertWebhookBundle(url: string): Bundle {
  return {
    dirs: [keelEtc],
    files: [{ path: ALERT_WEBHOOK_FILE, owner: "root", group: "root", mode: "0600", content: url ? `${url}\n` : "" }],
  };
}

/**
 * The health steps, last in the plan (they check what the others set up). The webhook step always
 * runs: with keel:alertWebhookUrl unset it empties the file, so removing the key stops the alerts.
 * host.conf is not among them: the tools step places it with the tools that read it
 * (plan/hostPlan.ts), so no keel-health or keel-ops ever runs beside a host.conf of another keel.
 */
export function healthSteps(cfg: KeelConfig): Step[] {
  const units = healthUnitFiles(cfg);
  return [
    secretPlaceStep(
      "alert-webhook",
      `write the alert webhook URL ${ALERT_WEBHOOK_FILE} (0600 root; empty: no alerts)`,
      "alertWebhook",
      alertWebhookBundle,
    ),
    placeStep("health-units", `install ${HEALTH_SERVICE} and ${HEALTH_TIMER} (${cfg.healthSchedule}) and start the timer`, {
      files: units,
      check: ["systemd-analyze", "verify", ...units.map((u) => u.path)],
      onChange: [
        // Enabled first without a reload of its own, so one daemon-reload (seconds on a small server)
        // loads the units and the link, and leaves nothing flagged as changed on disk.
        ["systemctl", "enable", "--no-reload", HEALTH_TIMER],
        ["systemctl", "daemon-reload"],
        ["systemctl", "start", HEALTH_TIMER],
      ],
    }),
  ];
}
