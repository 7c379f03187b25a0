import type { KeelConfig } from "../config";
import { startTimeoutSeconds } from "./engine";
import { backupUser, hostPaths } from "./layout";
import { PROTECT_KERNEL, RESTRICT } from "./sandbox";
import { localStep, placeStep, toolStep, uploadStep } from "./steps";
import { toolPath } from "./tools";
import type { HostDir, HostFile, Step } from "./types";

/**
 * The engine's database on the host (seed 000 §4, §11; docs/DATABASE.md): the backup timer, the
 * pre- and post-session backups around every start and stop of the engine, and the optional
 * migration of a DB from the operator's machine before the engine's first start.
 */

/** The timer's random delay: spreads a schedule such as `*-*-* 03:17:00` over ten minutes. */
export const BACKUP_RANDOMIZED_DELAY = "10min";

/**
 * The pre-session backup stops itself this long before the unit's start timeout: a failed
 * ExecCondition= (exit 1-254) leaves the engine stopped, while a start that runs into
 * TimeoutStartSec= fails the unit with result "timeout", which Restart=on-failure restarts
 * (systemd's service.c: service_enter_signal → SERVICE_FAILURE_TIMEOUT, service_shall_restart):
 * a DB too large for the timeout would be backed up, killed and restarted forever.
 */
export const START_DEADLINE_MARGIN_SECONDS = 30;

export function backupServiceName(cfg: KeelConfig): string {
  return `${cfg.appName}-backup.service`;
}

export function backupTimerName(cfg: KeelConfig): string {
  return `${cfg.appName}-backup.timer`;
}

/**
 * The pre- and post-session backups' own directory inside the backup directory: their own
 * retention and their own lock, so a restart (two backups) does not eat the scheduled ones. The
 * scheduled backup takes that lock only while it checks one session backup in turn
 * (--also-check), and a session backup waits for it (keel-db-session-backup --lock-wait).
 */
export function sessionBackupDir(cfg: KeelConfig): string {
  return `${hostPaths(cfg).backupDir}/sessions`;
}

/**
 * The lock `keel-ops` holds (exclusively, as root) from stopping the engine for a restore, adopt or
 * recover until the DB is in place, and the pre-session backup waits for (shared) before the engine
 * starts: no start slips in between keel-ops' stop and its swap (issue 17 #7). In /run/keel, root's.
 */
export function opsLockPath(cfg: KeelConfig): string {
  return `/run/keel/${cfg.appName}.ops.lock`;
}

/** The deploy user's directory where a migrated DB lands before it is adopted (0700). */
export function incomingDir(cfg: KeelConfig): string {
  return `/home/${cfg.deployUser}/keel-incoming`;
}

/** Where the migration step uploads the operator's DB. */
export function stagedDbPath(cfg: KeelConfig): string {
  return `${incomingDir(cfg)}/${cfg.dbFile}`;
}

export function dropInPath(cfg: KeelConfig): string {
  return `/etc/systemd/system/${hostPaths(cfg).unit}.d/keel-session-backups.conf`;
}

/**
 * systemd's @privileged (systemd 252 and 257) without what setpriv calls to change user: the
 * set{,res,re}{u,g}id family, setgroups and capset. setfsuid/setfsgid stay denied. @resources is
 * denied on top, as for the engine.
 */
export const PRIVILEGED_BUT_SETUID = [
  "@chown", "@clock", "@module", "@raw-io", "@reboot", "@swap", "@resources",
  "_sysctl", "acct", "bpf", "chroot", "fanotify_init", "fanotify_mark", "nfsservctl", "open_by_handle_at", "pivot_root",
  "quotactl", "quotactl_fd", "setdomainname", "setfsuid", "setfsuid32", "sethostname", "vhangup",
];

/** The two identities of a backup, as keel-db-backup --as and keel-db-session-backup --as take them. */
export function backupIdentities(cfg: KeelConfig): string {
  return `${cfg.appName}:${backupUser(cfg)}`;
}

