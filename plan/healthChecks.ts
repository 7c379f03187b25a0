import { AUDIT_LOG_MAX_AGE_HOURS } from "./auditLog";
import { DB_CHECK_TIMEOUT_SECONDS, SECURITY_GRACE_HOURS } from "./health";
import { INTEGRITY_MAX_AGE_HOURS } from "./integrity";

/**
 * keel-health's checks (seed 000 §9; docs/RUNBOOK.md "Status: the health report"): the one list.
 * `npm run gen` (scripts/dev/generated.ts) writes from it keel-health's CHECKS (the order of the
 * report, --only's names), docs/RUNBOOK.md's table and its details, and the JSON schema of
 * `keel-health --json` (docs/health-report.schema.json); test/unit/generated.test.ts fails when one
 * is stale, and test/host/health.test.ts checks a real report against the schema. A new check is
 * one entry here, its function in keel-health, and its tests.
 *
 * In the doc texts, `{keel:KEY}` is written as the key with its default from config.ts.
 */
export interface HealthCheck {
  readonly name: string;
  /** What it looks at (the table's second column). */
  readonly looksAt: string;
  /** When it is degraded (exit 1); "—" when never. */
  readonly degraded: string;
  /** When it is down (exit 2); "—" when never. */
  readonly down: string;
  /** Its `details` in the JSON report: each field with what it holds. */
  readonly details: Readonly<Record<string, string>>;
}

