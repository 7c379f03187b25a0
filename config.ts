/**
 * The stack config: one zod schema for every `keel:*` key, parsed before any resource exists.
 *
 * Every rejection names the full config key (`keel:adminKeys[1]`), the expected form, the value
 * found (never for a secret) and how to fix it. Unknown `keel:*` keys are rejected, so a typo is
 * never silently ignored. Defaults live here and only here: `npm run gen` writes Pulumi.yaml's
 * declarations (the same defaults, for the CLI's benefit) from this schema.
 */
import { isIPv4, isIPv6 } from "node:net";
import * as pulumi from "@pulumi/pulumi";
import { z } from "zod";
import { IMAGE_FACTS, IMAGES } from "./images";

/** Hetzner Cloud locations (https://docs.hetzner.com/cloud/general/locations/). */
export const LOCATIONS = ["fsn1", "nbg1", "hel1", "ash", "hil", "sin"] as const;
/**
 * Locations where Hetzner sells only the dedicated and AMD lines: its cost-optimized cx* and Arm
 * cax* servers are EU-only (Falkenstein, Nuremberg, Helsinki; Hetzner's server type availability per
 * location). Ordering one elsewhere fails only at `pulumi up`, after the firewall and keys exist.
 */
export const EU_ONLY_SERVER_TYPE_PREFIXES = ["cx", "cax"] as const;
export const NON_EU_LOCATIONS = ["ash", "hil", "sin"] as const;
/** Server types Hetzner no longer sells; ordering one fails late, so reject it early. */
export const RETIRED_SERVER_TYPES = ["cx11", "cx21", "cx22", "cx31", "cx32", "cx41", "cx42", "cx51", "cx52", "cpx11"];

/** GitHub's published SSH host keys, pinned so the first clone trusts nothing on first use. */
export const GITHUB_KNOWN_HOSTS = [
  "github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
];

const ED25519_KEY = /^ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI[A-Za-z0-9+/]{43}( [^\r\n]*)?$/;
const LINUX_NAME = /^[a-z_][a-z0-9_-]{0,30}$/;
const ENV_NAME = /^[A-Z_][A-Z0-9_]*$/;

/**
 * secretEnv names that would change how a program runs rather than give it a secret. systemd hands
 * the unit's EnvironmentFile= to every command of the unit, the "+" ones too, which run as root
 * (the session backups' ExecCondition=+ and ExecStopPost=+): the dynamic loader's LD_*, glibc's
 * GCONV_PATH/LOCPATH/NLSPATH/HOSTALIASES/RES_OPTIONS/LOCALDOMAIN/MALLOC_*, the shell's
 * PATH/BASH_ENV/ENV/SHELLOPTS/BASHOPTS/PS4/IFS/CDPATH/GLOBIGNORE/BASH_FUNC_*, TMPDIR/HOME/SHELL/USER/
 * LOGNAME, the locale (LANG, LC_*, LANGUAGE, TZDIR) and keel's own KEEL_*.
 */
const RESERVED_ENV = /^(LD_.*|GCONV_PATH|LOCPATH|NLSPATH|HOSTALIASES|RES_OPTIONS|LOCALDOMAIN|MALLOC_.*|GLIBC_TUNABLES|PATH|BASH_ENV|ENV|SHELLOPTS|BASHOPTS|PS4|IFS|CDPATH|GLOBIGNORE|BASH_FUNC_.*|TMPDIR|HOME|SHELL|USER|LOGNAME|LANG|LANGUAGE|LC_.*|TZDIR|KEEL_.*)$/;
const COMMIT_SHA = /^[0-9a-f]{40}$/;

/**
 * Names keel:appName and keel:deployUser may not take. appName becomes a system user and group, a
 * unit (`<app>.service`, `<app>-backup.service`) and paths (/var/lib/<app>, /etc/<app>); deployUser a
 * user with sudo. A name already on the image would hand the engine that account's rights (`root`
 * runs the unit as uid 0, `daemon` or `sshd` share an existing uid), replace an image unit (`ssh`:
 * the engine's unit file would shadow sshd's) or collide with keel's own paths and units (`keel`,
 * `keel-*`). The list: Debian's base-passwd accounts and groups, the system users of the packages on
 * Debian 12/13 and Ubuntu 24.04 cloud images and of keel's first boot, the images' default login
 * users (`debian`, `ubuntu`) and the units those images run.
 */
export const RESERVED_NAMES: readonly string[] = [
  // base-passwd users and groups
  "root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp", "proxy", "www-data", "backup",
  "list", "irc", "gnats", "nobody", "nogroup", "adm", "tty", "disk", "kmem", "dialout", "fax", "voice", "cdrom",
  "floppy", "tape", "sudo", "audio", "dip", "operator", "src", "shadow", "utmp", "video", "sasl", "plugdev", "staff",
  "users", "input", "render", "kvm", "sgx", "netdev", "crontab", "ssl-cert", "wheel", "admin", "_ssh",
  // system users of image and first-boot packages
  "_apt", "messagebus", "sshd", "syslog", "uuidd", "tcpdump", "tss", "polkitd", "landscape", "pollinate",
  "fwupd-refresh", "usbmux", "dnsmasq", "lxd", "_chrony", "chrony", "ntp", "ntpsec", "statd", "_rpc", "avahi",
  "systemd-network", "systemd-resolve", "systemd-timesync", "systemd-journal", "systemd-coredump", "systemd-oom",
  "dhcpcd", "_laurel", "debian", "ubuntu", "cloud-user",
  // units on the images and from keel's first boot
  "ssh", "cron", "rsyslog", "dbus", "networking", "getty", "serial-getty", "cloud-init", "cloud-config", "cloud-final",
  "fail2ban", "ufw", "auditd", "unattended-upgrades", "apt-daily", "apt-daily-upgrade", "snapd", "multipathd",
  "polkit", "udisks2", "systemd-networkd", "systemd-resolved", "systemd-timesyncd", "systemd-journald", "systemd-logind",
  "systemd-udevd", "qemu-guest-agent", "e2scrub", "fstrim", "logrotate", "man-db", "dpkg-db-backup", "debsums",
  "rescue", "emergency", "apparmor", "systemd",
  // directories of the image's own under /etc, /var/lib, /var/backups and /opt that appName would
  // take over (keel-place gives /var/lib/<app> and /etc/<app> to the engine's user): dpkg's
  // maintainer scripts, apt's state, cloud-init's, PAM's, the audit rules...
  "dpkg", "dpkg-db", "apt", "cloud", "audit", "private", "polkit-1", "ucf", "pam", "pam.d", "ssl", "ca-certificates",
  "security", "default", "network", "networkd-dispatcher", "sysctl", "modprobe", "udev", "update-motd", "alternatives",
  "python3", "git", "sqlite3", "containerd", "docker", "snap", "lxcfs", "landscape-common", "ubuntu-advantage",
  // keel's own names
  "keel",
];

