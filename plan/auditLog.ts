import type { KeelConfig } from "../config";
import { auditLogDir, auditLogFile, hostPaths } from "./layout";
import { PROTECT_KERNEL, RESTRICT } from "./sandbox";
import { placeStep, step, toolStep } from "./steps";
import { toolPath } from "./tools";
import type { HostFile, Step } from "./types";

/**
 * keel:auditLog: the engine's audit log, /var/log/<app>/<auditLog>, which the engine may append to
 * and nothing more. The file is the engine's (0640) with the append-only attribute (`chattr +a`),
 * which only CAP_LINUX_IMMUTABLE lifts and the engine's unit has no capability at all; its directory
 * is root's (plan/layout.ts auditLogDir), so the engine creates, renames and deletes nothing there.
 *
 * keel-audit-log rotates it daily (keel-audit-log.timer), with logrotate and keel's own
 * configuration, kept out of /etc/logrotate.d so Debian's logrotate.timer never rotates it without
 * keel's guard: the engine frozen and the directory closed to it while the attribute is lifted, every
 * rotated file root's and read-only after (scripts/host/keel-audit-log says why each step is there).
 * keel-health and keel verify ask `keel-audit-log status --json` whether the attribute holds.
 *
 * Off unless keel:auditLog is set: no step, no file, host.conf unchanged.
 */

/** The tool's configuration: the live file, its owner and group, the engine's unit (key=value lines). */
export const AUDIT_LOG_CONF = "/etc/keel/audit-log.conf";
/** logrotate's configuration, which only keel-audit-log runs. */
export const AUDIT_LOG_LOGROTATE = "/etc/keel/audit-log.logrotate";
export const AUDIT_LOG_SERVICE = "keel-audit-log.service";
export const AUDIT_LOG_TIMER = "keel-audit-log.timer";
/** Rotated files kept: 90 days (empty days are not rotated, so at least 90 days of history). */
export const AUDIT_LOG_ROTATE = 90;
/**
 * The health report counts a rotation older than this as missing: the timer runs daily at midnight
 * (up to 5 min late, or at boot when the host was off), so two days and a margin of hours.
 */
export const AUDIT_LOG_MAX_AGE_HOURS = 48;

const UNIT_DIR = "/etc/systemd/system";

/** keel-audit-log's state: logrotate's record of its last rotation, keel-audit-log's of its last run. */
export function auditLogStateDir(cfg: KeelConfig): string {
  return `${hostPaths(cfg).keelState}/audit-log`;
}

/** The configuration keel-audit-log reads (it refuses a key it does not know), sorted. */
export function renderAuditLogConf(cfg: KeelConfig): string {
  const values: Record<string, string> = {
    file: auditLogFile(cfg),
    group: cfg.appName,
    owner: cfg.appName,
    unit: hostPaths(cfg).unit,
  };
  return (
    [
      `# ${AUDIT_LOG_CONF}: written by keel (plan/auditLog.ts) from keel:auditLog; edits are overwritten on the next pulumi up.`,
      "# Read by keel-audit-log: the engine's audit log, the owner and group it has, the engine's unit.",
      ...Object.keys(values)
        .sort()
        .map((k) => `${k}=${values[k]}`),
    ].join("\n") + "\n"
  );
}

/**
 * logrotate's configuration. copytruncate, not create: the live file keeps its inode, its owner,
 * its attribute and every descriptor the engine holds (an engine that never reopens its log loses
 * nothing), and no line falls between the copy and the truncation because the engine is frozen
 * meanwhile. No prerotate/postrotate: keel-audit-log lifts and restores the attribute around
 * logrotate itself, so logrotate run by hand fails on the append-only file and changes nothing.
 */
export function renderAuditLogLogrotate(cfg: KeelConfig): string {
  return (
    [
      `# ${AUDIT_LOG_LOGROTATE}: written by keel (plan/auditLog.ts); edits are overwritten on the next pulumi up.`,
      `# Run only by keel-audit-log rotate (${AUDIT_LOG_TIMER}, daily), which freezes the engine and lifts the`,
      "# file's append-only attribute around logrotate; run by hand, logrotate cannot truncate the file.",
      `${auditLogFile(cfg)} {`,
      "    daily",
      `    rotate ${AUDIT_LOG_ROTATE}`,
      "    copytruncate",
      "    compress",
      "    nodelaycompress",
      "    nodateext",
      "    notifempty",
      "    missingok",
      "    nomail",
      "}",
    ].join("\n") + "\n"
  );
}

/**
 * keel-audit-log.service: one rotation. Root, for what only root may do to the engine's file (lift
 * and restore its attribute, copy and truncate it, hand the copies to root) and to freeze the engine
 * meanwhile; it writes nothing but the log directory and its state, and has no network.
 */
