import { dirname } from "node:path";
import { stringify } from "yaml";
import type { KeelConfig } from "../config";
import { sha256 } from "./hash";
import { auditLogDir, auditLogFile, hostPaths } from "./layout";
import { PROTECT_KERNEL, RESTRICT, SYSCALLS } from "./sandbox";
import { placeStep, scriptStep, toolStep } from "./steps";
import { toolPath } from "./tools";
import type { HostFile, Step } from "./types";

/**
 * The engine's deploy (seed 000 §2, §3, §5, §6, §11; docs/ENGINE.md): preflight gates, the pinned
 * checkout, the venv, config.yaml, the hardened unit, and the start that restarts only on change.
 */

/**
 * Exit status of a failed startup gate (sysexits EX_CONFIG). The unit lists it in
 * RestartPreventExitStatus: an engine that refuses to start stays stopped instead of looping.
 */
export const GATE_FAILURE_STATUS = 78;

/** Seconds the start step watches the unit after a (re)start before calling it steady. */
export const SETTLE_SECONDS = 5;

/** Restart policy: a crash restarts after RestartSec; more than BURST starts in INTERVAL stop it. */
export const RESTART = { restartSec: 5, startLimitIntervalSec: 300, startLimitBurst: 5 } as const;

/**
 * Where the engine may connect: everywhere except link-local (the cloud metadata service at
 * 169.254.169.254 serves the first-boot user-data) and multicast/reserved ranges. systemd has no
 * "everything except", so these are the prefixes that cover the rest of each address space (a
 * unit test proves the cover is exact).
 */
export const ALLOWED_IPV4 = [
  "0.0.0.0/1", "128.0.0.0/3", "160.0.0.0/5", "168.0.0.0/8", "169.0.0.0/9", "169.128.0.0/10",
  "169.192.0.0/11", "169.224.0.0/12", "169.240.0.0/13", "169.248.0.0/14", "169.252.0.0/15",
  "169.255.0.0/16", "170.0.0.0/7", "172.0.0.0/6", "176.0.0.0/4", "192.0.0.0/3",
];
export const DENIED_IPV4 = ["169.254.0.0/16", "224.0.0.0/3"];
export const ALLOWED_IPV6 = ["::/1", "8000::/2", "c000::/3", "e000::/4", "f000::/5", "f800::/6", "fc00::/7", "fe00::/9", "fec0::/10"];
export const DENIED_IPV6 = ["fe80::/10", "ff00::/8"];

/** A unit's address lines for every address but link-local and multicast (the engine's; keel:https's Caddy). */
export const IP_NOT_LINK_LOCAL = ["IPAddressDeny=any", "IPAddressAllow=localhost", `IPAddressAllow=${ALLOWED_IPV4.join(" ")}`, `IPAddressAllow=${ALLOWED_IPV6.join(" ")}`] as const;

/** The unit file's path. */
export function unitFilePath(cfg: KeelConfig): string {
  return `/etc/systemd/system/${hostPaths(cfg).unit}`;
}

/** The start step's record of what the running engine was started from (root-only, keel's state). */
export function deployedStampPath(cfg: KeelConfig): string {
  return `${hostPaths(cfg).keelState}/${cfg.appName}.deployed`;
}

/** ExecStart: startCommand with its first word resolved in the venv's bin/ (never from PATH). */
export function execStart(cfg: KeelConfig): string {
  const [program, ...args] = cfg.startCommand.split(" ");
  if (program.includes("/")) {
    throw new Error(
      `keel:startCommand: expected a program in the venv's bin/ (such as 'python -m engine'); found ${JSON.stringify(cfg.startCommand)}. ` +
        "fix: pulumi config set keel:startCommand 'python -m <module>'",
    );
  }
  return [`${hostPaths(cfg).venv}/bin/${program}`, ...args].join(" ");
}

/**
 * config.yaml: keel:settings as YAML (seed 000 §6: strategy and config values in YAML, secrets in
 * the environment). Keys sorted, strings on one line (no block scalars, no folding), so equal
 * settings give equal bytes and the simplest YAML reader can read it.
 */
export function renderConfigYaml(cfg: KeelConfig): string {
  const p = hostPaths(cfg);
  const header = [
    `# ${p.configFile}: the non-secret settings of ${cfg.appName}, written by keel from keel:settings.`,
    `# Edits here are overwritten on the next pulumi up. Secrets are in ${p.envFile}, never here.`,
  ];
  return header.join("\n") + "\n" + stringify(cfg.settings, { sortMapEntries: true, lineWidth: 0, blockQuote: false });
}

