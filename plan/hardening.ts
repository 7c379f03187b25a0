import { sshPorts, type KeelConfig } from "../config";
import { IMAGE_FACTS, type Image } from "../images";
import { httpsPorts } from "./https";
import { readStatic } from "./static";
import { placeStep, toolStep } from "./steps";
import { TOOLS_DIR } from "./tools";
import type { HostDir, HostFile, HostFileMode, Step } from "./types";

/**
 * The hardening keel puts on the host (seed 000 §1, §8): drop-ins, a firewall file and small
 * scripts, grouped into units that each converge with one keel-place step. cloud-init writes the
 * same files on first boot (cloud-init/userData.ts); `pulumi up` re-converges them on a running
 * server through hardeningSteps. Static parts live in cloud-init/files/; only the lines that
 * depend on the stack config are rendered here.
 */

/** Where keel's hardening files live on the host. */
export const HARDENING_PATHS = {
  sshdDropIn: "/etc/ssh/sshd_config.d/00-keel.conf",
  sshBanner: "/etc/ssh/keel-banner",
  // The console (getty) and telnet-style banners; both are base-files conffiles, see apt-unattended-upgrades.conf.
  consoleBanner: "/etc/issue",
  networkBanner: "/etc/issue.net",
  modprobe: "/etc/modprobe.d/keel-blacklist.conf",
  ufwConf: "/etc/keel/ufw-ssh.conf",
  ufwApply: "/usr/local/lib/keel/ufw-apply",
  fail2banJail: "/etc/fail2ban/jail.d/keel.local",
  metadataGuardRules: "/etc/keel/metadata-guard.nft",
  metadataGuardUnit: "/etc/systemd/system/keel-metadata-guard.service",
  // Sorts after every other sysctl.d file (Debian's procps ships 99-protect-links.conf, which sets
  // fs.protected_fifos = 1): systemd-sysctl applies them in file name order, the last value wins.
  sysctl: "/etc/sysctl.d/99-zz-keel.conf",
  ufwSysctlDropIn: "/etc/systemd/system/ufw.service.d/90-keel-sysctl.conf",
  coreLimits: "/etc/security/limits.d/90-keel-no-core.conf",
  loginShell: "/etc/profile.d/keel.sh",
  coredump: "/etc/systemd/coredump.conf.d/90-keel.conf",
  journald: "/etc/systemd/journald.conf.d/90-keel.conf",
  auditRules: "/etc/audit/rules.d/50-keel.rules",
  aptPeriodic: "/etc/apt/apt.conf.d/20keel-auto-upgrades",
  aptUnattended: "/etc/apt/apt.conf.d/52keel-unattended-upgrades",
  aptNoRecommends: "/etc/apt/apt.conf.d/90keel-no-recommends",
  checkFreeDisk: "/usr/local/lib/keel/check-free-disk",
  // No dot in the name: sudo (and sudo-rs) skip files in sudoers.d whose names contain one.
  sudoers: "/etc/sudoers.d/99-keel",
  sshdConfig: "/etc/ssh/sshd_config",
} as const;

/** The systemd unit that keeps the metadata endpoint root-only (see cloud-init/files/metadata-guard.nft). */
export const METADATA_GUARD_UNIT = "keel-metadata-guard.service";

/** A group of files converged together, with the check that must pass and the reloads they need. */
export interface HardeningUnit {
  /** kebab-case; the step is named `harden-<name>`. */
  readonly name: string;
  readonly description: string;
  readonly files: HostFile[];
  /** Directories the unit's files live in, with the owner and mode keel keeps them at. */
  readonly dirs?: HostDir[];
  /** Files keel does not write whose permissions it bounds (keel-place `modes`). */
  readonly modes?: HostFileMode[];
  /** Lock every password that works (keel-place `lockPasswords`). */
  readonly lockPasswords?: boolean;
  /** argv run after placing; a failure rolls the files back (keel-place). */
  readonly check?: string[];
  /** argv lists run only when a file changed. */
  readonly onChange?: string[][];
}

