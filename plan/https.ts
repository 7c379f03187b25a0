import type { KeelConfig } from "../config";
import { sha256 } from "./hash";
import { IP_NOT_LINK_LOCAL } from "./engine";
import { PROTECT_KERNEL, RESTRICT, SYSCALLS } from "./sandbox";
import { readStatic } from "./static";
import { placeStep, step, toolStep } from "./steps";
import { toolPath, TOOLS } from "./tools";
import type { HostFile, Step } from "./types";

/**
 * keel:https (docs/HTTPS.md): Caddy, from the image's own package, in front of the engine on its
 * loopback port, with a certificate from ACME, HSTS, a CIDR gate with open paths, and its access log
 * in the journal. Off unless the key is set: with it unset none of this is in the plan.
 */
export type HttpsConfig = NonNullable<KeelConfig["https"]>;

export const HTTPS_PATHS = {
  /** keel's Caddyfile; Debian's /etc/caddy/Caddyfile (a static page on :80) is never used. */
  caddyfile: "/etc/keel/caddy/Caddyfile",
  caddyDir: "/etc/keel/caddy",
  /** The drop-in that points caddy.service at keel's Caddyfile and sandboxes it. */
  dropIn: "/etc/systemd/system/caddy.service.d/90-keel.conf",
  dropInDir: "/etc/systemd/system/caddy.service.d",
  /** The caddy user's home (the package's): its certificates and ACME account live below it. */
  caddyHome: "/var/lib/caddy",
} as const;

export const CADDY_SERVICE = "caddy.service";

/** The ports keel:https opens to anyone (Hetzner firewall and UFW): 80 for ACME's HTTP-01 and the redirect, 443. */
export const HTTPS_PORTS = [80, 443] as const;

/** The ports keel:https opens, or none when it is unset. */
export function httpsPorts(cfg: Pick<KeelConfig, "https">): number[] {
  return cfg.https ? [...HTTPS_PORTS] : [];
}

/** HSTS: a year, this host only (includeSubDomains would bind every other name under the domain). */
export const HSTS = "max-age=31536000";

/**
 * The Caddy path patterns of an open path: `/authorize` opens itself and what is below it
 * (`/authorize/…`, not `/authorize-admin`); a trailing `*` opens every path that starts so
 * (`/.well-known/oauth-*`). Caddy matches them case-insensitively against the cleaned path
 * (caddy v2.6.2 modules/caddyhttp/matchers.go MatchPath.Match).
 */
export function openPathPatterns(openPath: string): string[] {
  if (openPath.endsWith("*")) return [openPath];
  const bare = openPath.replace(/\/+$/, "") || "/";
  return bare === "/" ? ["/*"] : [bare, `${bare}/*`];
}

/**
 * A path not in normal form: a `.` or `..` segment, `//`, or a backslash, after percent-decoding.
 * Caddy's path matchers see the cleaned path, but reverse_proxy sends the engine the path as it
 * came: `/admin/../authorize` would pass the gate as `/authorize` and reach the engine as
 * `/admin/../authorize`. Refused before the gate, so both read the same path. (A CEL regular
 * expression in a Caddyfile backquoted token: the backslashes are RE2's.)
 */
const UNCLEAN_PATH_RE = "(^|/)[.][.]?(/|$)|//|[\\\\\\\\]";

/** The marker line keel-https reads the site's domains from (scripts/host/keel-https). */
export const DOMAINS_MARKER = "# keel-https domains:";

/**
 * The site's handling, the part of the Caddyfile that does not depend on TLS: the access log to
 * the journal, HSTS, unclean paths and upgrades other than WebSocket refused (400), the CIDR gate
 * (403) with its open paths, then the engine. The host tier runs this very block behind a plain-HTTP address to test the gate.
 */