/**
 * The sandbox of the backup service, the engine's minus the network. It starts as root only to run
 * its two sides as their users (keel-db-backup --as: setpriv): the engine's user reads the live DB
 * (and, like any SQLite reader, may create its -wal and -shm when the engine is stopped) and writes
 * a temporary copy beside it; the backup user writes the backup directory. Nothing else. So it keeps
 * CAP_SETUID/CAP_SETGID and the set*id system calls, and no user namespace (PrivateUsers= would map
 * both users to nobody).
 */
function backupSandbox(cfg: KeelConfig): string[] {
  const p = hostPaths(cfg);
  return [
    "ProtectSystem=strict",
    `ReadWritePaths=${p.stateDir} ${p.backupDir}`,
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "PrivateNetwork=yes",
    "PrivateMounts=yes",
    "PrivateIPC=yes",
    "ProtectProc=invisible",
    "ProcSubset=pid",
    ...PROTECT_KERNEL,
    "CapabilityBoundingSet=CAP_SETUID CAP_SETGID",
    "AmbientCapabilities=",
    ...RESTRICT,
    "KeyringMode=private",
    "DevicePolicy=closed",
    "RestrictAddressFamilies=none",
    "IPAddressDeny=any",
    "SystemCallArchitectures=native",
    "SystemCallFilter=@system-service",
    "# @privileged but the set*id calls and capset, which setpriv needs (test/host/db-wiring.test.ts",
    "# checks this list against systemd-analyze syscall-filter).",
    `SystemCallFilter=~${PRIVILEGED_BUT_SETUID.join(" ")}`,
    "SystemCallErrorNumber=EPERM",
  ];
}

/**
 * `<app>-backup.service`: one verified backup (keel-db-backup --as): the engine's user reads the DB
 * — a reader, so the engine keeps writing meanwhile — and the backup user stores it with the
 * configured retention.
 */
export function renderBackupService(cfg: KeelConfig): string {
  const p = hostPaths(cfg);
  const lines = [
    "# Written by keel (plan/database.ts); edits are overwritten on the next pulumi up.",
    "[Unit]",
    `Description=verified backup of ${cfg.appName}'s SQLite DB into ${p.backupDir} (docs/DATABASE.md)`,
    "",
    "[Service]",
    "Type=oneshot",
    "# root only for setpriv: the DB is read as the engine's user, the backup written as the backup user's.",
    "# --also-check: one session backup in turn is checked too (the session backups check none).",
    `ExecStart=${toolPath("db-backup")} --as ${backupIdentities(cfg)} --keep ${cfg.backupRetention} --also-check ${sessionBackupDir(cfg)} ${p.db} ${p.backupDir}`,
    "# A oneshot waits forever by default, and keel-ops backup waits for it. Verify alone runs at",
    "# ~19 s/GiB (docs/DATABASE.md \"Benchmark\"): two hours is room for well over 100 GiB.",
    "TimeoutStartSec=2h",
    `SyslogIdentifier=${cfg.appName}-backup`,
    "UMask=0077",
    "Nice=10",
    "IOSchedulingClass=best-effort",
    "IOSchedulingPriority=7",
    "",
    "# Sandbox: read the DB, write the backup directory; no network, no privileges but changing user.",
    ...backupSandbox(cfg),
  ];
  return lines.join("\n") + "\n";
}

/** `<app>-backup.timer`: keel:backupSchedule, a random delay, and a missed run caught up at boot. */
export function renderBackupTimer(cfg: KeelConfig): string {
  const lines = [
    "# Written by keel (plan/database.ts); edits are overwritten on the next pulumi up.",
    "[Unit]",
    `Description=backups of ${cfg.appName}'s SQLite DB on ${cfg.backupSchedule} (docs/DATABASE.md)`,
    "",
    "[Timer]",
    `OnCalendar=${cfg.backupSchedule}`,
    `RandomizedDelaySec=${BACKUP_RANDOMIZED_DELAY}`,
    "# A run missed while the host was off happens at the next boot.",
    "Persistent=true",
    `Unit=${backupServiceName(cfg)}`,
    "",
    "[Install]",
    "WantedBy=timers.target",
  ];
  return lines.join("\n") + "\n";
}