/**
 * Why a name is refused for keel:appName or keel:deployUser, or undefined when it is free. appName
 * also names units, so it may not start with `keel-` (keel-health, keel-metadata-guard, ...).
 */
function reservedName(name: string, isUnit: boolean): string | undefined {
  if (name === "keel" || (isUnit && name.startsWith("keel-"))) return "keel's own units and paths use keel and keel-*";
  if (name.startsWith("systemd-")) return "systemd's own users and units use systemd-*";
  if (RESERVED_NAMES.includes(name)) return "a user, group or unit that the image or keel's first boot already has";
  return undefined;
}

/**
 * An IPv4 or IPv6 CIDR whose address is the network itself (no host bits set): `undefined` when it
 * is fine, otherwise what is wrong with it. `203.0.113.7/24` is refused with its network named,
 * because a firewall rule made from it silently means the whole /24.
 */
export function cidrProblem(s: string): string | undefined {
  const slash = s.indexOf("/");
  const addr = slash < 0 ? s : s.slice(0, slash);
  const bitsText = slash < 0 ? "" : s.slice(slash + 1);
  const v4 = isIPv4(addr);
  if ((!v4 && !isIPv6(addr)) || addr.includes("%")) return `${JSON.stringify(addr)} is not an IPv4 or IPv6 address`;
  if (!v4 && /^::ffff:/i.test(addr) && /\./.test(addr)) {
    return `an IPv4 address written as IPv6: UFW would put it in ip6tables, where no IPv4 client ever matches; write it as ${addr.replace(/^::ffff:/i, "")}/${Math.max(0, Number(bitsText) - 96)}`;
  }
  const width = v4 ? 32 : 128;
  if (!/^(0|[1-9][0-9]{0,2})$/.test(bitsText) || Number(bitsText) > width) return `the prefix length must be 0 to ${width} after a '/'`;
  const bits = Number(bitsText);
  const value = v4 ? ipv4Value(addr) : ipv6Value(addr);
  const hostMask = (1n << BigInt(width - bits)) - 1n;
  if ((value & hostMask) !== 0n) {
    const network = value & ~hostMask & ((1n << BigInt(width)) - 1n);
    return `host bits are set; the network is ${v4 ? ipv4Text(network) : ipv6Text(network)}/${bits} (or use /${width} for the one address)`;
  }
  return undefined;
}

function ipv4Value(addr: string): bigint {
  return addr.split(".").reduce((acc, part) => (acc << 8n) | BigInt(Number(part)), 0n);
}

function ipv4Text(v: bigint): string {
  return [24n, 16n, 8n, 0n].map((shift) => String((v >> shift) & 255n)).join(".");
}

function ipv6Value(addr: string): bigint {
  let text = addr;
  const v4tail = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4tail) {
    const v = ipv4Value(v4tail[1]);
    text = `${text.slice(0, -v4tail[1].length)}${(v >> 16n).toString(16)}:${(v & 0xffffn).toString(16)}`;
  }
  const [head, tail] = text.includes("::") ? text.split("::") : [text, undefined];
  const headParts = head ? head.split(":") : [];
  const tailParts = tail ? tail.split(":") : [];
  const zeros = tail === undefined ? [] : Array(8 - headParts.length - tailParts.length).fill("0");
  return [...headParts, ...zeros, ...tailParts].reduce((acc, part) => (acc << 16n) | BigInt(parseInt(part, 16)), 0n);
}

function ipv6Text(v: bigint): string {
  const groups = Array.from({ length: 8 }, (_, i) => Number((v >> BigInt(16 * (7 - i))) & 0xffffn).toString(16));
  // The longest run of two or more zero groups becomes "::" (RFC 5952).
  let best = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && groups[j] === "0") j++;
    if (j - i > bestLength) [best, bestLength] = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  if (best < 0) return groups.join(":");
  return `${groups.slice(0, best).join(":")}::${groups.slice(best + bestLength).join(":")}`;
}

/**
 * The repository URLs keel clones from: `git@host:path` and `ssh://user@host[:port]/path` (SSH, with
 * the read-only deploy key), and `file:///path` (the local demo and the VM tests). Host, user and path
 * take a plain character set only: the URL reaches `git clone` as an argument, and one starting with
 * `-` or carrying `$ ( ) ; &` must be refused here, not by a shell or by git later.
 */