export function renderSiteBody(h: HttpsConfig): string[] {
  const gate = h.allowedCidrs
    ? [
        "\t# The gate: outside keel:https.allowedCidrs only the open paths (keel:https.openPaths).",
        "\t@outside {",
        `\t\tnot remote_ip ${h.allowedCidrs.join(" ")}`,
        ...(h.openPaths.length ? [`\t\tnot path ${h.openPaths.flatMap(openPathPatterns).join(" ")}`] : []),
        "\t}",
      ]
    : ["\t# No keel:https.allowedCidrs: open to anyone."];
  return [
    "\t# The access log: JSON on stderr, which systemd gives to the journal (journalctl -u caddy).",
    "\tlog {",
    "\t\toutput stderr",
    "\t\tformat json",
    "\t}",
    `\theader Strict-Transport-Security "${HSTS}"`,
    "\t# A path not in normal form (a . or .. segment, //, a backslash) is refused: the gate and the",
    "\t# engine must read the same path.",
    `\t@unclean expression \`{http.request.uri.path}.matches("${UNCLEAN_PATH_RE}")\``,
    "\t# An upgrade to anything but WebSocket (h2c) would turn the connection into a tunnel to the",
    "\t# engine, past the gate, for every request that follows on it.",
    "\t@upgrade {",
    "\t\theader Upgrade *",
    "\t\tnot header_regexp Upgrade (?i)^websocket$",
    "\t}",
    ...gate,
    "\troute {",
    '\t\trespond @unclean "Bad Request" 400',
    '\t\trespond @upgrade "Bad Request" 400',
    ...(h.allowedCidrs ? ['\t\trespond @outside "Forbidden" 403'] : []),
    `\t\treverse_proxy ${h.upstream} {`,
    "\t\t\t# The client's address reaches the engine only as Caddy sets it (X-Forwarded-For), never as a client claims it.",
    "\t\t\theader_up -Forwarded",
    "\t\t\theader_up -X-Real-IP",
    "\t\t}",
    "\t}",
  ];
}

/**
 * keel's Caddyfile (Caddy 2.6, Debian 12's package): no admin endpoint (the engine, on the same
 * loopback, could otherwise reconfigure Caddy; a change restarts it instead), the ACME account's
 * e-mail, HTTP/1.1 and HTTP/2 only (HTTP/3 would need UDP 443, which the firewalls keep closed),
 * and one site for every domain. Caddy obtains the certificate by HTTP-01 or TLS-ALPN-01 once DNS
 * points at the server, and redirects port 80 to HTTPS by itself.
 */
export function renderCaddyfile(h: HttpsConfig): string {
  const lines = [
    "# Written by keel (plan/https.ts) from keel:https; edits are overwritten on the next pulumi up.",
    `${DOMAINS_MARKER} ${h.domains.join(" ")}`,
    "{",
    "\tadmin off",
    `\temail ${h.acmeEmail}`,
    ...(h.acmeCa ? [`\tacme_ca ${h.acmeCa}`] : []),
    "\tservers {",
    "\t\tprotocols h1 h2",
    "\t}",
    "}",
    "",
    `${h.domains.join(", ")} {`,
    ...renderSiteBody(h),
    "}",
  ];
  return lines.join("\n") + "\n";
}

/**
 * The highest exposure `systemd-analyze security` may report for caddy.service with keel's drop-in:
 * measured on systemd 252 (test/host/https.test.ts) and on the VM (test/vm/https.test.ts). It listens
 * on 80 and 443 for anyone and talks to ACME, so it keeps CAP_NET_BIND_SERVICE and the network;
 * PrivateUsers= would take the capability away (a user namespace cannot bind the host's low ports).
 * Measured 1.5 on systemd 252; keel holds it to the 2.0, room for another systemd's scoring.
 */
export const MAX_CADDY_EXPOSURE = 2.0;

