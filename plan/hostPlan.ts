import type { KeelConfig } from "../config";
import { auditLogSteps } from "./auditLog";
import { databaseSteps, migrationSteps } from "./database";
import { engineSteps } from "./engine";
import { auditLogDir, backupUser, hostPaths } from "./layout";
import { hardeningSteps, packagesStep } from "./hardening";
import { healthSteps, hostConfFile, HOST_CONF, keelEtc } from "./health";
import { httpsSteps } from "./https";
import { integritySteps } from "./integrity";
import { secretSteps } from "./secrets";
import { placeStep, readinessStep } from "./steps";
import { complianceFiles, toolFiles } from "./tools";
import type { Bundle, HostFile, HostPlan, Step } from "./types";

/**
 * The engine's system user, the backup user (the backup tree is its own: a compromised engine can
 * neither delete nor forge a backup), their directories (DESIGN.md "Host layout") and keel's own
 * state dir.
 */
export function layoutBundle(cfg: KeelConfig): Bundle {
  const p = hostPaths(cfg);
  const app = cfg.appName;
  const deploy = cfg.deployUser;
  return {
    users: [
      { name: app, home: p.stateDir },
      { name: backupUser(cfg), home: p.backupDir },
    ],
    dirs: [
      // The deploy user's home (cloud-init makes it 0755): its uploads and DB snapshots stay its own.
      { path: `/home/${deploy}`, owner: deploy, group: deploy, mode: "0750" },
      { path: `/opt/${app}`, owner: "root", group: "root", mode: "0755" },
      { path: p.appDir, owner: deploy, group: deploy, mode: "0755" },
      { path: p.venv, owner: deploy, group: deploy, mode: "0755" },
      { path: p.configDir, owner: "root", group: app, mode: "0750" },
      { path: p.stateDir, owner: app, group: app, mode: "0700" },
      { path: p.keelState, owner: "root", group: "root", mode: "0700" },
      // keel:auditLog: the engine's unit names this directory (ReadWritePaths=), so it exists before the engine starts.
      ...(cfg.auditLog ? [{ path: auditLogDir(cfg), owner: "root", group: app, mode: "0750" }] : []),
    ],
    // The shell start-up files /etc/skel gave the deploy user (0644): readable by its group at
    // most, never by others and never executable (ANSSI BP-028's file_permission_user_init_files).
    modes: DEPLOY_INIT_FILES.map((name) => ({ path: `/home/${deploy}/${name}`, owner: deploy, mode: "0640" })),
    files: [],
  };
}

/** The start-up files a login shell reads from a home directory (those ANSSI BP-028's check names; most do not exist). */
const DEPLOY_INIT_FILES = [".bash_login", ".bash_profile", ".bashrc", ".cshrc", ".profile", ".zshrc"] as const;

/** The deploy user's authorized_keys: exactly the admin keys, so a retired key is gone after the next up. */
export function authorizedKeysFile(cfg: KeelConfig): HostFile {
  return {
    path: `/home/${cfg.deployUser}/.ssh/authorized_keys`,
    owner: cfg.deployUser,
    group: cfg.deployUser,
    mode: "0600",
    content: cfg.adminKeys.map((k) => k.trim() + "\n").join(""),
  };
}

/**
 * The engine's steps with the database's before its start step: the session-backup drop-in must be
 * in place for the first start, and a migrated DB must be adopted before it.
 */
function engineWithDatabase(cfg: KeelConfig): Step[] {
  const engine = engineSteps(cfg);
  const start = engine.findIndex((s) => s.name === "engine-start");
  if (start < 0) throw new Error("host plan: the engine's steps have no engine-start step");
  return [...engine.slice(0, start), ...databaseSteps(cfg), ...migrationSteps(cfg), ...engine.slice(start)];
}

/** Everything keel puts on the host after first boot, as ordered idempotent steps. */
export function buildHostPlan(cfg: KeelConfig): HostPlan {
  const steps = [
    readinessStep(),
    // The tools and host.conf, which keel-health and keel-ops read, in one keel-place run: a tool of
    // one keel never meets the config of another (after an up that stopped midway, or between steps).
    // The compliance tailoring file goes with keel-compliance, which evaluates it.
    placeStep("tools", `install keel's host tools (/usr/local/sbin/keel-*), ${HOST_CONF}, which they read, and the compliance tailoring file`, {
      dirs: [keelEtc, ...complianceFiles().dirs],
      files: [...toolFiles(), hostConfFile(cfg), ...complianceFiles().files],
    }),
    packagesStep(cfg),
    placeStep("layout", "create the engine's system user and the directory layout", layoutBundle(cfg)),
    placeStep("admin-keys", "set the deploy user's authorized_keys to exactly the admin keys", { files: [authorizedKeysFile(cfg)] }),
    ...hardeningSteps(cfg),
    ...secretSteps(cfg),
    // keel:auditLog: the live file, append-only, before the engine's first start opens it; none without the key.
    ...auditLogSteps(cfg),
    ...engineWithDatabase(cfg),
    // keel:https's Caddy in front of the engine: after it, before the checks; none without the key.
    ...httpsSteps(cfg),
    ...healthSteps(cfg),
    // Last: the baseline holds what every step before it put on the host.
    ...integritySteps(cfg),
  ];
  const names = steps.map((s) => s.name);
  const dup = names.find((n, i) => names.indexOf(n) !== i);
  if (dup) throw new Error(`host plan: two steps are named ${dup}`);
  return { files: steps.flatMap((s) => s.bundle?.files ?? []), steps };
}