function versionAtLeast(version: string, min: string): boolean {
  const [a, b] = version.split(".").map(Number);
  const [c, d] = min.split(".").map(Number);
  return a > c || (a === c && b >= d);
}

/**
 * Key exchange algorithms for the image's OpenSSH, post-quantum hybrids first. sshd refuses to
 * start on a name it does not know, so each one is listed only from the version that has it:
 * sntrup761x25519-sha512@openssh.com from 8.5, mlkem768x25519-sha256 and the unsuffixed
 * sntrup761x25519-sha512 from 9.9. curve25519-sha256 stays for clients without sntrup761, such as
 * the Go x/crypto/ssh client inside @pulumi/command (docs/HARDENING.md).
 */
export function kexAlgorithms(image: Image): string[] {
  const v = IMAGE_FACTS[image].openssh;
  const pq = [
    ...(versionAtLeast(v, "9.9") ? ["mlkem768x25519-sha256", "sntrup761x25519-sha512"] : []),
    ...(versionAtLeast(v, "8.5") ? ["sntrup761x25519-sha512@openssh.com"] : []),
  ];
  return [...pq, "curve25519-sha256", "curve25519-sha256@libssh.org"];
}

/** The sshd drop-in: the static hardening plus the lines that depend on the config. */
export function sshdDropIn(cfg: KeelConfig): string {
  const opensshVersion = IMAGE_FACTS[cfg.image].openssh;
  const lines = [
    "",
    `# Rendered from the stack config (keel:sshPort, keel:sshPortNext, keel:deployUser, keel:image = ${cfg.image} with OpenSSH ${opensshVersion}).`,
    ...sshPorts(cfg).map((port) => `Port ${port}`),
    `AllowUsers ${cfg.deployUser}`,
    `KexAlgorithms ${kexAlgorithms(cfg.image).join(",")}`,
  ];
  if (versionAtLeast(opensshVersion, "9.8")) {
    // OpenSSH 9.8+ penalises sources that fail to log in; never the operator's own addresses.
    lines.push(`PerSourcePenaltyExemptList ${cfg.allowedSshCidrs.join(",")}`);
  }
  return readStatic("cloud-init/files/sshd-keel.conf") + lines.join("\n") + "\n";
}

/**
 * A port list as the kernel prints it (proc_do_large_bitmap): ascending, consecutive ports as one
 * range "a-b", comma-separated. keel verify compares `sysctl -n` with the file word for word.
 */
export function kernelPortList(ports: readonly number[]): string {
  const sorted = [...new Set(ports)].sort((a, b) => a - b);
  const runs: [number, number][] = [];
  for (const port of sorted) {
    const last = runs[runs.length - 1];
    if (last && port === last[1] + 1) last[1] = port;
    else runs.push([port, port]);
  }
  return runs.map(([a, b]) => (a === b ? `${a}` : `${a}-${b}`)).join(",");
}

/**
 * The sysctl file: the static settings plus the SSH port(s), reserved from the ports outgoing
 * connections take (net.ipv4.ip_local_port_range reaches 65535, and keel:sshPort may be up there):
 * an outgoing connection never holds the port sshd must bind after a reload or a reboot.
 */
export function sysctlConf(cfg: Pick<KeelConfig, "sshPort" | "sshPortNext">): string {
  return (
    readStatic("cloud-init/files/sysctl-keel.conf") +
    [
      "",
      "# Rendered from the stack config (keel:sshPort, keel:sshPortNext): outgoing connections never take an SSH port.",
      `net.ipv4.ip_local_reserved_ports = ${kernelPortList(sshPorts(cfg))}`,
    ].join("\n") +
    "\n"
  );
}

/** Narrowest prefixes still treated as "the admins' own addresses" (and so never banned). */
export const FAIL2BAN_EXEMPT_MIN_PREFIX = { ipv4: 16, ipv6: 48 } as const;

