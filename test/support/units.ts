// keel's systemd units as the host plan renders them, with the exposure `systemd-analyze security`
// may report for each service: one list for the host tier (this machine's systemd) and the VM tier
// (test/vm/hardening-trixie.test.ts runs it on Debian 13's systemd 257, the closest to Ubuntu
// 26.04's 259 that keel can boot).
import type { KeelConfig } from "../../config";
import { AUDIT_LOG_SERVICE, auditLogFiles } from "../../plan/auditLog";
import { backupServiceName, backupTimerName, dropInPath, renderBackupService, renderBackupTimer, renderSessionDropIn } from "../../plan/database";
import { execStart, MAX_ENGINE_EXPOSURE, renderUnit, unitFilePath } from "../../plan/engine";
import { healthUnitFiles, HEALTH_SERVICE } from "../../plan/health";
import { integrityFiles, INTEGRITY_SERVICE } from "../../plan/integrity";
import { TOOL_NAMES, toolPath, type Tool } from "../../plan/tools";

/** The engine's unit's (plan/engine.ts; keel verify's engine-exposure check holds it to the same). */
export { MAX_ENGINE_EXPOSURE };
/**
 * The exposure `systemd-analyze security` may report for the backup service. 1.1 since the backup
 * identity (docs/DATABASE.md): the service starts as root with CAP_SETUID/CAP_SETGID and the set*id
 * system calls only to run its two sides as two users: User= (0.4), the capabilities (0.3),
 * @privileged not wholly denied (0.2) and no PrivateUsers= (0.2) count against it, where the service
 * that ran as the engine's user scored 0.2. The price of a backup tree a compromised engine can
 * neither delete nor forge; root there runs setpriv and nothing else (keel-db-backup --as).
 */
export const MAX_BACKUP_EXPOSURE = 1.1;
/** keel-health.service: root, for its checks, little else. */
export const MAX_HEALTH_EXPOSURE = 3.0;

/**
 * keel-integrity.service: root, to read every file, with nothing writable but aide's database and
 * its record, no network, no set*id or chown: 1.3 (root 0.4, CAP_DAC_READ_SEARCH 0.2, @resources
 * for its nice/ionice 0.2, no ProtectKernelModules= 0.2, since it would hide /usr/lib/modules from
 * aide, read-only homes 0.1, no PrivateUsers 0.2 since it reads as root).
 */
export const MAX_INTEGRITY_EXPOSURE = 1.3;

/**
 * keel-audit-log.service (keel:auditLog): root, to lift and restore the attribute of the engine's
 * file, copy and truncate it and hand its copies to root, and to freeze the engine meanwhile:
 * 1.2 (root 0.4; CAP_DAC_OVERRIDE and CAP_FOWNER 0.2, to open and chmod the engine's file;
 * CAP_CHOWN 0.2 and the @chown calls 0.2, for the rotated files; CAP_LINUX_IMMUTABLE 0.1, the
 * attribute; AF_UNIX 0.1, systemd's socket for freeze and thaw; no PrivateUsers 0.2, as it acts on
 * other users' files; the host's root directory 0.1; ProtectClock's read of the RTC 0.1).
 */
export const MAX_AUDIT_LOG_EXPOSURE = 1.2;

/** Every unit file keel installs for the engine, its backups, health, the integrity check and keel:auditLog (when set): path and content. */
export function keelUnitFiles(cfg: KeelConfig): [string, string][] {
  return [
    [unitFilePath(cfg), renderUnit(cfg)],
    [dropInPath(cfg), renderSessionDropIn(cfg)],
    [`/etc/systemd/system/${backupServiceName(cfg)}`, renderBackupService(cfg)],
    [`/etc/systemd/system/${backupTimerName(cfg)}`, renderBackupTimer(cfg)],
    ...healthUnitFiles(cfg).map((f): [string, string] => [f.path, f.content]),
    ...[...integrityFiles(cfg.image), ...auditLogFiles(cfg)]
      .filter((f) => f.path.startsWith("/etc/systemd/"))
      .map((f): [string, string] => [f.path, f.content]),
  ];
}

/** The services among them (their unit files' paths), with the exposure each may have. */
export function keelServices(cfg: KeelConfig): { path: string; maxExposure: number }[] {
  return [
    { path: unitFilePath(cfg), maxExposure: MAX_ENGINE_EXPOSURE },
    { path: `/etc/systemd/system/${backupServiceName(cfg)}`, maxExposure: MAX_BACKUP_EXPOSURE },
    { path: healthUnitFiles(cfg).find((f) => f.path.endsWith(`/${HEALTH_SERVICE}`))!.path, maxExposure: MAX_HEALTH_EXPOSURE },
    { path: `/etc/systemd/system/${INTEGRITY_SERVICE}`, maxExposure: MAX_INTEGRITY_EXPOSURE },
    ...(cfg.auditLog ? [{ path: `/etc/systemd/system/${AUDIT_LOG_SERVICE}`, maxExposure: MAX_AUDIT_LOG_EXPOSURE }] : []),
  ];
}

/** The programs the units run (stand-ins make `systemd-analyze verify` pass where they are absent). */
export function keelUnitPrograms(cfg: KeelConfig, without: readonly Tool[] = []): string[] {
  return [execStart(cfg).split(" ")[0], ...TOOL_NAMES.filter((t) => !without.includes(t)).map(toolPath)];
}

/** The overall exposure from `systemd-analyze security`'s last line ("… for x.service: 1.0 OK 🙂"). */
export function exposure(output: string): number {
  const m = output.match(/Overall exposure level for \S+: (\d+\.\d+)/);
  if (!m) throw new Error(`no overall exposure in:\n${output}`);
  return Number(m[1]);
}
