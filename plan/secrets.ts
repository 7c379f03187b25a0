import type { KeelConfig } from "../config";
import { engineRestartTimeoutSeconds, secretsChangedCommand } from "./engine";
import { hostPaths } from "./layout";
import { secretPlaceStep } from "./steps";
import type { Bundle, Step } from "./types";

/**
 * The EnvironmentFile systemd reads (seed 000 §6): one NAME="value" line per secret, sorted.
 * Values are single-line (the config schema refuses newlines); `\` and `"` are escaped the way
 * systemd unquotes double-quoted values, and systemd does no `$` expansion in EnvironmentFile.
 */
export function renderEnvFile(env: Record<string, string>): string {
  return Object.keys(env)
    .sort()
    .map((name) => `${name}="${env[name].replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"\n`)
    .join("");
}

/**
 * Bundle for the env file (root:root 0600). A changed file restarts the engine once it is deployed,
 * a unit its startup gate stopped for want of this very secret included, and checks it stays up
 * (secretsChangedCommand; `systemctl try-restart` would leave a failed unit down).
 */
export function envFileBundle(cfg: KeelConfig, content: string): Bundle {
  const p = hostPaths(cfg);
  return {
    files: [{ path: p.envFile, owner: "root", group: "root", mode: "0600", content }],
    onChange: [secretsChangedCommand(cfg)],
  };
}

/** Bundle for the read-only deploy key (deploy user, 0600) and the git host's pinned known_hosts. */
export function deployKeyBundle(cfg: KeelConfig, privateKey: string): Bundle {
  const p = hostPaths(cfg);
  const u = cfg.deployUser;
  return {
    dirs: [{ path: `/home/${u}/.ssh`, owner: u, group: u, mode: "0700" }],
    files: [
      { path: p.deployKey, owner: u, group: u, mode: "0600", content: privateKey.endsWith("\n") ? privateKey : privateKey + "\n" },
      // Only the deploy user's git reads it: no other user's business (ANSSI's accounts_users_home_files_permissions).
      { path: p.gitKnownHosts, owner: u, group: u, mode: "0600", content: cfg.gitKnownHosts.map((l) => l + "\n").join("") },
    ],
  };
}

/** The steps that carry secrets: each secret only ever travels on a step's stdin. */
export function secretSteps(cfg: KeelConfig): Step[] {
  return [
    secretPlaceStep("deploy-key", "install the read-only deploy key and the git host's pinned known_hosts", "deployKey", (key) => deployKeyBundle(cfg, key)),
    // A changed file restarts the engine: a stop, then a start with its pre-session backup.
    secretPlaceStep("secrets", `write the EnvironmentFile ${hostPaths(cfg).envFile} (0600 root)`, "envFile", (content) => envFileBundle(cfg, content), engineRestartTimeoutSeconds(cfg)),
  ];
}
