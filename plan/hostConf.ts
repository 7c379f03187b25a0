/**
 * /etc/keel/host.conf's contract: every key keel writes there and what kind of value it holds. The
 * one source: plan/health.ts renders the file from it (the type checker requires every key, and each
 * value is checked against its kind before anything is planned), and `npm run gen` copies it into
 * keel-host-conf (scripts/host/), the one reader on the host, which refuses a file with an unknown,
 * missing, repeated or malformed key. keel-health, keel-ops and keel-verify read host.conf only
 * through keel-host-conf. The tools step places the file with the tools (plan/hostPlan.ts), so a
 * reader never meets a host.conf of another keel.
 */
export const HOST_CONF_KEYS = {
  app: "name",
  app_user: "name",
  backup_dir: "path",
  backup_keep: "count",
  backup_max_age_hours: "count",
  backup_service: "name",
  backup_user: "name",
  db: "path",
  db_check_timeout_seconds: "count",
  deploy_user: "name",
  disk_crit_percent: "count",
  disk_warn_percent: "count",
  engine_gate_status: "count",
  env_file: "path",
  fail2ban_jail: "name",
  health_timer: "name",
  journal_dir: "path",
  manifest: "path",
  ops_lock: "path",
  security_grace_hours: "count",
  session_backup_dir: "path",
  settle_seconds: "count",
  ssh_ports: "ports",
  state_file: "path",
  tools_dir: "path",
  unit: "name",
  webhook_file: "path",
} as const satisfies Record<string, HostConfKind>;

export type HostConfKey = keyof typeof HOST_CONF_KEYS;

/**
 * The kinds of value, each a form that needs no quoting in a `key=value` line. The same patterns
 * are keel-host-conf's (test/host/host-conf.test.ts runs both on the same values).
 */
export const HOST_CONF_KINDS = {
  path: { pattern: "^/[A-Za-z0-9._/-]*$", what: "an absolute path of letters, digits and ._/-" },
  name: { pattern: "^[A-Za-z0-9_.@-]+$", what: "a name of letters, digits and _.@-" },
  count: { pattern: "^[0-9]+$", what: "a whole number" },
  ports: { pattern: "^[0-9]+(,[0-9]+)*$", what: "TCP ports separated by commas" },
} as const;

type HostConfKind = keyof typeof HOST_CONF_KINDS;

/** host.conf's text: a header, then the keys sorted. Throws when a value does not fit its kind. */
export function renderHostConfText(header: string[], values: Record<HostConfKey, string | number>): string {
  const keys = Object.keys(HOST_CONF_KEYS).sort() as HostConfKey[];
  for (const key of keys) {
    const kind = HOST_CONF_KINDS[HOST_CONF_KEYS[key]];
    if (!new RegExp(kind.pattern).test(String(values[key]))) throw new Error(`host.conf: ${key} must be ${kind.what}, not '${values[key]}'`);
  }
  return [...header.map((l) => `# ${l}`), ...keys.map((k) => `${k}=${values[k]}`)].join("\n") + "\n";
}
