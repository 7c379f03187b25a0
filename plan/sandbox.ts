/**
 * The systemd sandbox directives every keel service shares (the engine's unit, plan/engine.ts; the
 * backup service, plan/database.ts; keel-health.service, plan/health.ts). Each unit adds what it
 * alone needs around them: its writable paths, capabilities, address families and system calls.
 * test/host/engine-unit.test.ts, health-units.test.ts and db-wiring.test.ts measure each unit with
 * systemd-analyze.
 */

/** No kernel tunables, modules, logs, cgroups, clock or hostname, and no new privileges, ever. */
export const PROTECT_KERNEL = [
  "ProtectKernelTunables=yes",
  "ProtectKernelModules=yes",
  "ProtectKernelLogs=yes",
  "ProtectControlGroups=yes",
  "ProtectClock=yes",
  "ProtectHostname=yes",
  "NoNewPrivileges=yes",
] as const;

/** No set-uid files made, no namespaces, no real-time scheduling, no personality change, no writable-executable memory. */
export const RESTRICT = [
  "RestrictSUIDSGID=yes",
  "RestrictNamespaces=yes",
  "RestrictRealtime=yes",
  "LockPersonality=yes",
  "MemoryDenyWriteExecute=yes",
] as const;

/** The system calls of a service: the native ABI, systemd's @system-service, none privileged or resource-setting, EPERM for the rest. */
export const SYSCALLS = [
  "SystemCallArchitectures=native",
  "SystemCallFilter=@system-service",
  "SystemCallFilter=~@privileged @resources",
  "SystemCallErrorNumber=EPERM",
] as const;
