import { readStatic } from "./static";
import type { HostFile } from "./types";

/**
 * keel's host tools: scripts from this repository installed as /usr/local/sbin/keel-<name>. The
 * deploy user's sudo is limited to these (see cloud-init/), so every root action on the host is one
 * of them and shows up by name in the auth log.
 */
export const TOOLS = {
  place: "scripts/keel-place.py",
  packages: "scripts/keel-packages.sh",
  "engine-venv": "scripts/keel-engine-venv.sh",
  "engine-start": "scripts/keel-engine-start.sh",
  // The DB scripts (docs/DATABASE.md) find their library beside them as keel-db-lib.
  "db-lib": "scripts/db-lib.sh",
  "db-gate": "scripts/db-gate.sh",
  "db-backup": "scripts/db-backup.sh",
  "db-restore": "scripts/db-restore.sh",
  "db-snapshot": "scripts/db-snapshot.sh",
  "db-session-backup": "scripts/db-session-backup.sh",
  "db-migrate": "scripts/db-migrate.sh",
  health: "scripts/keel-health.sh",
  "health-alert": "scripts/health-alert.py",
  ops: "scripts/runbook/keel-ops.sh",
  // keel verify's checks on the host (scripts/runbook/verify.sh runs it through sudo), read-only.
  verify: "scripts/runbook/verify-host.py",
} as const;

export type Tool = keyof typeof TOOLS;

export const TOOLS_DIR = "/usr/local/sbin";

export function toolPath(tool: Tool): string {
  return `${TOOLS_DIR}/keel-${tool}`;
}

/** The tool files as keel places them (root-owned, not writable by anyone else). */
export function toolFiles(): HostFile[] {
  return (Object.keys(TOOLS) as Tool[]).sort().map((tool) => ({
    path: toolPath(tool),
    owner: "root",
    group: "root",
    mode: "0755",
    content: readStatic(TOOLS[tool]),
  }));
}