/**
 * The drop-in that puts a verified backup around every session of the engine (seed 000 §11C):
 * before each start, a crash's automatic restart included, and after each stop. The engine's
 * sandbox cannot write the backup directory, so both run with "+" (as root, outside the sandbox) and
 * only to run the two sides as their users (keel-db-session-backup --as: setpriv), as the backup
 * service does: root itself opens nothing in either directory.
 *
 * The pre-session backup is an ExecCondition=, not an ExecStartPre=: systemd restarts a unit whose
 * ExecStartPre= failed (Restart=on-failure; RestartPreventExitStatus= applies to the main process
 * only), but a failed ExecCondition= (exit 1–254) leaves the unit stopped, with no restart.
 */
export function renderSessionDropIn(cfg: KeelConfig): string {
  const p = hostPaths(cfg);
  const pre = ` --ops-lock ${opsLockPath(cfg)} --deadline ${startTimeoutSeconds(cfg) - START_DEADLINE_MARGIN_SECONDS}`;
  const backup = (phase: string) =>
    `+${toolPath("db-session-backup")} ${phase} --as ${backupIdentities(cfg)}${phase === "pre" ? pre : ""} --keep ${cfg.backupRetention}${phase === "pre" ? ` --history ${p.backupDir}` : ""} ${p.db} ${sessionBackupDir(cfg)}`;
  const lines = [
    "# Written by keel (plan/database.ts); edits are overwritten on the next pulumi up.",
    "# Pre- and post-session backups (seed 000 §11C; docs/DATABASE.md).",
    "[Service]",
    "# Before every start: a verified backup of the DB as it is (nothing before the first start).",
    "# If it fails the engine stays stopped: a failed ExecCondition= is not restarted.",
    `ExecCondition=${backup("pre")}`,
    "# After every stop, a crash included: the session just ended. It must finish within TimeoutStopSec=.",
    `ExecStopPost=${backup("post")}`,
    "# The pre-session backup verifies the whole DB: room for a large one (keel:startTimeoutMinutes).",
    "# It stops itself --deadline seconds in, before this timeout, which Restart=on-failure would restart.",
    `TimeoutStartSec=${startTimeoutSeconds(cfg)}`,
  ];
  return lines.join("\n") + "\n";
}

/**
 * A directory of the backup tree: the backup user's, readable (never writable) by the engine's group,
 * setgid so every backup gets that group (keel-ops restore reads a backup as the engine's user).
 * Files an older keel left there as the engine's are handed over to the backup user (keel-place
 * adoptFilesFrom: single-link regular files only, never through a link), so no backup is lost.
 */
export function backupTreeDir(cfg: KeelConfig, path: string): HostDir {
  return { path, owner: backupUser(cfg), group: cfg.appName, mode: "2750", adoptFilesFrom: { user: cfg.appName, fileMode: "0640" } };
}

function unitFile(path: string, content: string): HostFile {
  return { path, owner: "root", group: "root", mode: "0644", content };
}

/**
 * The database's converge steps, after the engine's unit and before its start: the backup tree and
 * the session-backup drop-in (in place before the engine's first start), then the backup timer and
 * service.
 */
