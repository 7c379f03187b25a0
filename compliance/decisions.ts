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
export const TAILORING_VERSION = { version: "2", time: "2026-12-05T16:00:00" } as const;

const PARTITION =
  "Hetzner Cloud servers boot the provider's image: one root file system on one disk, no spare space to carve partitions from, and a rescale or rebuild replaces the disk layout. A separate partition cannot be made on a running cloud server without reinstalling it; keel guards the disk with its free-space check instead.";

/** Debian 12 and 13 have a merged /usr: /lib/sysctl.d is /usr/lib/sysctl.d, the packages' own directory. */
const PACKAGE_SYSCTL = (key: string, pkgValue: string, file: string) =>
  `keel sets ${key} in /etc/sysctl.d/99-zz-keel.conf, which sorts after every other sysctl.d file, so the value in force is the rule's (keel's hardening VM tests compare it with sysctl -n, and keel verify does on a live host). The rule's check also reads /lib/sysctl.d as a file the administrator owns; with Debian's merged /usr that is the packages' directory, where ${file} sets ${pkgValue}. Editing a package's file would be undone by its next upgrade.`;

const NO_PASSWORDS =
  "The rule governs passwords: how they are chosen (pwquality), stored (hash algorithm and rounds), reused, guessed (faillock) or aged (root's maximum age). No account on a keel host has a password that works: keel locks root's (first boot and the harden-root-access step; Debian's cloud images ship none), cloud-init creates the deploy user locked, system users have none, and sshd takes keys only. keel verify's passwords check fails when any account has one, naming it; a password set by hand for an emergency (Hetzner's console) is locked again by that step (docs/RUNBOOK.md). With no password anywhere, these settings would govern nothing.";

export const DECISIONS: readonly Decision[] = [
  ...[
    "accounts_password_pam_unix_remember",
    "accounts_passwords_pam_faillock_deny",
    "accounts_passwords_pam_faillock_interval",
    "accounts_passwords_pam_faillock_unlock_time",
    "accounts_password_pam_dcredit",
    "accounts_password_pam_lcredit",
    "accounts_password_pam_minclass",
    "accounts_password_pam_minlen",
    "accounts_password_pam_ocredit",
    "accounts_password_pam_retry",
    "accounts_password_pam_ucredit",
    "set_password_hashing_algorithm_logindefs",
    "package_pam_pwquality_installed",
    "accounts_password_set_max_life_root",
    "accounts_password_pam_unix_rounds_password_auth",
  ].map((rule): Decision => ({ rule, kind: "cannot apply", reason: NO_PASSWORDS })),
  {
    rule: "no_direct_root_logins",
    kind: "met otherwise",
    reason:
      "The rule wants an empty /etc/securetty, so that root logs in on no terminal directly. Debian 12 ships no /etc/securetty and its login PAM stack has no pam_securetty, so the file would be read by nothing. The rule's intent holds otherwise: root's password is locked (keel verify's passwords check), so root logs in on no terminal, and sshd refuses root (PermitRootLogin no).",
  },
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
  {
    rule: "sudo_add_requiretty",
    kind: "would harm",
    reason:
      "Every pulumi up step is a command keel's deploy user runs over SSH through @pulumi/command, which asks for no terminal (pulumi-command v1.2.1, provider/pkg/provider/remote/commandOutputs.go: client.NewSession() then session.Run(cmd), no RequestPty), and each step's root part is sudo keel-<tool>. With requiretty sudo would refuse all of them. What requiretty was meant against is covered otherwise: sudo runs a command in a pseudo-terminal of its own whenever the caller has one (use_pty, set in Debian's /etc/sudoers and sudo-rs's default), no sudo rule on a keel host asks for a password, and no account has one.",
  },
  {
    rule: "sudoers_explicit_command_args",
    kind: "met otherwise",
    reason:
      "The rule wants every sudo command written with its arguments, so that a permitted program cannot be turned to other ends by the arguments given. The deploy user's one rule (/etc/sudoers.d/99-keel) permits only keel's tools, /usr/local/sbin/keel-*: root-owned programs keel places and auditd watches, each of which checks its own arguments and refuses what it does not know. Their arguments come from the stack (package names, backup names, the runbook's subcommands), so a list in sudoers would end in wildcards that allow as much as no list.",
  },
  {
    rule: "sudoers_no_root_target",
    kind: "would harm",
    reason:
      "The rule wants no sudo rule that runs commands as root. The deploy user's one rule exists to run keel's tools as root: they install packages, write files under /etc, manage systemd units and hand files between the engine's and the backup's users, none of which another user may do. It is limited to those tools instead, and the commands run with umask 0077 and cannot start other programs unless their rule says so (99-keel's defaults).",
  },
  {
    rule: "sshd_disable_root_login",
    kind: "met otherwise",
    reason:
      "keel sets PermitRootLogin no in its drop-in, /etc/ssh/sshd_config.d/00-keel.conf. Debian's /etc/ssh/sshd_config includes sshd_config.d/*.conf at its top and sshd keeps the first value it reads, so keel's is the one in force: keel verify compares sshd -T with it on a live host, and the hardening VM tests log in as root and are refused. The rule's check reads only /etc/ssh/sshd_config, which openssh-server maintains with ucf: once edited by hand, ucf holds back the package's own changes to it at every upgrade (it asks, or keeps the edited file when nobody can be asked, as under unattended-upgrades).",
  },
];