const DNS_NAME = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*";
// No ".." component anywhere in the path: the lookahead sits at the path's start.
const REPO_PATH = "(?![A-Za-z0-9_.~/-]*(?:^|/)\\.\\.(?:/|$))(?!\\.\\.(?:/|$))[A-Za-z0-9_.~][A-Za-z0-9_.~/-]*";
const PORT = "(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})";
export const REPO_URL = new RegExp(
  `^(?:git@${DNS_NAME}:${REPO_PATH}|ssh://[a-z_][a-z0-9_.-]{0,31}@${DNS_NAME}(?::${PORT})?/${REPO_PATH}|file:///${REPO_PATH})$`,
);

function isTimeZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: tz });
    return tz === "UTC" || tz.includes("/");
  } catch {
    return false;
  }
}

/** A plain relative path inside the repository: no leading slash, no `..`. */
const repoRelativePath = z
  .string()
  .regex(/^(?!\/)(?!.*(^|\/)\.\.(\/|$))[A-Za-z0-9._/-]+$/, "a path relative to the repository root, without '..'");

const sshPublicKey = z.string().trim().regex(ED25519_KEY, "an ED25519 public key line: 'ssh-ed25519 AAAAC3Nza… comment'");

/** keel:auditLog's file name: a plain name in the engine's log directory. */
const AUDIT_LOG_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\.log$/;

/** A DNS name as ACME issues it: at least two labels, letters, digits and hyphens, at most 253 characters. */
export const HTTPS_DOMAIN = /^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

const cidr = z.string().superRefine((c, ctx) => {
  const problem = cidrProblem(c);
  if (problem) ctx.addIssue({ code: "custom", message: `a CIDR such as 203.0.113.7/32 or 2001:db8::/48 (${problem})` });
});

/**
 * keel:https's upstream: where Caddy reaches the engine. Loopback only (127.0.0.0/8 or [::1]), with
 * a port: the engine's port is never opened to the network, Caddy is its only way in.
 */
function upstreamProblem(s: string): string | undefined {
  const m = /^(?:(\d+\.\d+\.\d+\.\d+)|\[(::1)\]):(\d{1,5})$/.exec(s);
  if (!m) return "host:port with a loopback address, such as 127.0.0.1:8000 or [::1]:8000";
  if (m[1] !== undefined && (!isIPv4(m[1]) || !m[1].startsWith("127."))) return `a loopback address (127.0.0.0/8 or [::1]), not ${m[1]}: the engine must not listen on the network`;
  const port = Number(m[3]);
  if (port < 1 || port > 65535 || String(port) !== m[3]) return "a port from 1 to 65535";
  return undefined;
}

/**
 * A path that stays open to anyone when allowedCidrs is set: `/authorize` (it and what is below it)
 * or, with a trailing `*`, every path that starts so (`/.well-known/oauth-*`). Plain characters
 * only: it becomes a Caddy path matcher (plan/https.ts openPathPatterns), where a `*` elsewhere, a
 * `%`, a space or a brace would mean something else.
 */
const OPEN_PATH = /^\/[A-Za-z0-9._~\/-]{0,200}\*?$/;

const httpsSchema = z
  .object({
    domains: z
      .array(z.string().regex(HTTPS_DOMAIN, "a DNS name in lowercase, such as app.example.com (no scheme, port, path or wildcard)"))
      .min(1, "at least one domain"),
    upstream: z.string().superRefine((u, ctx) => {
      const problem = upstreamProblem(u);
      if (problem) ctx.addIssue({ code: "custom", message: problem });
    }),
    acmeEmail: z.string().regex(/^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+$/, "an e-mail address for the ACME account (expiry notices), such as ops@example.com"),
    allowedCidrs: z.array(cidr).min(1, "at least one CIDR (or leave the key out: anyone)").optional(),
    openPaths: z
      .array(
        z
          .string()
          .regex(OPEN_PATH, "a path prefix such as /authorize (it and below it) or /.well-known/oauth-* (every path that starts so): letters, digits and . _ ~ / -, a * only at the end")
          .refine((p) => !/(^|\/)\.\.?(\/|$)/.test(p), "a path prefix without . or .. segments"),
      )
      .default([]),
    public: z.boolean().optional(),
    acmeCa: z.string().regex(/^https:\/\/[A-Za-z0-9.-]+(?::\d{1,5})?\/[A-Za-z0-9._~\/-]*$/, "an ACME directory URL such as https://acme-staging-v02.api.letsencrypt.org/directory").optional(),
  })
  .strict();

/**
 * The schema. Keys are the `keel:<key>` names without the namespace. A scalar key's description
 * is its description in Pulumi.yaml (`npm run gen` writes that file's config block from this
 * schema); keep it short and operator-facing. docs/CONFIG.md's rows come from configDocs.ts.
 */
