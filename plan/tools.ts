import { readStatic } from "./static";
import type { HostFile } from "./types";

/**
 * keel's host tools: the files of scripts/host/, each named as it is installed, keel-<name>, in
 * /usr/local/sbin. The deploy user's sudo is limited to these (see cloud-init/userData.ts), so
 * every root action on the host is one of them and shows up by name in the auth log.
 */
export const TOOL_NAMES = [
  "place",
  "packages",
  "engine-venv",
  "engine-start",
  // The DB tools (docs/DATABASE.md) find their library beside them: keel-db-lib.
  "db-lib",
  "db-gate",
  "db-backup",
  "db-restore",
  "db-snapshot",
  "db-session-backup",
  "db-migrate",
  "health",
  "health-alert",
  // host.conf's one reader (plan/hostConf.ts), for keel-health, keel-ops and keel-verify.
  "host-conf",
  // The runbook's root actions (docs/RUNBOOK.md).
  "ops",
  // keel verify's checks on the host (scripts/runbook/verify.sh runs it through sudo), read-only.
  "verify",
] as const;

export type Tool = (typeof TOOL_NAMES)[number];

/** Where each tool's source is in this repository: scripts/host/keel-<name>. */
export const TOOLS = Object.fromEntries(TOOL_NAMES.map((t) => [t, `scripts/host/keel-${t}`])) as Record<Tool, string>;

export const TOOLS_DIR = "/usr/local/sbin";

export function toolPath(tool: Tool): string {
  return `${TOOLS_DIR}/keel-${tool}`;
}

/** The tool files as keel places them (root-owned, not writable by anyone else). */
export function toolFiles(): HostFile[] {
  return [...TOOL_NAMES].sort().map((tool) => ({
    path: toolPath(tool),
    owner: "root",
    group: "root",
    mode: "0755",
    content: readStatic(TOOLS[tool]),
  }));
}
