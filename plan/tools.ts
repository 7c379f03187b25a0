import { TAILORING_FILE } from "../compliance/decisions";
import { readStatic } from "./static";
import type { HostDir, HostFile } from "./types";

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
  // OpenSCAP with the tailored ANSSI BP-028 profile on the live host (scripts/runbook/compliance.sh).
  "compliance",
  // The file-integrity baseline (AIDE) and its daily check (docs/INTEGRITY.md).
  "integrity",
  // keel:https's Caddy: apply its configuration, stop it, report its certificates (docs/HTTPS.md).
  "https",
  // keel:auditLog's daily rotation and its append-only attribute (docs/HTTPS.md "The audit log").
  "audit-log",
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

/** Where the tools step places the tailoring file keel-compliance evaluates (docs/COMPLIANCE.md). */
export const COMPLIANCE_DIR = "/etc/keel/compliance";
export const COMPLIANCE_TAILORING = `${COMPLIANCE_DIR}/keel-anssi-bp28.tailoring.xml`;

/** compliance/keel-anssi-bp28.tailoring.xml as the tools step places it: root's, readable by all. */
export function complianceFiles(): { dirs: HostDir[]; files: HostFile[] } {
  return {
    dirs: [{ path: COMPLIANCE_DIR, owner: "root", group: "root", mode: "0755" }],
    files: [{ path: COMPLIANCE_TAILORING, owner: "root", group: "root", mode: "0644", content: readStatic(TAILORING_FILE) }],
  };
}