/**
 * The highest `systemd-analyze security` exposure level the engine's unit may have: the VM tier
 * measures it (test/vm/engine.test.ts) and keel verify checks the live unit against it
 * (scripts/host/keel-verify MAX_EXPOSURE, kept equal by test/unit/verify.test.ts).
 */
export const MAX_ENGINE_EXPOSURE = 1.5;

/**
 * The engine's unit (seed 000 §5; its sandbox: docs/ENGINE.md "The sandbox"). The engine needs
 * outbound network and its own state and backup directories, nothing else; `systemd-analyze
 * security` rates this unit 1.0 (at most MAX_ENGINE_EXPOSURE).
 */
export function renderUnit(cfg: KeelConfig): string {
  const p = hostPaths(cfg);
  const app = cfg.appName;
  const lines = [
    "# Written by keel (plan/engine.ts); edits are overwritten on the next pulumi up.",
    "[Unit]",
    `Description=${app}, the Python service keel deploys (docs/ENGINE.md)`,
    "After=network-online.target",
    "Wants=network-online.target",
    `StartLimitIntervalSec=${RESTART.startLimitIntervalSec}`,
    `StartLimitBurst=${RESTART.startLimitBurst}`,
    "",
    "[Service]",
    "# One instance only (seed 000 §11E): a plain unit, which systemd never runs twice.",
    "Type=exec",
    `User=${app}`,
    `Group=${app}`,
    `WorkingDirectory=${p.appDir}`,
    `ExecStart=${execStart(cfg)}`,
    `EnvironmentFile=${p.envFile}`,
    "# The engine reads its settings from a private copy taken at start (systemd credentials).",
    `LoadCredential=config.yaml:${p.configFile}`,
    "Environment=KEEL_CONFIG=%d/config.yaml",
    `Environment=KEEL_DB=${p.db}`,
    `Environment=KEEL_STATE_DIR=${p.stateDir}`,
    ...(cfg.auditLog ? [`Environment=KEEL_AUDIT_LOG=${auditLogFile(cfg)}`] : []),
    "Environment=PYTHONUNBUFFERED=1",
    "Environment=PYTHONDONTWRITEBYTECODE=1",
    "StandardOutput=journal",
    "StandardError=journal",
    `SyslogIdentifier=${app}`,
    "Restart=on-failure",
    `RestartSec=${RESTART.restartSec}`,
    `# A failed startup gate exits ${GATE_FAILURE_STATUS}: the engine stays stopped, no crash loop.`,
    `RestartPreventExitStatus=${GATE_FAILURE_STATUS}`,
    `TimeoutStopSec=${STOP_TIMEOUT_SECONDS}`,
    "UMask=0077",
    "",
    "# Sandbox: outbound IPv4/IPv6 and the state directory; nothing else (the backups are the backup user's).",
    "ProtectSystem=strict",
    `ReadWritePaths=${p.stateDir}`,
    // keel:auditLog: the directory is root's (the engine writes its file there, but creates,
    // renames and deletes nothing): plan/auditLog.ts.
    ...(cfg.auditLog ? [`ReadWritePaths=${auditLogDir(cfg)}`] : []),
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "PrivateUsers=yes",
    "PrivateMounts=yes",
    "PrivateIPC=yes",
    "ProtectProc=invisible",
    "ProcSubset=pid",
    ...PROTECT_KERNEL,
    "CapabilityBoundingSet=",
    "AmbientCapabilities=",
    ...RESTRICT,
    "RemoveIPC=yes",
    "KeyringMode=private",
    "DevicePolicy=closed",
    "RestrictAddressFamilies=AF_INET AF_INET6",
    "# Every address but link-local (the cloud metadata service) and multicast.",
    ...IP_NOT_LINK_LOCAL,
    ...SYSCALLS,
    "",
    "[Install]",
    "WantedBy=multi-user.target",
  ];
  return lines.join("\n") + "\n";
}

export function configFile(cfg: KeelConfig): HostFile {
  return { path: hostPaths(cfg).configFile, owner: "root", group: cfg.appName, mode: "0640", content: renderConfigYaml(cfg) };
}

export function unitFile(cfg: KeelConfig): HostFile {
  return { path: unitFilePath(cfg), owner: "root", group: "root", mode: "0644", content: renderUnit(cfg) };
}