export const HEALTH_CHECKS: readonly HealthCheck[] = [
  {
    name: "engine",
    looksAt: "`systemctl show <app>.service`: state, automatic restarts (`NRestarts`), last exit status and its meaning",
    degraded: "restarting after a crash; active but not enabled",
    down: "failed (e.g. `status=78/CONFIG`: the startup gate), stopped, not installed",
    details: {
      unit: "the unit's name",
      load_state: "systemd's LoadState (not-found: not installed)",
      active_state: "systemd's ActiveState",
      sub_state: "systemd's SubState",
      unit_file_state: "enabled, disabled, …",
      main_pid: "the main process, or 0",
      n_restarts: "automatic restarts since the unit was started",
      result: "systemd's Result",
      since: "when it entered its state",
      last_exit: "null, or `{code (1 exited, 2 killed, 3 dumped), status, meaning}`",
    },
  },
  {
    name: "db",
    looksAt: `\`PRAGMA quick_check\` on a read-only connection (\`mode=ro\`), as the DB's owner, at most ${DB_CHECK_TIMEOUT_SECONDS} s; the previous DBs a restore or adopt kept aside (named with their size: \`keel-ops remove-asides\` once the DB in place has proven itself)`,
    degraded: "— (unknown: locked, timed out)",
    down: "damage found; no DB file",
    details: { path: "the live DB", size_bytes: "its size", wal_bytes: "its -wal's size", quick_check: "the check's first lines", seconds: "how long it took", asides: "the previous DBs kept aside (at most 50 named; the summary counts them all)", aside_bytes: "their size" },
  },
  {
    name: "backup",
    looksAt: "the newest `NAME-YYYYMMDDTHHMMSSZ.db` in `/var/backups/<app>/` and the last run's `NAME.status.json`",
    degraded:
      "the last run failed (its reason shown); the file the last run wrote is gone, no longer its recorded size or sha256; a kept backup failed its check and is still there (`kept_failed`: docs/DATABASE.md); the newest backup is not the one the last run wrote; the newest backup is dated more than 5 min in the future (a clock that was wrong, or a planted file), is not an SQLite DB (empty, truncated header) or is older than {keel:healthBackupMaxAgeHours}; no backup of a DB older than that (unknown: a status file that is not a regular file — a link, a named pipe: read without following or waiting — or not keel's JSON)",
    down: "—",
    details: {
      dir: "the backups' directory",
      status_file: "the last run's status file",
      max_age_hours: "keel:healthBackupMaxAgeHours",
      count: "backups found",
      newest: "`{file, time, age_seconds, size_bytes}`, or null",
      last_run: "`{result, time, finished, exit_code, reason, keep, count}` as the last run recorded it, or null",
      sha_checked: "the hash record of the newest backup (`identity|sha256 now|sha256 first seen|how`), or null",
    },
  },
  {
    name: "disk",
    looksAt: "use of the filesystems holding the DB, the backups and the journal (`df`), and their sizes",
    degraded: "use at or above the percentage {keel:healthDiskWarnPercent}",
    down: "use at or above the percentage {keel:healthDiskCritPercent}",
    details: {
      warn_percent: "keel:healthDiskWarnPercent",
      crit_percent: "keel:healthDiskCritPercent",
      locations: "`[{name (db/backups/journal), path, filesystem, mount, use_percent, size_bytes, avail_bytes, data_bytes}]`",
    },
  },
  {
    name: "time",
    looksAt: "`timedatectl show -p NTPSynchronized`",
    degraded: "not synchronized",
    down: "—",
    details: { ntp_synchronized: "true/false" },
  },
  {
    name: "updates",
    looksAt: "`apt-get -s dist-upgrade` on the lists apt already has (no network, no lock), counting packages from a `-security` origin; `/run/reboot-required`",
    degraded: `security updates pending for more than ${SECURITY_GRACE_HOURS} h (unattended-upgrades installs them daily)`,
    down: "—",
    details: { pending: "security updates pending", packages: "their names", pending_since: "since when, or null", grace_hours: "how long they may wait", reboot_required: "true/false" },
  },
  {
    name: "fail2ban",
    looksAt: "`fail2ban-client status sshd`: banned now, in total, addresses failing now",
    degraded: "not installed or not running",
    down: "—",
    details: { jail: "the jail", currently_banned: "banned now", total_banned: "banned in total", currently_failed: "addresses failing now", banned_ips: "the banned addresses" },
  },
  {
    name: "drift",
    looksAt: "`keel-place --drift`: every file keel placed, against the sha256, mode, owner and group it placed",
    degraded: "a file changed or removed by hand",
    down: "—",
    details: { manifest: "keel-place's record of what it placed", drifted: "keel-place's lines, one per file" },
  },
  {
    name: "integrity",
    looksAt: "`keel-integrity verdict`: the AIDE baseline against the record keel-integrity keeps of it, and its last daily check (docs/INTEGRITY.md)",
    degraded: `a change no package and no keel step explains (named); no baseline, or one keel-integrity did not build; no check for more than ${INTEGRITY_MAX_AGE_HOURS} h (unknown: keel-integrity gave no verdict)`,
    down: "—",
    details: { verdict: "keel-integrity's verdict: ok, failed or skipped (a host converged by a keel without the baseline)", evidence: "what it found" },
  },
  {
    name: "https",
    looksAt: "`keel-https status --json` (keel:https): `caddy.service` running, and for each domain the certificate Caddy holds and its expiry (docs/HTTPS.md)",
    degraded: "a certificate pending (DNS does not point here yet, or ACME has not finished) or fewer than 14 days from expiry (renewals fail); Caddy running while keel:https is off (unknown: keel-https gave no status); ok, \"off\", when keel:https is unset",
    down: "Caddy not running while keel:https is on: nothing answers on 80 and 443",
    details: {
      enabled: "false when keel:https is off on this host",
      active_state: "caddy.service's ActiveState",
      certificates: "`[{domain, state (ok, expiring, pending), not_after, days_left, issuer}]`",
    },
  },
  {
    name: "audit-log",
    looksAt: "`keel-audit-log status --json` (keel:auditLog): the engine's audit log append-only (`chattr +a`), its owner and mode, its directory, the rotated files root's and read-only, the last daily rotation",
    degraded: `the file missing, not a regular file, not append-only, with another owner or mode or a second name; its directory not root:<app> 0750; a rotated file the engine could rewrite; the engine left frozen; the last rotation failed, or none for more than ${AUDIT_LOG_MAX_AGE_HOURS} h (unknown: keel-audit-log gave no status); ok, "not configured", when keel:auditLog is unset`,
    down: "—",
    details: {
      enabled: "false when keel:auditLog is unset (nothing else is then given)",
      file: "the live file",
      append_only: "true/false, or null when it could not be read",
      rotated: "rotated files kept",
      newest_rotated: "`{file, time, size_bytes}`, or null",
      last_run: "`{time, result, rotated, kept, problems}` as the last rotation recorded it, or null",
      problems: "what is wrong, one line each",
    },
  },
  {
    name: "timer",
    looksAt: "`keel-health.timer` active; whether a webhook is configured",
    degraded: "not active (no periodic checks, no alerts)",
    down: "—",
    details: { timer: "the timer", active_state: "its ActiveState", next: "its next run", last: "its last run", webhook: "true/false: an alert webhook is configured" },
  },
];