export const configSchema = z
  .object({
    location: z.enum(LOCATIONS).default("fsn1").describe("Hetzner location (fsn1, nbg1, hel1, ash, hil, sin)."),
    serverType: z
      .string()
      .regex(/^(cx|cpx|cax|ccx)[0-9]{2,3}$/, "a Hetzner server type such as cx23, cpx22, cax11 (arm) or ccx13")
      .refine((t) => !RETIRED_SERVER_TYPES.includes(t), "a server type Hetzner still sells (e.g. cx23; cx22 and older are retired)")
      .default("cx23")
      .describe("Hetzner server type; arm64 types are cax*."),
    image: z.enum(IMAGES).default("ubuntu-24.04").describe("OS image (ubuntu-24.04, ubuntu-26.04, debian-12, debian-13); changing it replaces the server."),
    ipv4: z.boolean().default(true).describe("Attach a public IPv4 (IPv6-only is cheaper)."),
    hetznerBackups: z.boolean().default(false).describe("Hetzner's own daily server backups (paid)."),
    githubDeployKey: z
      .boolean()
      .default(false)
      .describe("Register the deploy key on the github.com repository of repoUrl (read-only); needs the secret github:token."),
    protect: z.boolean().default(true).describe("Pulumi protect plus Hetzner delete/rebuild protection. Only disposable stacks turn it off."),
    adminKeys: z.array(sshPublicKey).min(1, "at least one admin key").describe("Admin SSH public keys (ED25519, passphrase-protected)."),
    retiredKeys: z.array(sshPublicKey).default([]).describe("Admin keys removed from the host on the next up."),
    sshPort: z.number().int().min(1).max(65535).default(22).describe("SSH port on the host (22, or 1024-65535)."),
    sshPortNext: z
      .number()
      .int()
      .min(1)
      .max(65535)
      .optional()
      .describe("A second SSH port served beside keel:sshPort while the port moves (docs/LIFECYCLE.md)."),
    allowedSshCidrs: z
      .array(cidr)
      .min(1, "at least one CIDR")
      .describe("Source CIDRs allowed to reach SSH (Hetzner firewall, UFW, fail2ban ignoreip)."),
    deployUser: z
      .string()
      .regex(LINUX_NAME, "a Linux user name (lowercase letters, digits, _ or -)")
      .superRefine((u, ctx) => {
        const why = reservedName(u, false);
        if (why) ctx.addIssue({ code: "custom", message: `a name of its own, not a system or reserved name (${why})` });
      })
      .default("deploy")
      .describe("Non-root admin and deploy user."),
    appName: z
      .string()
      // At most 25 characters: the backup user `<app>-backup` must fit Linux's 32 (plan/layout.ts).
      .regex(/^[a-z][a-z0-9-]{1,24}$/, "a short lowercase name of 2 to 25 characters (letters, digits, -), used for the unit, the engine's user <app> and the backup user <app>-backup, and paths")
      .superRefine((a, ctx) => {
        const why = reservedName(a, true);
        if (why) ctx.addIssue({ code: "custom", message: `a name of its own, not a system or reserved name (${why})` });
      })
      .default("engine")
      .describe("Service name, used for the systemd unit, its system user and the host paths."),
    repoUrl: z
      .string()
      .regex(REPO_URL, "git@host:org/repo.git, ssh://user@host[:port]/org/repo.git or file:///path, in letters, digits and . _ - ~ / only")
      .describe("Git repository of the engine (git@host:org/repo.git), cloned with the read-only deploy key."),
    repoRef: z.string().regex(COMMIT_SHA, "a full 40-character commit SHA (pin the exact commit)").describe("The pinned 40-character commit to deploy."),
    gitKnownHosts: z
      .array(z.string().regex(/^[^\s]+ (ssh-ed25519|ecdsa-sha2-nistp256|ssh-rsa) [A-Za-z0-9+/=]+$/, "a known_hosts line 'host type key'"))
      .optional()
      .describe("known_hosts lines for the git host; defaults to GitHub's published keys for github.com URLs."),
    pythonVersion: z.string().regex(/^3\.[0-9]{1,2}$/, "a Python minor version such as 3.12").describe("The system Python minor version the engine is pinned to, e.g. \"3.12\"."),
    requirementsFile: repoRelativePath.default("requirements.txt").describe("Locked requirements file in the repository."),
    startCommand: z
      .string()
      .regex(/^[A-Za-z0-9_./-]+( [A-Za-z0-9_./=:,-]+)*$/, "a command line such as 'python -m engine' (run from the venv; no shell syntax)")
      .describe("Engine command line, resolved in the venv's bin/ (e.g. \"python -m engine\")."),
    settings: z.record(z.string(), z.unknown()).default({}).describe("Non-secret engine settings, written as YAML."),
    secretEnvNames: z.array(z.string().regex(ENV_NAME, "an environment variable name (A-Z, 0-9, _)")).optional(),
    dbFile: z
      .string()
      .regex(/^[A-Za-z0-9._-]+\.(db|sqlite|sqlite3)$/, "a file name ending in .db, .sqlite or .sqlite3")
      .optional()
      .describe("DB file name under /var/lib/<app>/; defaults to <app>.db."),
    migrateFrom: z.string().min(1).optional().describe("Local path of an SQLite DB to migrate on first deploy."),
    migrateFallbackDir: z.string().min(1).optional().describe("Local directory of backups to use if migrateFrom fails its gate."),
    migrateAcceptFallback: z
      .string()
      .regex(/^[0-9a-f]{64}$/, "the sha256 (64 lowercase hex digits) that the failed migration printed for the backup to take")
      .optional()
      .describe("Consent to migrate that backup from migrateFallbackDir instead of a failing migrateFrom: its sha256."),
    backupSchedule: z
      .string()
      .regex(/^[A-Za-z0-9*:.,~/ -]+$/, "a systemd OnCalendar expression such as '*-*-* 03:17:00' or 'hourly'")
      .default("*-*-* 03:17:00")
      .describe("systemd OnCalendar expression for the backup timer."),
    startTimeoutMinutes: z
      .number()
      .int()
      .min(5)
      .max(24 * 60)
      .default(15)
      .describe("How long a start of the engine may take, its pre-session backup of the whole DB included (about 19 s per GiB); a backup that needs longer keeps the engine stopped, without a restart loop."),
    backupRetention: z.number().int().min(1).max(1000).default(14).describe("Number of verified backups kept on the host."),
    timezone: z.string().refine(isTimeZone, "an IANA time zone such as UTC or Europe/Berlin").default("UTC").describe("Host time zone (IANA name)."),
    minFreeDiskGiB: z.number().int().min(1).max(10000).default(5).describe("Free disk (GiB) the host must have for DB, backups and logs; the first boot fails below it."),
    healthSchedule: z
      .string()
      .regex(/^[A-Za-z0-9*:.,~/ -]+$/, "a systemd OnCalendar expression such as '*:0/15'")
      .default("*:0/15")
      .describe("systemd OnCalendar for the health check timer."),
    healthBackupMaxAgeHours: z.number().int().min(1).max(24 * 90).default(26).describe("The newest verified backup older than this makes the health report degraded."),
    healthDiskWarnPercent: z.number().int().min(1).max(99).default(80).describe("Disk use at or above this percentage makes the health report degraded."),
    healthDiskCritPercent: z.number().int().min(2).max(100).default(95).describe("Disk use at or above this percentage makes the health report down."),
    auditLog: z
      .string()
      .regex(AUDIT_LOG_NAME, "a file name ending in .log, such as audit.log")
      .optional()
      .describe("The engine's audit log, /var/log/<app>/<name>: rotated daily, kept 90 days, append-only (docs/HTTPS.md)."),
    https: httpsSchema.optional().describe("An HTTPS endpoint for the engine through Caddy (docs/HTTPS.md); off when unset."),
    alertWebhook: z.boolean().optional(),
  })
  .strict();

