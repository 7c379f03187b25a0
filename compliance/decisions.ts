// keel's decisions on the ANSSI BP-028 rules it does not apply (issue 14, docs/COMPLIANCE.md): the one
// list the tailoring file (compliance/keel-anssi-bp28.tailoring.xml, `npm run gen`) and
// COMPLIANCE.md's table are rendered from. A rule that is a real control on a one-service VPS is
// not listed here: keel applies it (first boot and converge) and a VM test checks it.

/** Why keel does not apply a rule. */
export type DecisionKind =
  /** The rule asks for something a cloud server made from a provider's image cannot have. */
  | "cannot apply"
  /** Applying it would break this host: lock out key-only accounts, or keel's own steps. */
  | "would harm"
  /** The rule's intent is met another way, which its check does not look for. */
  | "met otherwise";

export interface Decision {
  /** The rule's short id (without xccdf_org.ssgproject.content_rule_). */
  readonly rule: string;
  readonly kind: DecisionKind;
  /** Written for an auditor: what the rule asks, and why keel does not do it. */
  readonly reason: string;
}

export const TAILORING_FILE = "compliance/keel-anssi-bp28.tailoring.xml";
/** The tailoring file's version; raise it (and its date) when the decisions change. */
export const TAILORING_VERSION = { version: "1", time: "2026-12-05T00:00:00" } as const;

const PARTITION =
  "Hetzner Cloud servers boot the provider's image: one root file system on one disk, no spare space to carve partitions from, and a rescale or rebuild replaces the disk layout. A separate partition cannot be made on a running cloud server without reinstalling it; keel guards the disk with its free-space check instead.";

export const DECISIONS: readonly Decision[] = [
  ...["boot", "home", "opt", "srv", "usr", "var", "var_log", "var_log_audit", "var_tmp"].map(
    (p): Decision => ({ rule: `partition_for_${p}`, kind: "cannot apply", reason: PARTITION }),
  ),
];