/** The engine's TimeoutStopSec=: its stop, the post-session backup (ExecStopPost=) included. */
export const STOP_TIMEOUT_SECONDS = 30;

/**
 * The engine's TimeoutStartSec= (set by the session-backup drop-in, plan/database.ts): how long a
 * start may take, the pre-session backup included (systemd's default is 90 s):
 * keel:startTimeoutMinutes. The backup verifies the whole DB: about 19 s per GiB measured
 * (docs/DATABASE.md "Benchmark").
 */
export function startTimeoutSeconds(cfg: KeelConfig): number {
  return cfg.startTimeoutMinutes * 60;
}

/**
 * How long a step that restarts the engine may take: its stop, its start, the settle time, and two
 * minutes for the rest. A fixed 300 s failed every deploy of a DB above roughly 13 GiB, whose
 * pre-session backup alone takes longer.
 */
export function engineRestartTimeoutSeconds(cfg: KeelConfig): number {
  return STOP_TIMEOUT_SECONDS + startTimeoutSeconds(cfg) + SETTLE_SECONDS + 120;
}

/**
 * What the secrets step runs when the EnvironmentFile changed: restart the engine if it is enabled,
 * a unit its startup gate stopped included (`systemctl try-restart` leaves a failed unit alone), and
 * confirm it stays up. Before the first deploy it does nothing: the engine-start step starts it.
 */
export function secretsChangedCommand(cfg: KeelConfig): string[] {
  return [toolPath("engine-start"), "secrets-changed", `unit=${hostPaths(cfg).unit}`, `settle=${SETTLE_SECONDS}`];
}

/**
 * The engine's steps, after the layout and secret steps. Each re-runs when its own inputs change;
 * the source, venv and start steps name the commit, so a new keel:repoRef re-runs those three (the
 * lock file lives in the repository: a new commit may bring a new one) and nothing else.
 */
export function engineSteps(cfg: KeelConfig): Step[] {
  const p = hostPaths(cfg);
  const config = configFile(cfg);
  const unit = unitFile(cfg);
  return [
    scriptStep(
      "engine-preflight",
      `check free disk (>= ${cfg.minFreeDiskGiB} GiB) and the system Python (${cfg.pythonVersion}) before deploying`,
      "scripts/steps/engine-preflight.sh",
      // The backups' parent: the backup directory itself is made later (the db-session-backups step).
      [cfg.pythonVersion, String(cfg.minFreeDiskGiB), p.stateDir, dirname(p.backupDir)],
    ),
    scriptStep(
      "engine-source",
      `check out ${cfg.repoRef} of ${cfg.repoUrl} in ${p.appDir} with the deploy key`,
      "scripts/steps/engine-source.sh",
      [cfg.repoUrl, cfg.repoRef, p.appDir, p.deployKey, p.gitKnownHosts],
      600,
    ),
    toolStep(
      "engine-venv",
      `build the venv ${p.venv} from ${cfg.requirementsFile} with the system Python (rebuilt only when the lock file changes)`,
      "engine-venv",
      [cfg.deployUser, p.appDir, cfg.repoRef, cfg.requirementsFile, p.venv, cfg.pythonVersion],
      { timeoutSeconds: 1800 },
    ),
    placeStep("engine-config", `write the engine's settings ${p.configFile}`, { files: [config] }),
    placeStep("engine-unit", `install the systemd unit ${p.unit}`, {
      files: [unit],
      check: ["systemd-analyze", "verify", unit.path],
      onChange: [["systemctl", "daemon-reload"]],
    }),
    toolStep(
      "engine-start",
      `enable ${p.unit}, (re)start it only when its code, venv, config or unit changed, and confirm it stays up`,
      "engine-start",
      [
        `unit=${p.unit}`,
        `unit-file=${unit.path}`,
        `unit-sha256=${sha256(unit.content)}`,
        `config=${config.path}`,
        `config-sha256=${sha256(config.content)}`,
        `app-dir=${p.appDir}`,
        `commit=${cfg.repoRef}`,
        `venv=${p.venv}`,
        `requirements=${cfg.requirementsFile}`,
        `python=${cfg.pythonVersion}`,
        `stamp=${deployedStampPath(cfg)}`,
        `settle=${SETTLE_SECONDS}`,
      ],
      { timeoutSeconds: engineRestartTimeoutSeconds(cfg) },
    ),
  ];
}