/**
 * The allowed SSH sources fail2ban never bans: the admin CIDRs, but only those narrow enough to be
 * the admins' own networks. An allow-list as broad as 0.0.0.0/0 (admins on the road) holds the
 * attackers too, and exempting it would switch fail2ban off exactly where it is the last gate.
 */
export function fail2banExemptCidrs(cfg: Pick<KeelConfig, "allowedSshCidrs">): string[] {
  return cfg.allowedSshCidrs.filter((cidr) => {
    const bits = Number(cidr.split("/")[1]);
    return cidr.includes(":") ? bits >= FAIL2BAN_EXEMPT_MIN_PREFIX.ipv6 : bits >= FAIL2BAN_EXEMPT_MIN_PREFIX.ipv4;
  });
}

/**
 * The modprobe file: the static list plus, except on Ubuntu, squashfs. Ubuntu images run snaps,
 * which are squashfs images mounted at boot; Debian has no use for it.
 */
export function modprobeConf(cfg: Pick<KeelConfig, "image">): string {
  const lines = IMAGE_FACTS[cfg.image].snaps
    ? ["", `# squashfs stays loadable on Ubuntu (keel:image = ${cfg.image}): snaps are squashfs images.`]
    : ["install squashfs /bin/true"];
  return readStatic("cloud-init/files/modprobe-keel.conf") + lines.join("\n") + "\n";
}

/** How long a reload may take to show before its step fails: generous, for a slow first boot. */
export const SETTLE_SECONDS = 180;

/**
 * An argv that runs the shell commands `first`, then polls the shell test `probe` every second
 * until it holds, for at most SETTLE_SECONDS, and then fails saying `what` did not happen. A
 * reload returns before it took effect: `systemctl reload ssh` only signals sshd, which
 * re-executes and binds its ports again later, and fail2ban's server starts its jails after a
 * restart returns. The next step (or the next SSH connection of `pulumi up`) must find them done.
 */
function settle(what: string, probe: string, first = ""): string[] {
  return ["sh", "-c", `${first}i=0; until ${probe}; do i=$((i + 1)); if [ "$i" -ge ${SETTLE_SECONDS} ]; then echo "keel: ${what} within ${SETTLE_SECONDS} s" >&2; exit 1; fi; sleep 1; done`];
}

/**
 * A shell function printing "PORT INODE" for each TCP socket ssh.service's main process listens
 * on. By that PID, not by name: any process may call itself sshd (the engine could, on a port of
 * its own), and sshd keeps its PID when a reload re-executes it.
 */
const SSHD_SOCKETS =
  `sshd_sockets() { pid=$(systemctl show -P MainPID ssh.service); ss -Htlnpe | awk -v p="pid=$pid," 'index($0, p) { port = $4; sub(/.*:/, "", port); ino = ""; if (match($0, / ino:[0-9]+/)) ino = substr($0, RSTART + 5, RLENGTH - 5); print port, ino }'; }; `;

/** The shell test: sshd's sockets are on exactly `ports` (sorted, space-separated). */
const sshdOnPorts = (ports: string) => `[ "$(sshd_sockets | awk 'NF { print $1 }' | sort -nu | paste -sd' ')" = "${ports}" ]`;

const plannedPorts = (cfg: KeelConfig) => sshPorts(cfg).slice().sort((a, b) => a - b).join(" ");

/** Waits until sshd listens on exactly the planned SSH port(s) (two while the port moves): the first boot's, after a restart. */
export function sshdListening(cfg: KeelConfig): string[] {
  const ports = plannedPorts(cfg);
  return settle(`sshd did not listen on port(s) ${ports} (and no other)`, sshdOnPorts(ports), SSHD_SOCKETS);
}

/**
 * Reloads (or starts) sshd and waits until it listens again, on exactly the planned port(s), on
 * sockets it did not have before: sshd rebinds even when the ports stay, so new sockets show that
 * the reload took effect.
 */