/** The raw schema output. */
type ParsedConfig = z.output<typeof configSchema>;

/** The validated stack config with derived values filled in. */
export interface KeelConfig extends Omit<ParsedConfig, "gitKnownHosts" | "dbFile" | "secretEnvNames" | "alertWebhook"> {
  /** known_hosts lines pinned for the git host. */
  readonly gitKnownHosts: string[];
  readonly dbFile: string;
  /** Names of the secret environment variables (from the keys of the secret `keel:secretEnv`). */
  readonly secretEnvNames: string[];
  /** Whether the secret `keel:alertWebhookUrl` is set (its value stays an Output). */
  readonly alertWebhook: boolean;
}

/** Keys that hold secrets: read with requireSecret, their values never parsed here or echoed. */
export const SECRET_KEYS = ["secretEnv", "alertWebhookUrl"] as const;

/** Schema fields filled from secret keys, never set directly. */
const DERIVED_KEYS = ["secretEnvNames", "alertWebhook"];

/** How to set each secret key; used in the messages. */
const SECRET_FIX: Record<(typeof SECRET_KEYS)[number], string> = {
  secretEnv: "pulumi config set --secret --path 'keel:secretEnv.NAME' <value> for each variable",
  alertWebhookUrl: "pulumi config set --secret keel:alertWebhookUrl https://…",
};

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`keel: invalid stack config (${problems.length} problem${problems.length === 1 ? "" : "s"}):\n` + problems.map((p) => `  - ${p}`).join("\n"));
    this.name = "ConfigError";
  }
}

function keyPath(path: PropertyKey[]): string {
  return path.reduce<string>((acc, p) => (typeof p === "number" ? `${acc}[${p}]` : `${acc}.${String(p)}`), "keel").replace("keel.", "keel:");
}

function shown(value: unknown): string {
  if (value === undefined) return "nothing (the key is not set)";
  const s = JSON.stringify(value);
  return s.length > 80 ? `${s.slice(0, 77)}…` : s;
}

function valueAt(raw: unknown, path: PropertyKey[]): unknown {
  return path.reduce<unknown>((v, p) => (v !== null && typeof v === "object" ? (v as Record<PropertyKey, unknown>)[p] : undefined), raw);
}

function howToFix(path: PropertyKey[]): string {
  const key = keyPath(path);
  return path.length === 1
    ? `fix: pulumi config set ${key} <value>  (or edit Pulumi.<stack>.yaml)`
    : `fix: pulumi config set --path '${key}' <value>  (or edit Pulumi.<stack>.yaml)`;
}

/**
 * Parses the raw `keel:*` config map (values as the Pulumi engine hands them over: strings, JSON for
 * objects and arrays). `isSecret(key)` tells which keys were set with `--secret`.
 * Throws ConfigError listing every problem; nothing is created before this returns.
 */
export function parseConfig(raw: Record<string, string>, isSecret: (key: string) => boolean = () => false): KeelConfig {
  const problems: string[] = [];
  if ("github:token" in raw && !isSecret("github:token")) {
    problems.push("github:token: must be a secret, found a plaintext value (not shown). fix: pulumi config rm github:token, then pulumi config set --secret github:token <token>, and revoke the token if the stack file was ever committed");
  }
  if ("hcloud:token" in raw && !isSecret("hcloud:token")) {
    // The policy pack refuses this too, but a plain `pulumi up` does not load the pack.
    problems.push("hcloud:token: must be a secret, found a plaintext value (not shown). fix: pulumi config rm hcloud:token, then pulumi config set --secret hcloud:token <token>, and rotate the token if the stack file was ever committed");
  }
  const known = new Set<string>([...Object.keys(configSchema.shape), ...SECRET_KEYS]);
  const values: Record<string, unknown> = {};
  for (const [fullKey, text] of Object.entries(raw)) {
    if (!fullKey.startsWith("keel:")) continue; // other namespaces (hcloud:token, …) belong to providers
    const key = fullKey.slice("keel:".length);
    if (!known.has(key) || DERIVED_KEYS.includes(key)) {
      problems.push(`keel:${key}: unknown key. Known keys: ${[...known].filter((k) => !DERIVED_KEYS.includes(k)).sort().join(", ")}. fix: pulumi config rm keel:${key} (a typo?)`);
      continue;
    }
    if ((SECRET_KEYS as readonly string[]).includes(key)) {
      if (!isSecret(fullKey)) {
        problems.push(`keel:${key}: must be a secret, found a plaintext value. fix: pulumi config rm keel:${key}, then ${SECRET_FIX[key as (typeof SECRET_KEYS)[number]]}`);
        continue;
      }
      if (key === "secretEnv") values.secretEnvNames = secretEnvNames(text, problems);
      else if (!/^https:\/\/[^\s]+$/.test(text)) {
        problems.push(`keel:alertWebhookUrl: expected an https:// URL; found another value (not shown). fix: ${SECRET_FIX.alertWebhookUrl}`);
      } else values.alertWebhook = true;
      continue;
    }
    if (isSecret(fullKey)) {
      problems.push(`keel:${key}: is not a secret setting, found a secret value. fix: pulumi config set keel:${key} <value> (without --secret)`);
      continue;
    }
    values[key] = isTextKey(key) ? text : decode(text);
  }
  if (problems.length) throw new ConfigError(problems);

  const result = configSchema.safeParse(values);
  if (!result.success) {
    throw new ConfigError(
      result.error.issues.map((issue) => {
        const found = issue.path.length ? shown(valueAt(values, issue.path)) : "";
        if (issue.path.length === 1 && valueAt(values, issue.path) === undefined) {
          const about = configSchema.shape[issue.path[0] as keyof typeof configSchema.shape]?.description ?? "";
          return `${keyPath(issue.path)}: required, found nothing (the key is not set): ${about} ${howToFix(issue.path)}`;
        }
        return `${keyPath(issue.path)}: expected ${expected(issue)}; found ${found}. ${howToFix(issue.path)}`;
      }),
    );
  }
  return finish(result.data, problems, "github:token" in raw);
}