/** The drop-in for the package's caddy.service: keel's Caddyfile, and the sandbox keel's own units have. */
export function renderCaddyDropIn(): string {
  const lines = [
    "# Written by keel (plan/https.ts); edits are overwritten on the next pulumi up.",
    "# caddy.service runs keel's Caddyfile (keel:https), sandboxed; Debian's Caddyfile is not used.",
    "[Service]",
    "ExecStart=",
    `ExecStart=/usr/bin/caddy run --config ${HTTPS_PATHS.caddyfile} --adapter caddyfile`,
    "# No admin endpoint (admin off): keel-https restarts Caddy for a new Caddyfile.",
    "ExecReload=",
    "UMask=0077",
    "ProtectSystem=strict",
    `ReadWritePaths=${HTTPS_PATHS.caddyHome}`,
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "PrivateIPC=yes",
    "ProtectProc=invisible",
    "ProcSubset=pid",
    ...PROTECT_KERNEL,
    "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
    "AmbientCapabilities=CAP_NET_BIND_SERVICE",
    ...RESTRICT,
    "RemoveIPC=yes",
    "KeyringMode=private",
    "DevicePolicy=closed",
    "# sd_notify (Type=notify) needs AF_UNIX.",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    "# Every address but link-local (the cloud metadata service) and multicast, as the engine's unit.",
    ...IP_NOT_LINK_LOCAL,
    ...SYSCALLS,
  ];
  return lines.join("\n") + "\n";
}

export function httpsFiles(h: HttpsConfig): HostFile[] {
  return [
    { path: HTTPS_PATHS.caddyfile, owner: "root", group: "root", mode: "0644", content: renderCaddyfile(h) },
    { path: HTTPS_PATHS.dropIn, owner: "root", group: "root", mode: "0644", content: renderCaddyDropIn() },
  ];
}

/**
 * The HTTPS steps, after the engine's (Caddy proxies to it) and before the health steps: keel's
 * Caddyfile and drop-in first, so that the package's own start (its postinst starts caddy.service)
 * already runs keel's configuration and never Debian's static page; then the package; then
 * keel-https, which validates the Caddyfile with Caddy itself, (re)starts Caddy only when its
 * configuration changed and confirms it stays up. Removing keel:https removes these steps: Pulumi
 * then runs the last one's delete command, which stops and disables Caddy (the firewall step closes
 * the ports in the same up).
 */
export function httpsSteps(cfg: KeelConfig): Step[] {
  const h = cfg.https;
  if (!h) return [];
  const files = httpsFiles(h);
  return [
    placeStep("https-config", `write keel's Caddyfile ${HTTPS_PATHS.caddyfile} (${h.domains.join(", ")} to ${h.upstream}) and caddy.service's sandbox drop-in`, {
      dirs: [
        { path: HTTPS_PATHS.caddyDir, owner: "root", group: "root", mode: "0755" },
        { path: HTTPS_PATHS.dropInDir, owner: "root", group: "root", mode: "0755" },
      ],
      files,
      onChange: [["systemctl", "daemon-reload"]],
    }),
    toolStep("https-package", "install Caddy from the image's apt sources (it starts with keel's Caddyfile)", "packages", ["caddy"], { timeoutSeconds: 1800 }),
    // Not a toolStep: keel-https's own bytes are an argument here, not a trigger, so a new keel-https
    // updates the step (runs apply again) instead of replacing it: every replacement runs off first.
    // The server's id stays a trigger: a new server replaces it, delete-first (components/hostSteps.ts
    // deleteBeforeReplace), so off reaches the new server (same address) before apply does.
    step({
      name: "https-start",
      description: `validate the Caddyfile with Caddy, (re)start ${CADDY_SERVICE} when its configuration changed, and confirm it stays up`,
      command: [
        "sudo",
        toolPath("https"),
        "apply",
        `caddyfile=${HTTPS_PATHS.caddyfile}`,
        `caddyfile-sha256=${sha256(files[0].content)}`,
        `drop-in=${HTTPS_PATHS.dropIn}`,
        `drop-in-sha256=${sha256(files[1].content)}`,
        `tool-sha256=${sha256(readStatic(TOOLS.https))}`,
      ].join(" "),
      deleteCommand: ["sudo", toolPath("https"), "off"].join(" "),
      timeoutSeconds: 300,
    }),
  ];
}

/** The DNS records the operator creates for keel:https: one A (with an IPv4) and one AAAA per domain. */
export function httpsDnsRecords(domains: readonly string[], ipv4: string | undefined, ipv6: string): { name: string; type: "A" | "AAAA"; value: string }[] {
  return domains.flatMap((name) => [
    ...(ipv4 ? [{ name, type: "A" as const, value: ipv4 }] : []),
    { name, type: "AAAA" as const, value: ipv6 },
  ]);
}