export function sshdReload(cfg: KeelConfig): string[] {
  const ports = plannedPorts(cfg);
  const before = `before=" $(sshd_sockets | awk 'NF { print $2 }' | paste -sd' ') "; systemctl reload-or-restart ssh.service || exit 1; `;
  const fresh = `! sshd_sockets | awk -v b="$before" 'NF && $2 != "" && index(b, " " $2 " ") { old = 1 } END { exit !old }'`;
  return settle(`sshd did not listen again, on port(s) ${ports} (and no other), after its reload`, `${sshdOnPorts(ports)} && ${fresh}`, SSHD_SOCKETS + before);
}

/** Waits until fail2ban's sshd jail answers. */
export function fail2banJailUp(): string[] {
  return settle("fail2ban's sshd jail did not come up", "fail2ban-client status sshd >/dev/null 2>&1");
}

/** The fail2ban jail: static settings plus the SSH port and the addresses never to ban. */
export function fail2banJail(cfg: KeelConfig): string {
  return (
    readStatic("cloud-init/files/fail2ban-sshd.local") +
    [
      `# Rendered from the stack config (keel:sshPort, keel:sshPortNext, keel:allowedSshCidrs): never ban loopback or the admins'`,
      `# own networks (allowed CIDRs of /${FAIL2BAN_EXEMPT_MIN_PREFIX.ipv4} or narrower for IPv4, /${FAIL2BAN_EXEMPT_MIN_PREFIX.ipv6} for IPv6; broader ones are banned as usual).`,
      `port = ${sshPorts(cfg).join(",")}`,
      `ignoreip = ${["127.0.0.1/8", "::1", ...fail2banExemptCidrs(cfg)].join(" ")}`,
    ].join("\n") +
    "\n"
  );
}

/** The input of ufw-apply: the SSH port(s) and the sources allowed to reach them. */
export function ufwSshConf(cfg: KeelConfig): string {
  return [
    "# keel: SSH is allowed on these ports from these sources only (keel:sshPort, keel:sshPortNext, keel:allowedSshCidrs).",
    `# Applied by ${HARDENING_PATHS.ufwApply}; change the stack config and run pulumi up instead of editing this file.`,
    ...sshPorts(cfg).map((port) => `port ${port}`),
    ...cfg.allowedSshCidrs.map((cidr) => `allow ${cidr}`),
    ...(cfg.https ? ["# keel:https: Caddy's ports, open to anyone (its gate decides by keel:https.allowedCidrs).", ...httpsPorts(cfg).map((port) => `open ${port}`)] : []),
    "",
  ].join("\n");
}

function rootFile(path: string, content: string, mode = "0644"): HostFile {
  return { path, owner: "root", group: "root", mode, content };
}

function staticFile(path: string, source: string, mode = "0644"): HostFile {
  return rootFile(path, readStatic(`cloud-init/files/${source}`), mode);
}

/**
 * keel's sudoers file: sudo's defaults (ANSSI BP-028) and the deploy user's one rule, which the
 * remote steps rely on: `sudo /usr/local/sbin/keel-<tool> …` as root, no password. The rule is
 * here and not in cloud-init's users entry so that first boot and `pulumi up` write the same file;
 * it sorts after cloud-init's 90-cloud-init-users, and sudo uses the last rule that matches.
 */
export function sudoersKeel(cfg: Pick<KeelConfig, "deployUser">): string {
  return readStatic("cloud-init/files/sudoers-keel") + `${cfg.deployUser} ALL=(root) NOPASSWD:EXEC: ${TOOLS_DIR}/keel-*\n`;
}

const SUDO_RULE = /^(-a always,exit -F path=)\/usr\/bin\/sudo( .*)$/m;

/**
 * keel's audit rules, with the sudo rule on each of the image's sudo executables themselves (one
 * rule each): an audit path rule matches the file the kernel runs, and on Ubuntu 26.04
 * /usr/bin/sudo is a link (through the alternatives system) to sudo-rs (images.ts). A rule on
 * a file that is not there loads (its directory must be) and waits for it.
 */