/** Cross-key rules and derived defaults. */
function finish(c: ParsedConfig, problems: string[], githubToken: boolean): KeelConfig {
  const retiredActive = c.retiredKeys.filter((k) => c.adminKeys.some((a) => keyBody(a) === keyBody(k)));
  for (const k of retiredActive) {
    problems.push(`keel:retiredKeys: the key ${shown(keyBody(k).slice(0, 40))} is also in keel:adminKeys. fix: remove it from one of the two lists`);
  }
  let gitKnownHosts = c.gitKnownHosts;
  if (!gitKnownHosts) {
    if (/^git@github\.com:|^ssh:\/\/git@github\.com[/:]/.test(c.repoUrl)) gitKnownHosts = GITHUB_KNOWN_HOSTS;
    else if (c.repoUrl.startsWith("file://")) gitKnownHosts = [];
    else problems.push(`keel:gitKnownHosts: expected the git host's known_hosts lines for ${shown(c.repoUrl)}; found nothing (the key is not set). fix: pulumi config set --path 'keel:gitKnownHosts[0]' "$(ssh-keyscan -t ed25519 <host>)" after checking the fingerprint out of band`);
  }
  const euOnly = EU_ONLY_SERVER_TYPE_PREFIXES.find((p) => new RegExp(`^${p}[0-9]`).test(c.serverType));
  if (euOnly && (NON_EU_LOCATIONS as readonly string[]).includes(c.location)) {
    problems.push(`keel:serverType: ${c.serverType} (a ${euOnly}* type) is sold in fsn1, nbg1 and hel1 only; keel:location is ${c.location}. fix: pulumi config set keel:serverType cpx21 (or another cpx*/ccx* type), or pulumi config set keel:location fsn1`);
  }
  if (!c.ipv4 && /^git@github\.com:|^(ssh|https):\/\/([^@/]+@)?github\.com[/:]/.test(c.repoUrl)) {
    problems.push(`keel:ipv4: false, but keel:repoUrl is on github.com, which serves git over IPv4 only: an IPv6-only server cannot clone it. fix: pulumi config set keel:ipv4 true, or host the repository where IPv6 works`);
  }
  if (c.githubDeployKey && !githubRepo(c.repoUrl)) {
    problems.push(`keel:githubDeployKey: true, but keel:repoUrl ${shown(c.repoUrl)} is not a github.com repository (git@github.com:OWNER/REPO.git or ssh://git@github.com/OWNER/REPO.git). fix: pulumi config set keel:githubDeployKey false and add the deploy key at the git host by hand (the first up's engine-source step prints it and says where)`);
  }
  if (c.githubDeployKey && !githubToken) {
    problems.push(`keel:githubDeployKey: true needs a GitHub token that may add deploy keys to ${githubRepo(c.repoUrl)?.full ?? "the repository"} (a fine-grained token with its "Administration: write" permission); found no github:token. fix: pulumi config set --secret github:token <token>, or pulumi config set keel:githubDeployKey false`);
  }
  if (c.sshPort !== 22 && c.sshPort < 1024) {
    problems.push(`keel:sshPort: expected 22 or a port from 1024 to 65535; found ${c.sshPort}. fix: pulumi config set keel:sshPort 2222`);
  }
  if (c.sshPortNext !== undefined && c.sshPortNext !== 22 && c.sshPortNext < 1024) {
    problems.push(`keel:sshPortNext: expected 22 or a port from 1024 to 65535; found ${c.sshPortNext}. fix: pulumi config set keel:sshPortNext 2222`);
  }
  if (c.sshPortNext === c.sshPort) {
    problems.push(`keel:sshPortNext: expected a port other than keel:sshPort (${c.sshPort}); found the same. fix: pulumi config rm keel:sshPortNext`);
  }
  const imagePython = IMAGE_FACTS[c.image].python;
  if (c.pythonVersion !== imagePython) {
    // The engine runs on the image's own python3 (a venv from it); engine-preflight would stop the
    // first up at the engine, after the server was made. Say so before anything is created.
    const same = Object.entries(IMAGE_FACTS).find(([, f]) => f.python === c.pythonVersion)?.[0];
    const stay = same
      ? `; or, to stay on Python ${c.pythonVersion}, pulumi config set keel:image ${same}`
      : ` (keel's images ship Python ${Object.entries(IMAGE_FACTS).map(([image, f]) => `${f.python} on ${image}`).join(", ")})`;
    problems.push(`keel:pythonVersion: keel:image ${c.image} ships Python ${imagePython}; found ${shown(c.pythonVersion)}. fix: test the engine on Python ${imagePython}, then pulumi config set keel:pythonVersion ${imagePython}${stay}`);
  }
  if (c.healthDiskWarnPercent >= c.healthDiskCritPercent) {
    problems.push(`keel:healthDiskWarnPercent: expected less than keel:healthDiskCritPercent (${c.healthDiskCritPercent}); found ${c.healthDiskWarnPercent}. fix: pulumi config set keel:healthDiskWarnPercent 80`);
  }
  if (c.deployUser === `${c.appName}-backup`) {
    problems.push(`keel:deployUser: must differ from ${c.appName}-backup, the backup user keel makes for keel:appName ${c.appName}: it would own every backup and have sudo. fix: pulumi config set keel:deployUser deploy`);
  }
  if (c.deployUser === c.appName) {
    problems.push(`keel:deployUser: must differ from keel:appName (${c.appName}): the engine would run as the user that has sudo. fix: pulumi config set keel:deployUser deploy, or pick another keel:appName`);
  }
  if (c.migrateAcceptFallback && !c.migrateFallbackDir) {
    problems.push(`keel:migrateAcceptFallback: only used together with keel:migrateFallbackDir; found it alone. fix: pulumi config rm keel:migrateAcceptFallback`);
  }
  if (c.migrateFallbackDir && !c.migrateFrom) {
    problems.push(`keel:migrateFallbackDir: only used together with keel:migrateFrom; found it alone. fix: set keel:migrateFrom or pulumi config rm keel:migrateFallbackDir`);
  }
  if (c.https) httpsProblems(c.https, sshPorts(c), problems);
  if (problems.length) throw new ConfigError(problems);
  return {
    ...c,
    gitKnownHosts: gitKnownHosts ?? [],
    dbFile: c.dbFile ?? `${c.appName}.db`,
    secretEnvNames: [...(c.secretEnvNames ?? [])].sort(),
    alertWebhook: c.alertWebhook ?? false,
  };
}

