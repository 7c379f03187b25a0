import type { KeelConfig } from "../config";

/** Where things live on the host (DESIGN.md "Host layout"; seed 000 §12). */
export interface HostPaths {
  /** Git checkout at the pinned commit; owned by the deploy user, read-only for the service. */
  readonly appDir: string;
  /** venv built from the system Python. */
  readonly venv: string;
  readonly configDir: string;
  /** Non-secret settings as YAML (root:<app> 0640). */
  readonly configFile: string;
  /** Secrets as a systemd EnvironmentFile (root:root 0600). */
  readonly envFile: string;
  /** The live SQLite DB's directory (<app> 0700, local disk only). */
  readonly stateDir: string;
  readonly db: string;
  /** Verified backups, apart from the live DB: the backup user's, readable by the engine's group (2750). */
  readonly backupDir: string;
  readonly unit: string;
  /** keel's own host tools (keel-place and friends). */
  readonly toolsDir: string;
  /** keel's own state: the manifest of placed files, step records. */
  readonly keelState: string;
  /** The read-only deploy key for the git host. */
  readonly deployKey: string;
  readonly gitKnownHosts: string;
}

/**
 * The backup identity (docs/DATABASE.md "The backup identity"): the system user that owns the
 * backup tree, which the engine's user can read but neither write nor delete. appName is at most
 * 25 characters (config.ts), so this name fits Linux's 32.
 */
export function backupUser(cfg: Pick<KeelConfig, "appName">): string {
  return `${cfg.appName}-backup`;
}

export function hostPaths(cfg: Pick<KeelConfig, "appName" | "dbFile" | "deployUser">): HostPaths {
  const app = cfg.appName;
  const home = `/home/${cfg.deployUser}`;
  return {
    appDir: `/opt/${app}/app`,
    venv: `/opt/${app}/venv`,
    configDir: `/etc/${app}`,
    configFile: `/etc/${app}/config.yaml`,
    envFile: `/etc/${app}/${app}.env`,
    stateDir: `/var/lib/${app}`,
    db: `/var/lib/${app}/${cfg.dbFile}`,
    backupDir: `/var/backups/${app}`,
    unit: `${app}.service`,
    toolsDir: "/usr/local/sbin",
    keelState: "/var/lib/keel",
    deployKey: `${home}/.ssh/keel_deploy_ed25519`,
    gitKnownHosts: `${home}/.ssh/keel_git_known_hosts`,
  };
}

/**
 * keel:auditLog's directory, /var/log/<app>: root's, the engine's group may enter it (plan/auditLog.ts).
 * The engine appends to its one file there and can create, rename or delete nothing.
 */
export function auditLogDir(cfg: Pick<KeelConfig, "appName">): string {
  return `/var/log/${cfg.appName}`;
}

/** keel:auditLog's live file, /var/log/<app>/<auditLog>, given to the engine as KEEL_AUDIT_LOG. */
export function auditLogFile(cfg: Pick<KeelConfig, "appName" | "auditLog">): string {
  if (!cfg.auditLog) throw new Error("auditLogFile: keel:auditLog is not set");
  return `${auditLogDir(cfg)}/${cfg.auditLog}`;
}