export function auditRules(cfg: Pick<KeelConfig, "image">): string {
  const text = readStatic("cloud-init/files/audit-keel.rules");
  const m = SUDO_RULE.exec(text);
  if (!m || text.match(new RegExp(SUDO_RULE.source, "gm"))!.length !== 1) throw new Error("cloud-init/files/audit-keel.rules: expected one rule with -F path=/usr/bin/sudo");
  return text.replace(SUDO_RULE, IMAGE_FACTS[cfg.image].sudo.map((exe) => `${m[1]}${exe}${m[2]}`).join("\n"));
}

/** The hardening, unit by unit, in the order first boot and `pulumi up` apply it. */
export function hardeningUnits(cfg: KeelConfig): HardeningUnit[] {
  const p = HARDENING_PATHS;
  return [
    {
      name: "metadata-guard",
      description: "keep the cloud metadata endpoint (it serves the user-data with the host key) root-only",
      files: [staticFile(p.metadataGuardRules, "metadata-guard.nft"), staticFile(p.metadataGuardUnit, "keel-metadata-guard.service")],
      check: ["nft", "-c", "-f", p.metadataGuardRules],
      onChange: [
        // Enabled first without a reload of its own, so one daemon-reload (seconds on a small server)
        // loads the unit and the link, and leaves nothing flagged as changed on disk.
        ["systemctl", "enable", "--no-reload", METADATA_GUARD_UNIT],
        ["systemctl", "daemon-reload"],
        ["systemctl", "restart", METADATA_GUARD_UNIT],
      ],
    },
    {
      name: "kernel",
      description: "sysctl network and kernel hardening, core dumps off, idle shells time out",
      files: [
        rootFile(p.sysctl, sysctlConf(cfg)),
        staticFile(p.ufwSysctlDropIn, "ufw-keel-sysctl.conf"),
        staticFile(p.coreLimits, "limits-no-core.conf"),
        staticFile(p.loginShell, "profile-keel.sh"),
        staticFile(p.coredump, "coredump-keel.conf"),
      ],
      onChange: [["systemctl", "daemon-reload"], ["systemctl", "restart", "systemd-sysctl.service"]],
    },
    {
      name: "modules",
      description: "kernel modules a cloud server never needs cannot be loaded (rare protocols, USB storage, FireWire)",
      files: [rootFile(p.modprobe, modprobeConf(cfg))],
    },
    {
      name: "journald",
      description: "keep the journal across reboots with a size cap",
      files: [staticFile(p.journald, "journald-keel.conf")],
      onChange: [["systemctl", "restart", "systemd-journald.service"]],
    },
    {
      name: "audit",
      description: "auditd: who changed accounts, sudo, SSH, keel's tools and config, kernel modules or the clock",
      files: [rootFile(p.auditRules, auditRules(cfg), "0640")],
      onChange: [["augenrules", "--load"]],
    },
    {
      name: "root-access",
      description: "no account with a password that works (root's locked); sudo with umask 0077 and no exec, the deploy user's rule limited to keel's tools",
      // No account keeps a password that works (root's included; cloud-init creates the deploy
      // user locked, system users have none), so nothing logs in with one, on the console either.
      lockPasswords: true,
      // sudo's package makes it 0755; its files are root's alone (ANSSI BP-028).
      dirs: [{ path: "/etc/sudoers.d", owner: "root", group: "root", mode: "0750" }],
      files: [rootFile(p.sudoers, sudoersKeel(cfg), "0440")],
      // The whole sudoers configuration must parse with the new file in it; otherwise it is put back.
      check: ["visudo", "-c"],
    },
    {
      name: "login-banner",
      description: "login banner for SSH and the console",
      files: [staticFile(p.sshBanner, "banner.txt"), staticFile(p.consoleBanner, "banner.txt"), staticFile(p.networkBanner, "banner.txt")],
    },
    {
      name: "sshd",
      description: "SSH server: keys only, deploy user only, modern algorithms, pinned ED25519 host key",
      files: [rootFile(p.sshdDropIn, sshdDropIn(cfg))],
      // The distribution's sshd_config (0644 as packaged) is root's alone: it need not be readable
      // by other users to tell them how sshd is set up (ANSSI BP-028). keel's drop-in is 0644 like
      // the rest of sshd_config.d, where the package puts its own.
      modes: [{ path: p.sshdConfig, owner: "root", mode: "0600" }],
      check: ["sshd", "-t"],
      onChange: [sshdReload(cfg)],
    },
    {
      name: "firewall",
      description: "UFW: deny inbound except SSH from the allowed CIDRs, allow outbound",
      files: [rootFile(p.ufwConf, ufwSshConf(cfg)), staticFile(p.ufwApply, "ufw-apply.sh", "0755")],
      onChange: [[p.ufwApply, p.ufwConf]],
    },
    {
      name: "fail2ban",
      description: "fail2ban sshd jail with incremental bans, admin CIDRs never banned",
      files: [rootFile(p.fail2banJail, fail2banJail(cfg))],
      check: ["fail2ban-client", "--test"],
      onChange: [["systemctl", "reload-or-restart", "fail2ban.service"], fail2banJailUp()],
    },
    {
      name: "updates",
      description: "unattended security updates with an automatic reboot window; apt installs no Recommends",
      files: [staticFile(p.aptPeriodic, "apt-auto-upgrades.conf"), staticFile(p.aptUnattended, "apt-unattended-upgrades.conf"), staticFile(p.aptNoRecommends, "apt-no-recommends.conf")],
    },
    {
      name: "disk-check",
      description: "the free-disk check (keel:minFreeDiskGiB)",
      files: [staticFile(p.checkFreeDisk, "check-free-disk.sh", "0755")],
    },
  ];
}