/** keel:https's rules across its fields and with the SSH ports. */
function httpsProblems(h: NonNullable<ParsedConfig["https"]>, ssh: number[], problems: string[]): void {
  // A gate that lets everyone through is no gate: say so with public: true instead.
  for (const [i, c] of (h.allowedCidrs ?? []).entries()) {
    if (/\/0$/.test(c)) problems.push(`keel:https.allowedCidrs[${i}]: ${c} is every address, which is no gate. fix: remove keel:https.allowedCidrs and pulumi config set --path 'keel:https.public' true to open it to anyone on purpose`);
  }
  for (const [i, p] of h.openPaths.entries()) {
    if (/^\/+\*?$/.test(p)) problems.push(`keel:https.openPaths[${i}]: ${p} opens every path, which leaves no gate. fix: name the paths that must stay open (such as /authorize), or remove keel:https.allowedCidrs and set keel:https.public true`);
  }
  if (h.openPaths.length && !h.allowedCidrs) {
    problems.push(`keel:https.openPaths: only used together with keel:https.allowedCidrs (without it every path is open to anyone); found it alone. fix: pulumi config set --path 'keel:https.allowedCidrs[0]' <your CIDR>, or remove keel:https.openPaths`);
  }
  if (h.public === true && h.allowedCidrs) {
    problems.push(`keel:https.public: true says the endpoint is open to anyone, but keel:https.allowedCidrs limits it. fix: remove one of the two`);
  }
  if (h.public === false && !h.allowedCidrs) {
    problems.push(`keel:https.public: false, but no keel:https.allowedCidrs says who may reach it. fix: pulumi config set --path 'keel:https.allowedCidrs[0]' <CIDR>, or remove keel:https.public`);
  }
  const dup = h.domains.find((d, i) => h.domains.indexOf(d) !== i);
  if (dup) problems.push(`keel:https.domains: ${dup} is listed twice. fix: remove one`);
  const port = Number(h.upstream.slice(h.upstream.lastIndexOf(":") + 1));
  const taken = [...ssh.map((p) => [p, "SSH"] as const), [80, "Caddy (HTTP)"] as const, [443, "Caddy (HTTPS)"] as const].find(([p]) => p === port);
  if (taken) {
    problems.push(`keel:https.upstream: port ${port} is ${taken[1]}'s, not the engine's; found ${shown(h.upstream)}. fix: the port the engine listens on, such as pulumi config set --path 'keel:https.upstream' 127.0.0.1:8000`);
  }
}

/**
 * Environment variables of the operator's machine that would steer the GitHub provider away from
 * keel:repoUrl's owner or the token (components/githubDeployKey.ts): GitHub App credentials log in
 * as the App, GITHUB_OWNER / GITHUB_ORGANIZATION name another owner.
 */
export function githubEnvProblems(env: Record<string, string | undefined>, owner: string): string[] {
  const problems: string[] = [];
  for (const name of ["GITHUB_APP_ID", "GITHUB_APP_INSTALLATION_ID", "GITHUB_APP_PEM_FILE"]) {
    if (env[name]) problems.push(`keel:githubDeployKey: ${name} is set in this environment; the GitHub provider would log in as that GitHub App, not with github:token. fix: unset ${name} for pulumi`);
  }
  for (const name of ["GITHUB_OWNER", "GITHUB_ORGANIZATION"]) {
    const value = env[name];
    if (value && value.toLowerCase() !== owner.toLowerCase()) {
      problems.push(`keel:githubDeployKey: ${name} is set in this environment to another owner than keel:repoUrl's (${owner}). fix: unset ${name} for pulumi`);
    }
  }
  return problems;
}

/**
 * The github.com repository of a repoUrl (`git@github.com:OWNER/REPO[.git]` or
 * `ssh://git@github.com[:22]/OWNER/REPO[.git]`), or undefined for any other host or form.
 */