export function renderAuditLogService(cfg: KeelConfig): string {
  return (
    [
      "# Written by keel (plan/auditLog.ts); edits are overwritten on the next pulumi up.",
      "[Unit]",
      `Description=keel rotation of ${cfg.appName}'s audit log, append-only between rotations`,
      "",
      "[Service]",
      "Type=oneshot",
      `ExecStart=${toolPath("audit-log")} rotate`,
      "# The engine is frozen while gzip runs: a large log takes a while, but never this long.",
      "TimeoutStartSec=30min",
      "MemoryMax=256M",
      "SyslogIdentifier=keel-audit-log",
      "UMask=0077",
      "",
      "# Sandbox: writes only the log directory and its state; talks to systemd (freeze, thaw), nothing else.",
      "ProtectSystem=strict",
      `ReadWritePaths=${auditLogDir(cfg)} ${auditLogStateDir(cfg)}`,
      "ProtectHome=yes",
      "PrivateTmp=yes",
      "PrivateDevices=yes",
      "PrivateNetwork=yes",
      "IPAddressDeny=any",
      "PrivateMounts=yes",
      "PrivateIPC=yes",
      "ProtectProc=invisible",
      "ProcSubset=pid",
      ...PROTECT_KERNEL,
      "# The attribute (CAP_LINUX_IMMUTABLE); the engine's file opened, chowned and chmodded by root.",
      "CapabilityBoundingSet=CAP_LINUX_IMMUTABLE CAP_DAC_OVERRIDE CAP_CHOWN CAP_FOWNER",
      ...RESTRICT,
      "RemoveIPC=yes",
      "KeyringMode=private",
      "DevicePolicy=closed",
      "RestrictAddressFamilies=AF_UNIX",
      "SystemCallArchitectures=native",
      "SystemCallFilter=@system-service",
      // @privileged but @chown (fchown of the rotated files), and @resources.
      "SystemCallFilter=~@clock @module @raw-io @reboot @swap @resources _sysctl acct bpf capset chroot fanotify_init fanotify_mark nfsservctl open_by_handle_at pivot_root quotactl quotactl_fd setdomainname setfsuid setfsuid32 setgroups setgroups32 sethostname setresuid setresuid32 setreuid setreuid32 setuid setuid32 vhangup",
      "SystemCallErrorNumber=EPERM",
    ].join("\n") + "\n"
  );
}

/** keel-audit-log.timer: daily, just after midnight, so a rotated file holds about one day; a missed run is made up at boot. */
export function renderAuditLogTimer(cfg: KeelConfig): string {
  return (
    [
      "# Written by keel (plan/auditLog.ts); edits are overwritten on the next pulumi up.",
      "[Unit]",
      `Description=keel daily rotation of ${cfg.appName}'s audit log`,
      "",
      "[Timer]",
      "OnCalendar=*-*-* 00:00:00",
      "RandomizedDelaySec=5min",
      "Persistent=true",
      "",
      "[Install]",
      "WantedBy=timers.target",
    ].join("\n") + "\n"
  );
}

/** The files keel places for keel:auditLog ([] when it is unset): the two configurations and the units. */
export function auditLogFiles(cfg: KeelConfig): HostFile[] {
  if (!cfg.auditLog) return [];
  const root = (path: string, mode: string, content: string): HostFile => ({ path, owner: "root", group: "root", mode, content });
  return [
    root(AUDIT_LOG_CONF, "0644", renderAuditLogConf(cfg)),
    root(AUDIT_LOG_LOGROTATE, "0644", renderAuditLogLogrotate(cfg)),
    root(`${UNIT_DIR}/${AUDIT_LOG_SERVICE}`, "0644", renderAuditLogService(cfg)),
    root(`${UNIT_DIR}/${AUDIT_LOG_TIMER}`, "0644", renderAuditLogTimer(cfg)),
  ];
}

/**
 * The audit-log steps ([] when keel:auditLog is unset), before the engine's first start: logrotate
 * (every image keel boots ships it; a server where it was removed gets it back), then the
 * configurations and units, checked by logrotate and systemd before they are kept, the timer
 * started, and the live file made (the engine's, 0640, append-only) so the engine finds it.
 */
export function auditLogSteps(cfg: KeelConfig): Step[] {
  if (!cfg.auditLog) return [];
  const files = auditLogFiles(cfg);
  const units = files.filter((f) => f.path.startsWith(UNIT_DIR));
  return [
    toolStep("audit-log-package", "install logrotate when the server lacks it (keel-audit-log runs it)", "packages", ["logrotate"], { timeoutSeconds: 1800 }),
    placeStep("audit-log", `install ${AUDIT_LOG_SERVICE} and ${AUDIT_LOG_TIMER} (daily rotation of ${auditLogFile(cfg)}, append-only between rotations) and start the timer`, {
      dirs: [{ path: auditLogStateDir(cfg), owner: "root", group: "root", mode: "0700" }],
      files,
      // logrotate must read its configuration, and systemd the units; otherwise keel-place puts the old files back.
      check: [toolPath("audit-log"), "config-check", ...units.map((u) => u.path)],
      onChange: [["systemctl", "daemon-reload"]],
    }),
    // The timer enabled and the live file made (before the engine's first start, which opens it),
    // whenever this step is created: on the first up with keel:auditLog and again after it was
    // removed and set anew (its files are then unchanged, so the step above changes nothing). Its
    // delete command turns the rotation off when keel:auditLog goes (plan/types.ts deleteCommand).
    // No tool bytes behind a trigger, so a new keel-audit-log never replaces it (plan/https.ts
    // https-start says why that matters).
    step({
      name: "audit-log-start",
      description: `enable ${AUDIT_LOG_TIMER} and make ${auditLogFile(cfg)} (the engine's, append-only)`,
      // The file in the command: a new name re-runs it (an update), which makes the new file.
      command: ["sudo", toolPath("audit-log"), "enable", `file=${auditLogFile(cfg)}`].join(" "),
      deleteCommand: ["sudo", toolPath("audit-log"), "off"].join(" "),
    }),
  ];
}
