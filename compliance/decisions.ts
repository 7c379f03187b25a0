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

/** Debian 12 and 13 have a merged /usr: /lib/sysctl.d is /usr/lib/sysctl.d, the packages' own directory. */
const PACKAGE_SYSCTL = (key: string, pkgValue: string, file: string) =>
  `keel sets ${key} in /etc/sysctl.d/99-zz-keel.conf, which sorts after every other sysctl.d file, so the value in force is the rule's (keel's hardening VM tests compare it with sysctl -n, and keel verify does on a live host). The rule's check also reads /lib/sysctl.d as a file the administrator owns; with Debian's merged /usr that is the packages' directory, where ${file} sets ${pkgValue}. Editing a package's file would be undone by its next upgrade.`;

export const DECISIONS: readonly Decision[] = [
  ...["boot", "home", "opt", "srv", "usr", "var", "var_log", "var_log_audit", "var_tmp"].map(
    (p): Decision => ({ rule: `partition_for_${p}`, kind: "cannot apply", reason: PARTITION }),
  ),
  {
    rule: "sysctl_net_ipv4_conf_all_arp_ignore",
    kind: "would harm",
    reason:
      "The profile wants arp_ignore = 2: answer ARP only for a sender in the same subnet as the address asked for. A Hetzner Cloud server's public IPv4 address is a /32 and its gateway, 172.31.1.1, is in no subnet of it, so the gateway's ARP requests would go unanswered and the server would drop off the network. keel keeps the kernel's default (0) on this single-interface host and ignores gratuitous ARP (drop_gratuitous_arp = 1).",
  },
  {
    rule: "sysctl_kernel_perf_event_paranoid",
    kind: "met otherwise",
    reason:
      "The rule wants exactly 2 (no kernel profiling by unprivileged users). keel sets 3, which Debian's kernels add and which is stricter: no perf_event_open at all for unprivileged users.",
  },
  {
    rule: "sysctl_kernel_yama_ptrace_scope",
    kind: "met otherwise",
    reason:
      "The rule wants exactly 1 (ptrace of descendants only). keel sets 2, which is stricter: only root may ptrace. Debugging the engine needs sudo, which it needs anyway because the engine runs as its own user.",
  },
  { rule: "sysctl_fs_protected_fifos", kind: "met otherwise", reason: PACKAGE_SYSCTL("fs.protected_fifos = 2", "1", "procps's 99-protect-links.conf") },
  {
    rule: "sysctl_kernel_pid_max",
    kind: "met otherwise",
    reason:
      "ANSSI asks for kernel.pid_max = 65536 to widen the old default of 32768, so that process ids are reused later. Debian's systemd already sets 4194304 (/usr/lib/sysctl.d/50-pid-max.conf), 64 times that; lowering it to the rule's value would make reuse sooner. The check wants the exact value.",
  },
  {
    rule: "postfix_client_configure_mail_alias",
    kind: "met otherwise",
    reason:
      "The rule forwards root's mail to a monitored address through /etc/aliases, so that what the system reports reaches a person. A keel host runs no mail transfer agent and sends no mail; what it reports goes out through keel-health's webhook when keel:alertWebhookUrl is set (the health timer drives it), and is in the health report the runbook reads either way.",
  },
];