export function githubRepo(repoUrl: string): { owner: string; name: string; full: string } | undefined {
  const m = /^(?:git@github\.com:|ssh:\/\/git@github\.com(?::22)?\/)([A-Za-z0-9-]+)\/([A-Za-z0-9._-]+?)(?:\.git)?$/.exec(repoUrl);
  if (!m) return undefined;
  return { owner: m[1], name: m[2], full: `${m[1]}/${m[2]}` };
}

/**
 * Every port sshd, UFW, fail2ban and the Hetzner firewall serve SSH on: keel:sshPort (every
 * connection keel makes) and, while the port moves, keel:sshPortNext (docs/LIFECYCLE.md).
 */
export function sshPorts(cfg: Pick<KeelConfig, "sshPort" | "sshPortNext">): number[] {
  return cfg.sshPortNext === undefined ? [cfg.sshPort] : [cfg.sshPort, cfg.sshPortNext];
}

/** The key material of a public key line (type + base64), without its comment. */
export function keyBody(line: string): string {
  return line.trim().split(/\s+/).slice(0, 2).join(" ");
}

/** Keys whose value is plain text: the engine hands "3.12" over as text, and text it stays. */
function isTextKey(key: string): boolean {
  let schema = configSchema.shape[key as keyof typeof configSchema.shape] as z.ZodType;
  while (schema instanceof z.ZodDefault || schema instanceof z.ZodOptional) schema = schema.unwrap() as z.ZodType;
  return schema instanceof z.ZodString || schema instanceof z.ZodEnum;
}

/** What a key expects, in an operator's words: our own messages, or zod's issue rephrased. */
function expected(issue: z.core.$ZodIssue): string {
  switch (issue.code) {
    case "invalid_type":
      if (issue.expected === "int") return "a whole number";
      return `${/^[aeiou]/.test(issue.expected) ? "an" : "a"} ${issue.expected}`;
    case "invalid_value":
      return `one of ${issue.values.map((v) => String(v)).join(", ")}`;
    case "too_small":
      return issue.origin === "array" ? issue.message : `a number >= ${String(issue.minimum)}`;
    case "too_big":
      return `a number <= ${String(issue.maximum)}`;
    default:
      return issue.message;
  }
}

function decode(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** Validates the shape of the secret env object without ever echoing a value. */
function secretEnvNames(text: string, problems: string[]): string[] {
  const value = decode(text);
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    problems.push(`keel:secretEnv: expected an object of NAME: value pairs; found a secret that is not an object (value not shown). fix: pulumi config set --secret --path 'keel:secretEnv.NAME' <value>`);
    return [];
  }
  const names: string[] = [];
  for (const [name, v] of Object.entries(value)) {
    if (!ENV_NAME.test(name)) {
      problems.push(`keel:secretEnv.${name}: expected an environment variable name (A-Z, 0-9, _); found ${shown(name)}. fix: rename it with pulumi config set --secret --path 'keel:secretEnv.${name.toUpperCase().replace(/[^A-Z0-9_]/g, "_")}' …`);
    } else if (RESERVED_ENV.test(name)) {
      problems.push(`keel:secretEnv.${name}: expected a name of the engine's own; found ${name}, which changes how programs run (the loader, the shell, the locale, keel's KEEL_*), and the unit's root commands read it too. fix: pulumi config rm --path 'keel:secretEnv.${name}' and give the engine its value under another name`);
    } else if (typeof v !== "string" || v.length === 0 || /[\n\r\0]/.test(v)) {
      problems.push(`keel:secretEnv.${name}: expected a non-empty single-line string; found another value (not shown). fix: pulumi config set --secret --path 'keel:secretEnv.${name}' <value>`);
    } else {
      names.push(name);
    }
  }
  return names;
}

/**
 * Pulumi's own check of whether a config key was set with --secret: `pulumi.runtime.isConfigSecret`,
 * exported by the SDK's public `runtime` namespace (@pulumi/pulumi 3.248.0 runtime/index.js
 * re-exports runtime/config.js) but left out of its type declarations. Read through the public
 * namespace, not a deep import of the SDK's files, and refused loudly if an SDK upgrade drops it:
 * without it keel could not tell a plaintext secret from a secret one.
 */
function isConfigSecret(key: string): boolean {
  const check = (pulumi.runtime as unknown as { isConfigSecret?: (key: string) => boolean }).isConfigSecret;
  if (typeof check !== "function") {
    throw new Error("keel: this @pulumi/pulumi has no runtime.isConfigSecret, which keel uses to refuse plaintext secrets; use the version in package-lock.json (npm ci)");
  }
  return check(key);
}

/**
 * Reads and validates the stack's `keel:*` config from the Pulumi engine. Throws ConfigError before
 * any resource exists. Secret values stay Outputs.
 */
export function loadStackConfig(): {
  config: KeelConfig;
  secretEnv: pulumi.Output<Record<string, string>>;
  alertWebhookUrl: pulumi.Output<string>;
  githubToken: pulumi.Output<string> | undefined;
} {
  const config = parseConfig(pulumi.runtime.allConfig(), isConfigSecret);
  const keel = new pulumi.Config("keel");
  const secretEnv = keel.getSecretObject<Record<string, string>>("secretEnv") ?? pulumi.secret<Record<string, string>>({});
  const alertWebhookUrl = keel.getSecret("alertWebhookUrl") ?? pulumi.secret("");
  const repo = githubRepo(config.repoUrl);
  if (config.githubDeployKey && repo) {
    const problems = githubEnvProblems(process.env, repo.owner);
    if (problems.length) throw new ConfigError(problems);
  }
  const githubToken = config.githubDeployKey ? new pulumi.Config("github").requireSecret("token") : undefined;
  return { config, secretEnv, alertWebhookUrl, githubToken };
}
