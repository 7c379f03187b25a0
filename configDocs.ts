// docs/CONFIG.md's key tables, one row per key in the order the page shows them: the one source of
// that page's tables (`npm run gen` writes them; test/unit/generated.test.ts fails when the page is
// stale). A key's type, default and short description live in config.ts's schema, which also
// renders Pulumi.yaml's config block (scripts/dev/generated.ts).
import { IMAGE_FACTS } from "./images";

/** Each image's Python, as keel:pythonVersion must say it (images.ts). */
const IMAGE_PYTHONS = Object.entries(IMAGE_FACTS)
  .map(([image, f]) => `\`${f.python}\` on \`${image}\``)
  .join(", ");

/** A row: the key as set (`keel:<key>`), and what the page says of it. `default` only where the schema's default cannot say it. */
export interface ConfigDocRow {
  readonly key: string;
  readonly default?: string;
  readonly what: string;
}

export const CONFIG_DOC: readonly { readonly heading: string; readonly rows: readonly ConfigDocRow[] }[] = [
  {
    heading: "Server",
    rows: [
      { key: "location", what: "Hetzner location: `fsn1`, `nbg1`, `hel1`, `ash`, `hil`, `sin`. Changing it replaces the server." },
      { key: "serverType", what: "Hetzner server type (`cx*`, `cpx*`, `ccx*`; arm64 `cax*`). Retired types (`cx22` and older) are refused." },
      { key: "image", what: "`ubuntu-24.04` (seed 000's ruling), `ubuntu-26.04`, `debian-12`, `debian-13`. Changing it replaces the server. What keel relies on in each, and how each is proven: \"Images\" below." },
      { key: "ipv4", what: "Attach a public IPv4. `false` gives an IPv6-only server (cheaper; you need IPv6 to reach it)." },
      { key: "hetznerBackups", what: "Hetzner's own daily server backups (paid). Separate from keel's DB backups. The policy pack requires it on prod." },
      { key: "protect", what: "Pulumi `protect` plus Hetzner delete and rebuild protection on the server and its primary IPs. Only disposable stacks (staging) set `false`." },
      { key: "timezone", what: "Host time zone (IANA name, e.g. `Europe/Berlin`). Set at first boot only: a change reaches a new server (docs/RUNBOOK.md \"Replace the server\"), not a running one." },
      { key: "minFreeDiskGiB", what: "Free space, in whole GiB, the host must have for DB + backups + logs; the first boot and the preflight gate fail below it." },
    ],
  },
  {
    heading: "SSH",
    rows: [
      { key: "adminKeys", what: "Admin SSH public keys, ED25519 only, at least one. Use passphrase-protected keys (seed 000 §7). The deploy user's `authorized_keys` holds exactly this list after every `pulumi up`. The first key is also registered with Hetzner so it never mails a root password." },
      { key: "retiredKeys", what: "Keys that must no longer work. They are removed with the next `up` (because `authorized_keys` is rewritten to `adminKeys`); listing them documents the retirement and keel refuses a key that is in both lists." },
      { key: "sshPort", what: "SSH port: 22, or 1024–65535. Applied to the Hetzner firewall, UFW, sshd, fail2ban and every connection keel makes. Changing it on a live server takes two ups through `sshPortNext`." },
      { key: "sshPortNext", what: "A second SSH port, served beside `sshPort` while the port moves (Hetzner firewall, UFW, sshd, fail2ban); every connection keel makes stays on `sshPort`. The one safe way to change `sshPort` on a live server, in two ups (docs/LIFECYCLE.md): set this to the new port and `pulumi up`; then set `sshPort` to it, `pulumi config rm keel:sshPortNext` and `pulumi up`. A direct change of `sshPort` (or of `deployUser`) on a stack whose server exists is refused before anything changes." },
      { key: "allowedSshCidrs", what: "Source CIDRs allowed to reach SSH (Hetzner firewall and UFW). At least one; each the network address itself (`203.0.113.7/24` is refused: its host bits are set, and it would mean the whole /24 — the message names the network). Those of /16 or narrower (IPv6: /48) are the admins' own networks and exempt from fail2ban; broader ones (`0.0.0.0/0` for admins on the road) are allowed but banned on repeated failures like anyone else — there fail2ban is your last gate." },
      { key: "deployUser", what: "The non-root admin and deploy user. Its sudo runs keel's tools (`/usr/local/sbin/keel-*`) only, which makes it root in effect (docs/HARDENING.md \"Users and sudo\"). Neither a system or reserved name nor `appName` nor `<appName>-backup`. Fixed for the life of a server: a change on a stack whose server exists is refused before anything changes (docs/LIFECYCLE.md)." },
    ],
  },
  {
    heading: "The engine",
    rows: [
      { key: "appName", what: "Service name, 2 to 25 characters (`a-z`, `0-9`, `-`): the systemd unit `<appName>.service`, its system user, the backup user `<appName>-backup` (which must fit Linux's 32), and the paths `/opt/<appName>`, `/etc/<appName>`, `/var/lib/<appName>`, `/var/backups/<appName>` (the backup user's: docs/DATABASE.md \"The backup identity\"). Refused: a user, group or unit the image or keel already has (`root`, `ssh`, `daemon`, `sshd`, `debian`, `ubuntu`, `keel`, `keel-*`, `systemd-*`; the list is `RESERVED_NAMES` in config.ts)." },
      { key: "repoUrl", what: "Git repository, cloned with the read-only deploy key: `git@host:org/repo.git`, `ssh://user@host[:port]/org/repo.git`, or `file:///path` (local tests); host, user and path in letters, digits and `. _ - ~ /` only, no `..`, none starting with `-` (the URL reaches `git clone` as an argument)." },
      { key: "githubDeployKey", what: "`true`: keel registers the deploy key on keel:repoUrl's github.com repository itself, read-only, titled `keel <project>/<stack> (<owner>/<repo>)`, before the first clone (`@pulumi/github` `RepositoryDeployKey`, its owner taken from the URL); `pulumi destroy` removes it. Needs the secret `github:token`: a fine-grained token for that repository with the \"Administration: write\" permission (`pulumi config set --secret github:token …`). A plaintext `github:token` is refused. GitHub refuses a key already added by hand (\"key is already in use\"): remove that one first. The Pulumi CLI installs the `github` 6.15.0 plugin on the first preview whether the option is on or not (offline runners: `pulumi plugin install resource github 6.15.0`). `false`: add `pulumi stack output deployPublicKey` by hand (the first up's `engine-source` step stops and says so)." },
      { key: "repoRef", what: "The exact 40-character commit to deploy. A branch or tag is refused: a deploy must be reproducible." },
      { key: "gitKnownHosts", default: "GitHub's keys for github.com", what: "`known_hosts` lines for the git host, pinned (no trust on first use). Required for any host other than GitHub. Check the fingerprint out of band before you set it." },
      { key: "pythonVersion", what: `The system Python's minor version, the one the engine is tested on: ${IMAGE_PYTHONS}. A value other than the image's is refused before anything is created, and the deploy stops if the host's \`python3\` differs (seed 000 §2).` },
      { key: "requirementsFile", what: "The locked requirements file in the repository (with `--hash` lines, pip installs with `--require-hashes`)." },
      { key: "startCommand", what: "The engine's command line, resolved in the venv's `bin/` (e.g. `python -m engine`). No shell syntax." },
      { key: "settings", what: "Non-secret settings, written as YAML to `/etc/<appName>/config.yaml` (root:<appName> 0640)." },
      { key: "secretEnv", default: "`{}`", what: "**Secret.** The engine's secret environment variables, written to `/etc/<appName>/<appName>.env` (root 0600) and read by systemd's `EnvironmentFile`. Set each with `pulumi config set --secret --path 'keel:secretEnv.NAME' <value>`. A plaintext value is refused. Names: `A-Z`, `0-9`, `_`, and none that changes how programs run: `PATH`, `LD_*`, `BASH_ENV`, `ENV`, `SHELLOPTS`, `BASHOPTS`, `BASH_FUNC_*`, `PS4`, `IFS`, `CDPATH`, `GLOBIGNORE`, `TMPDIR`, `HOME`, `SHELL`, `USER`, `LOGNAME`, `LANG`, `LANGUAGE`, `LC_*`, `TZDIR`, glibc's `GCONV_PATH`, `LOCPATH`, `NLSPATH`, `HOSTALIASES`, `RES_OPTIONS`, `LOCALDOMAIN`, `MALLOC_*`, `GLIBC_TUNABLES`, and keel's `KEEL_*` (systemd gives the file to the unit's root commands too: the session backups); values: one line." },
    ],
  },
  {
    heading: "The database",
    rows: [
      { key: "dbFile", default: "`<appName>.db`", what: "DB file name under `/var/lib/<appName>/` (local disk; the engine is its only writer)." },
      { key: "migrateFrom", what: "Path, on the operator's machine, of an SQLite DB to migrate on the first deploy. It moves only if it passes the integrity gate (docs/DATABASE.md)." },
      { key: "migrateFallbackDir", what: "A directory of backups on the operator's machine: if `migrateFrom` fails its gate (not for a hot journal, which SQLite rolls back), the newest backup of it that passes — named `<name>-YYYYMMDDTHHMMSSZ.db` as keel names backups, newest by that time — is offered, and taken only with `migrateAcceptFallback`. Never a failing DB." },
      { key: "migrateAcceptFallback", what: "Consent to that fallback: the sha256 the failed deploy printed for the backup (`pulumi config set keel:migrateAcceptFallback <sha256>`). Rows written after the backup's time are lost, so keel never picks it alone." },
      { key: "backupSchedule", what: "systemd `OnCalendar` for the backup timer." },
      { key: "startTimeoutMinutes", what: "How long a start of the engine may take (`TimeoutStartSec=`), its pre-session backup included: that verifies the whole DB, about 19 s per GiB (docs/DATABASE.md \"Benchmark\"), so 15 minutes covers about 40 GiB (less any time a start waits for a `keel-ops` restore to finish, which shares it). The deploy steps that restart the engine wait for it too. A backup that needs longer stops itself 30 s before and keeps the engine stopped without a restart loop, saying to raise this (docs/DATABASE.md \"Large DBs\"). From 5 to 1440." },
      { key: "backupRetention", what: "Verified backups kept on the host." },
    ],
  },
  {
    heading: "HTTPS (optional)",
    rows: [
      { key: "https", default: "unset (off)", what: "An HTTPS endpoint for the engine: Caddy from the image's own package, with a certificate from ACME (Let's Encrypt, or ZeroSSL when that fails, unless `acmeCa`), HSTS, its access log in the journal, and a gate by source address. Off unless set; then the Hetzner firewall and UFW open 80 and 443 to anyone and Caddy decides. An object: `domains` (DNS names; the stack output `httpsDnsRecords` says which A/AAAA records to create), `upstream` (where the engine listens: loopback only, such as `127.0.0.1:8000`), `acmeEmail`, `allowedCidrs` (who gets through; unset: anyone), `openPaths` (paths open to anyone even with `allowedCidrs`: `/authorize` is it and below it, `/.well-known/oauth-*` every path that starts so), `public` (`true`: open to anyone on purpose; the policy pack requires it or `allowedCidrs` on prod), `acmeCa` (another ACME directory, such as Let's Encrypt's staging). Set with `pulumi config set --path 'keel:https.domains[0]' app.example.com` and so on. Removing it stops Caddy and closes the ports on the next up. docs/HTTPS.md." },
      { key: "auditLog", default: "unset (off)", what: "The engine's audit log: a file name (`audit.log`) in `/var/log/<appName>/`, given to the engine as `KEEL_AUDIT_LOG`. keel rotates it daily, keeps 90 compressed days, and keeps the live file append-only (`chattr +a`), so not even the engine can rewrite what it wrote; the health report says whether that holds. The engine opens it for appending (the file keeps its inode across rotations: no reopening). docs/HTTPS.md \"The audit log\"." },
    ],
  },
  {
    heading: "Health",
    rows: [
      { key: "healthSchedule", what: "systemd `OnCalendar` for the health check timer (`keel-health`)." },
      { key: "healthBackupMaxAgeHours", what: "The newest verified backup older than this makes the report degraded." },
      { key: "healthDiskWarnPercent", what: "Disk use at or above this makes the report degraded." },
      { key: "healthDiskCritPercent", what: "Disk use at or above this makes the report down. Must be above the warning level." },
      { key: "alertWebhookUrl", default: "none", what: "**Secret.** An `https://` URL the health timer POSTs to when the state turns degraded or down (and back). `pulumi config set --secret keel:alertWebhookUrl https://…`" },
    ],
  },
];