export function databaseSteps(cfg: KeelConfig): Step[] {
  const service = unitFile(`/etc/systemd/system/${backupServiceName(cfg)}`, renderBackupService(cfg));
  const timer = unitFile(`/etc/systemd/system/${backupTimerName(cfg)}`, renderBackupTimer(cfg));
  const dropIn = unitFile(dropInPath(cfg), renderSessionDropIn(cfg));
  const p = hostPaths(cfg);
  return [
    // The backup tree (both directories; an older keel's files handed to the backup user) together
    // with the drop-in that writes it as that user, right after the engine's unit: an up that stops
    // in between leaves neither an old drop-in facing the new tree nor the reverse.
    placeStep("db-session-backups", `give ${p.backupDir} to ${backupUser(cfg)} and back up the DB before every start and after every stop of ${p.unit} (into ${sessionBackupDir(cfg)})`, {
      dirs: [backupTreeDir(cfg, p.backupDir), backupTreeDir(cfg, sessionBackupDir(cfg))],
      files: [dropIn],
      check: ["systemd-analyze", "verify", `/etc/systemd/system/${p.unit}`],
      onChange: [["systemctl", "daemon-reload"]],
    }),
    placeStep("db-backup-timer", `install ${backupServiceName(cfg)} and ${backupTimerName(cfg)} (${cfg.backupSchedule}, keep ${cfg.backupRetention}) and start the timer`, {
      files: [service, timer],
      check: ["systemd-analyze", "verify", service.path, timer.path],
      onChange: [
        // Enabled first without a reload of its own, so one daemon-reload (seconds on a small server)
        // loads the units and the link, and leaves nothing flagged as changed on disk.
        ["systemctl", "enable", "--no-reload", backupTimerName(cfg)],
        ["systemctl", "daemon-reload"],
        ["systemctl", "start", backupTimerName(cfg)],
      ],
    }),
  ];
}

/** Seconds for each migration step: a GiB-sized DB is verified twice on each side and copied once. */
export const MIGRATION_TIMEOUT_SECONDS = 3600;

/**
 * The migration of keel:migrateFrom (seed 000 §4), when it is set: the staging directory; on the
 * operator's machine, the source gate (or the newest clean backup of keel:migrateFallbackDir);
 * the copy of that one file; on the host, the sha256 comparison and adopt, only while there is no
 * live DB. Placed before the engine's start step, so the engine's first start opens the adopted DB.
 */
export function migrationSteps(cfg: KeelConfig): Step[] {
  if (!cfg.migrateFrom) return [];
  const p = hostPaths(cfg);
  const staged = stagedDbPath(cfg);
  const fallback = cfg.migrateFallbackDir;
  return [
    placeStep("db-migrate-staging", `create ${incomingDir(cfg)} (the deploy user's, 0700), where the migrated DB lands`, {
      dirs: [{ path: incomingDir(cfg), owner: cfg.deployUser, group: cfg.deployUser, mode: "0700" }],
      files: [],
    }),
    localStep(
      "db-migrate-source",
      `on this machine: prove ${cfg.migrateFrom} clean (keel-db-gate prepare)` +
        (fallback ? `, else take the newest backup in ${fallback} that passes the gate` : "; stop if it fails"),
      "scripts/steps/db-migrate-source.sh",
      [...(fallback ? ["--fallback-dir", fallback] : []), ...(cfg.migrateAcceptFallback ? ["--accept-fallback", cfg.migrateAcceptFallback] : []), cfg.migrateFrom],
      { alsoScripts: ["scripts/host/keel-db-gate", "scripts/host/keel-db-lib"], timeoutSeconds: MIGRATION_TIMEOUT_SECONDS },
    ),
    uploadStep("db-migrate-upload", `copy the DB file chosen on this machine to ${staged} on the host`, "db-migrate-source", staged, MIGRATION_TIMEOUT_SECONDS),
    toolStep(
      "db-migrate-adopt",
      `if ${p.db} does not exist yet: compare the copy's sha256 with this machine's and adopt it (keel-db-gate adopt, owner ${cfg.appName})`,
      "db-migrate",
      ["--owner", `${cfg.appName}:${cfg.appName}`, "--unit", p.unit, staged, p.db],
      { stdinFrom: "db-migrate-source", alsoTools: ["db-gate", "db-lib"], timeoutSeconds: MIGRATION_TIMEOUT_SECONDS },
    ),
  ];
}