/** Every hardening file keel places; cloud-init's write_files is built from this list. */
export function hardeningFiles(cfg: KeelConfig): HostFile[] {
  return hardeningUnits(cfg).flatMap((u) => u.files);
}

/**
 * Debian packages the first boot installs: the hardening (auditd, fail2ban, nftables, ufw, the
 * image's time client, unattended-upgrades, debsums to verify installed files against their
 * packages) and what the converge steps use (git for the checkout, python3-venv for the venv,
 * sqlite3 for the DB gates and backups). apt installs no Recommends (the updates unit's
 * apt-no-recommends.conf, written before cloud-init installs these), so what keel needs of them is
 * named here: python3-gi, which unattended-upgrade-shutdown uses to wait for logind's
 * PrepareForShutdown signal (without it, it polls logind and logs a warning every boot); fail2ban's
 * other Recommends (whois, pyinotify) serve jails keel does not run. The VM runner bakes these into
 * its offline repository; the "packages" step installs any a server lacks (one first booted by an
 * older keel).
 */
export function firstBootPackages(image: Image): string[] {
  return [
    "auditd",
    "debsums",
    "fail2ban",
    "git",
    "nftables",
    "python3-gi",
    "python3-systemd",
    "python3-venv",
    "sqlite3",
    // The image's own time client (images.ts): installing systemd-timesyncd where chrony runs
    // would make apt remove chrony (both provide time-daemon) and with it NTS.
    IMAGE_FACTS[image].timeSync.package,
    "ufw",
    "unattended-upgrades",
  ].sort();
}

/**
 * Installs the first-boot packages a server lacks, before the hardening steps that use them
 * (augenrules, debsums, ufw, ...): a server first booted by an older keel has only that keel's
 * list. Runs no apt when every package is there. Re-runs when the list changes.
 */
export function packagesStep(cfg: Pick<KeelConfig, "image">): Step {
  return toolStep("packages", "install the first-boot packages the server lacks (one first booted by an older keel)", "packages", firstBootPackages(cfg.image), { timeoutSeconds: 1800 });
}

/** The converge steps that keep the hardening in place on a running server (`pulumi up`). */
export function hardeningSteps(cfg: KeelConfig): Step[] {
  return hardeningUnits(cfg).map((u) => placeStep(`harden-${u.name}`, u.description, { dirs: u.dirs, modes: u.modes, lockPasswords: u.lockPasswords, files: u.files, check: u.check, onChange: u.onChange }));
}
