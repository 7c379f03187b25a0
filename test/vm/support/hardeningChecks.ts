// What an auditor reads on a keel host, as data the VM tests assert on: UFW's status, the TCP
// listeners, the metadata guard's verdicts, and a fail2ban ban made from a network namespace inside
// the guest. Every helper here needs the root helper (installRootHelper).
import { expect } from "vitest";
import type { ExecResult, Vm, VmSession } from "../../../local/vm";
import { asRoot, cloudInitProblems, MINUTE, ROOT_HELPER, sh, shellQuote, tryAsRoot, waitFor } from "./keelVm";

export interface UfwStatus {
  readonly status: string;
  /** "deny (incoming), allow (outgoing), deny (routed)" */
  readonly defaults: string;
  readonly rules: readonly { readonly to: string; readonly action: string; readonly from: string; readonly comment: string }[];
}

/** `ufw status verbose`, parsed. */
export async function ufwStatus(vm: VmSession): Promise<UfwStatus> {
  const out = await asRoot(vm, "ufw status verbose");
  const field = (name: string) => out.match(new RegExp(`^${name}: (.*)$`, "m"))?.[1] ?? "";
  const lines = out.split("\n");
  const start = lines.findIndex((l) => /^--\s+------\s+----/.test(l));
  const rules = (start < 0 ? [] : lines.slice(start + 1))
    .filter((l) => l.trim() !== "")
    .map((l) => {
      const [rule, comment = ""] = l.split(/\s+# /);
      const [to, action, from] = rule.trim().split(/\s{2,}/);
      return { to, action, from, comment: comment.trim() };
    });
  return { status: field("Status"), defaults: field("Default"), rules };
}

export interface Listener {
  readonly address: string;
  readonly port: number;
  /** The process names ss shows, e.g. ["sshd"]. */
  readonly processes: readonly string[];
}

/** TCP sockets in LISTEN state (`ss -Htlnp`). */
export async function tcpListeners(vm: VmSession): Promise<Listener[]> {
  const out = await asRoot(vm, "ss -Htlnp");
  return out
    .trim()
    .split("\n")
    .filter(Boolean)
    .map((line) => {
      const cols = line.trim().split(/\s+/);
      const local = cols[3];
      const colon = local.lastIndexOf(":");
      return {
        address: local.slice(0, colon),
        port: Number(local.slice(colon + 1)),
        processes: [...line.matchAll(/\("([^"]+)",pid=/g)].map((m) => m[1]),
      };
    });
}

export function isLoopback(address: string): boolean {
  return /^127\./.test(address) || address === "[::1]" || /^\[::ffff:127\./.test(address);
}

/**
 * The guest side and the namespace side of the veth a ban test makes; see attackerNamespace. One
 * pair per round of checks (useAttacker): fail2ban keeps what it saw, the failures of a round before
 * a reboot included. When it starts, its systemd backend seeks the persistent journal to
 * max(its last saved position, now - findtime) and counts what it reads from there (fail2ban 1.0.2,
 * server/filtersystemd.py, the seek in its run loop), so a later round attacks from an address of
 * its own.
 */
let GUEST_VETH_ADDRESS = "198.18.0.1";
let ATTACKER_ADDRESS = "198.18.0.2";
export function useAttacker(round: number): void {
  GUEST_VETH_ADDRESS = `198.18.0.${4 * round + 1}`;
  ATTACKER_ADDRESS = `198.18.0.${4 * round + 2}`;
}
/** Allowed by UFW (keel:allowedSshCidrs) but broader than /16, so fail2ban may ban it. */
export const ATTACKER_CIDR = "198.18.0.0/15";
const NETNS = "keel-attacker";

/**
 * A network namespace inside the guest, joined to it by a veth pair: the guest side has
 * GUEST_VETH_ADDRESS, the namespace ATTACKER_ADDRESS. Traffic from it stays in the guest and
 * reaches the guest's sshd through UFW and fail2ban like traffic from the Internet would.
 * Recreated from scratch on every call (a reboot removes it).
 */
export async function attackerNamespace(vm: Vm): Promise<void> {
  await asRoot(vm, [
    `ip netns del ${NETNS} 2>/dev/null || true`,
    "ip link del keel-guest 2>/dev/null || true",
    "set -e",
    `ip netns add ${NETNS}`,
    "ip link add keel-guest type veth peer name keel-attacker",
    `ip link set keel-attacker netns ${NETNS}`,
    `ip addr add ${GUEST_VETH_ADDRESS}/30 dev keel-guest`,
    "ip link set keel-guest up",
    `ip netns exec ${NETNS} ip addr add ${ATTACKER_ADDRESS}/30 dev keel-attacker`,
    `ip netns exec ${NETNS} ip link set keel-attacker up`,
    `ip netns exec ${NETNS} ip link set lo up`,
  ].join("\n"));
}

export async function removeAttackerNamespace(vm: Vm): Promise<void> {
  await asRoot(vm, `ip netns del ${NETNS} 2>/dev/null || true; ip link del keel-guest 2>/dev/null || true`);
}

/** Runs `command` as root inside the attacker namespace; never throws for a non-zero exit. */
export function fromAttacker(vm: Vm, command: string, timeoutMs = MINUTE) {
  return tryAsRoot(vm, `ip netns exec ${NETNS} sh -c ${shellQuote(command)}`, { timeoutMs });
}

/**
 * A TCP connection from the attacker namespace to the guest's `port`: "banner" when an SSH banner
 * came back, "open" when it connected without one, otherwise the error bash printed (refused,
 * timed out...).
 */
export async function probeFromAttacker(vm: Vm, port: number, seconds = 8): Promise<string> {
  const r = await fromAttacker(
    vm,
    `timeout ${seconds} bash -c 'exec 3<>/dev/tcp/${GUEST_VETH_ADDRESS}/${port} && { head -c 4 <&3 | grep -q "^SSH-" && echo banner || echo open; }' 2>&1 || echo "exit $?"`,
  );
  return r.stdout.trim();
}

/**
 * Up to `attempts` failed SSH logins from the attacker namespace (a user sshd does not allow, no
 * key), pinning `hostPublicKey` like every connection keel makes. Returns each attempt's ssh exit
 * status and last stderr line. Stops at the first attempt that times out: the ban is in force.
 * A ban can land while an attempt's connection is open, and nftables then drops its packets
 * mid-handshake, where ConnectTimeout no longer applies: ServerAlive and `timeout` end it (without
 * them one attempt hung until the helper's 5-minute limit, seen on Debian 13).
 */
export async function failedLoginsFromAttacker(vm: Vm, port: number, hostPublicKey: string, attempts: number): Promise<string[]> {
  const host = port === 22 ? GUEST_VETH_ADDRESS : `[${GUEST_VETH_ADDRESS}]:${port}`;
  const knownHosts = `/run/keel-attacker-known_hosts`;
  await asRoot(vm, `printf '%s\\n' ${shellQuote(`${host} ${hostPublicKey}`)} > ${knownHosts}`);
  const ssh = [
    "timeout 20 ssh -F /dev/null -p", port, "-o BatchMode=yes -o PubkeyAuthentication=no -o ConnectTimeout=8 -o ServerAliveInterval=3 -o ServerAliveCountMax=2",
    `-o UserKnownHostsFile=${knownHosts} -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes`,
    `intruder@${GUEST_VETH_ADDRESS} true`,
  ].join(" ");
  const r = await fromAttacker(
    vm,
    `for i in $(seq ${attempts}); do ${ssh} 2>/tmp/keel-attempt; rc=$?; echo "$rc $(tail -n 1 /tmp/keel-attempt)"; [ $rc = 124 ] && break; grep -qi "timed out\\|timeout" /tmp/keel-attempt && break; done`,
    5 * MINUTE,
  );
  return r.stdout.trim().split("\n");
}

/** `fail2ban-client status sshd`: the banned addresses and the total failures counted. */
export async function sshdJail(vm: VmSession): Promise<{ banned: string[]; totalFailed: number; raw: string }> {
  const raw = await asRoot(vm, "fail2ban-client status sshd");
  const banned = raw.match(/Banned IP list:\s*(.*)$/m)?.[1].trim().split(/\s+/).filter(Boolean) ?? [];
  const totalFailed = Number(raw.match(/Total failed:\s*(\d+)/)?.[1] ?? NaN);
  return { banned, totalFailed, raw };
}

/** Polls the sshd jail until `ok` holds; returns the last reading. */
export async function waitForJail(vm: Vm, ok: (jail: Awaited<ReturnType<typeof sshdJail>>) => boolean, timeoutMs = 2 * MINUTE) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const jail = await sshdJail(vm);
    if (ok(jail) || Date.now() > deadline) return jail;
    await new Promise((r) => setTimeout(r, 2_000));
  }
}

/** Packets the metadata guard's rule has rejected so far. */
export async function metadataGuardCount(vm: Vm): Promise<number> {
  const out = await asRoot(vm, "nft list chain inet keel_metadata_guard output");
  const m = out.match(/ip daddr 169\.254\.169\.254 meta skuid != 0 counter packets (\d+) bytes \d+ reject/);
  if (!m) throw new Error(`the metadata guard's rule is not loaded:\n${out}`);
  return Number(m[1]);
}

/**
 * A TCP connection to the metadata endpoint as `who`: the deploy user over ssh, `nobody` through
 * runuser, or root. Returns how it ended (bash's error text, or "timeout"). Nothing leaves the
 * guest: the VM's user networking has restrict=on, and there is no metadata server here.
 */
export async function connectToMetadata(vm: Vm, who: "deploy" | "nobody" | "root"): Promise<string> {
  // A cloud server has a route to the metadata address (Hetzner's DHCP hands out a default route).
  // qemu's restricted user network offers no router, so without this route every connect would
  // fail before the output hook with "Network is unreachable", and the guard would never be put to
  // the test. The gateway is qemu's, which drops whatever reaches it: nothing leaves the guest.
  await asRoot(vm, "ip route replace 169.254.169.254/32 via 10.0.2.2");
  const probe = `timeout 6 bash -c 'exec 3<>/dev/tcp/169.254.169.254/80' 2>&1; echo "exit $?"`;
  if (who === "deploy") return (await vm.exec(probe)).stdout.trim();
  if (who === "nobody") return (await tryAsRoot(vm, `runuser -u nobody -- sh -c ${shellQuote(probe)}`)).stdout.trim();
  return (await tryAsRoot(vm, probe)).stdout.trim();
}

/**
 * Opens an SCTP socket as the login user, which would autoload the module keel rules out: the
 * error the kernel gives (Python's message), or "opened" when the socket opened.
 */
export async function sctpSocketError(vm: Vm): Promise<string> {
  const r = await vm.exec(`python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP)'`);
  return r.code === 0 ? "opened" : r.stderr;
}

/** The values each key of a sysctl.d file sets, as `sysctl -n` prints them (a list's fields one space apart). */
export function sysctlSettings(file: string): Record<string, string> {
  const settings: Record<string, string> = {};
  for (const line of file.split("\n")) {
    const m = /^-?([a-z0-9_.]+)\s*=\s*(.*?)\s*$/.exec(line);
    if (m) settings[m[1]] = m[2].split(/\s+/).join(" ");
  }
  return settings;
}

export async function sysctlValues(vm: Vm, keys: readonly string[]): Promise<Record<string, string>> {
  const out = await asRoot(vm, `for k in ${keys.join(" ")}; do printf '%s=%s\\n' "$k" "$(sysctl -n "$k" 2>&1)"; done`);
  // sysctl -n separates a list's fields with tabs (net.ipv4.ip_local_port_range): one space, as keel-verify compares them.
  return Object.fromEntries(out.trim().split("\n").map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1).split(/\s+/).join(" ")]));
}

/**
 * Runs `count` logins at once (`login` makes one); returns each one's exit status (-1 when the
 * command's output was wrong) and ssh's last line of errors.
 */
export async function parallelLogins(login: () => Promise<ExecResult>, count: number): Promise<{ code: number; error: string }[]> {
  const runs = await Promise.all(Array.from({ length: count }, login));
  return runs.map((r) => ({ code: r.stdout === "keel-ok\n" ? r.code : r.code || -1, error: r.stderr.trim().split("\n").slice(-1)[0] ?? "" }));
}
/**
 * fail2ban end to end on `port`: failed logins from the attacker namespace get it banned (in the
 * jail and in fail2ban's nftables set), a banned source cannot reach sshd while the operator still
 * logs in, and `unbanip` lets it back.
 */
export async function expectBanAndUnban(vm: Vm, port: number, hostPublicKey: string): Promise<void> {
  await attackerNamespace(vm);
  try {
    expect(await probeFromAttacker(vm, port)).toBe("banner");
    const attempts = await failedLoginsFromAttacker(vm, port, hostPublicKey, 8);
    expect(attempts[0]).toMatch(/^255 .*Permission denied \(publickey\)/);
    const jail = await waitForJail(vm, (j) => j.banned.includes(ATTACKER_ADDRESS));
    // The attackers only (this round's, and an earlier round's the journal may still hold): the
    // operator's own failed logins (root, a retired key) are never banned.
    expect(jail.banned.filter((a) => !a.startsWith("198.18.0.")), jail.raw).toEqual([]);
    expect(jail.banned, jail.raw).toContain(ATTACKER_ADDRESS);
    expect(await asRoot(vm, "nft list table inet f2b-table")).toContain(ATTACKER_ADDRESS);
    expect(await probeFromAttacker(vm, port)).not.toMatch(/banner|open/);
    expect((await vm.exec("echo keel-ok")).stdout).toBe("keel-ok\n");

    await waitForJailToReadTheAttack(vm, port);
    expect((await asRoot(vm, `fail2ban-client set sshd unbanip ${ATTACKER_ADDRESS}`)).trim()).toBe("1");
    expect((await sshdJail(vm)).banned).not.toContain(ATTACKER_ADDRESS);
    expect(await probeFromAttacker(vm, port)).toBe("banner");
  } finally {
    await removeAttackerNamespace(vm);
  }
}

/**
 * Waits until fail2ban has counted every failure the attack made sshd log, so that an unban is not
 * undone by a line it reads later. `unbanip` clears the ban, not the failures the jail counted after
 * it (fail2ban 1.1.0, server/actions.py removeBannedIP; server/filter.py processLineAndAdd counts
 * a banned address's failures afresh, and server/observer.py failureFound counts each of them twice
 * once the address has been banned before, bantime.increment): a failure read after the unban bans
 * the address again (seen on Debian 13 under TCG, where the journal reader lags).
 *  1. No connection from the attacker is left open: one the ban cut mid-handshake ends only at
 *     LoginGraceTime, with a "Timeout before authentication" line the jail counts.
 *  2. A failed login from 127.0.0.1, which the jail ignores and says so in its log, is logged after
 *     all of the attack's lines; fail2ban reads the journal in order, so once it logs that ignore it
 *     has read the attack.
 *  3. The jail's reading holds still for a few seconds: the observer and the ban actions, which run
 *     in threads of their own, are done.
 * Each wait polls through keelVm's waitFor (a minute each).
 */
async function waitForJailToReadTheAttack(vm: Vm, port: number): Promise<void> {
  const started = Date.now();
  // Only a socket sshd still reads from can make it log; one it has closed (FIN-WAIT, whose
  // answers the ban drops) cannot.
  await waitFor(
    `fail2ban's sshd jail reading the attack: a connection from ${ATTACKER_ADDRESS} is still open`,
    async () => (await asRoot(vm, `ss -Htn state established state syn-recv state close-wait dst ${ATTACKER_ADDRESS}`)).trim(),
    (open) => open === "",
  );
  const closed = Date.now();

  const target = (await asRoot(vm, "fail2ban-client get logtarget")).match(/^`- (\/\S+)$/m)?.[1];
  if (!target) throw new Error("fail2ban logs somewhere other than a file; this check reads its log file");
  const ignored = async () => Number((await tryAsRoot(vm, `grep -c '\\[sshd\\] Ignore 127\\.0\\.0\\.1 by' ${target}`)).stdout.trim() || 0);
  const before = await ignored();
  await tryAsRoot(vm, [
    `timeout 20 ssh -F /dev/null -p ${port} -o BatchMode=yes -o PubkeyAuthentication=no -o ConnectTimeout=8`,
    "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o GlobalKnownHostsFile=/dev/null intruder@127.0.0.1 true",
  ].join(" "));
  await waitFor(`fail2ban's log (${target}) saying it ignored the failed login from 127.0.0.1 (lines so far)`, ignored, (n) => n > before);
  const read = Date.now();

  // Three equal readings in a row (about two seconds apart from first to last).
  const readings: string[] = [];
  await waitFor(
    "fail2ban's sshd jail holding still (failures counted, addresses banned)",
    async () => {
      const now = await sshdJail(vm);
      readings.push(`${now.totalFailed} ${now.banned.join(" ")}`);
      return readings.slice(-3);
    },
    (last) => last.length === 3 && last.every((r) => r === last[0]),
  );
  const secs = (from: number, to: number) => Math.round((to - from) / 1000);
  console.log(`fail2ban read the attack: connections closed in ${secs(started, closed)} s, the marker read in ${secs(closed, read)} s, status still in ${secs(read, Date.now())} s`);
}

/** One line of keel verify's host half: STATUS NAME EVIDENCE (scripts/host/keel-verify). */
export interface VerifyCheck {
  readonly status: "ok" | "failed" | "skipped";
  readonly evidence: string;
}

/**
 * The checks of keel verify (issue 16) that hold on a host with keel's hardening and no engine: the
 * first boot and the hardening steps make them true. The engine's, the env file's and the health
 * report's need the whole plan (test/vm/demo.test.ts runs keel verify end to end).
 */
export const HARDENING_VERIFY_CHECKS = ["sshd-config", "listeners", "ufw", "fail2ban", "metadata-guard", "sysctl", "passwords", "audit"] as const;

/**
 * keel verify's checks on the host (keel-verify), run as verify.sh runs them: as the deploy user
 * through its sudo, over the pinned connection, read-only. The same code the operator runs against
 * a live server, so a check added there is made here too. Needs the tools step (keel-verify and
 * host.conf) on the host.
 */
export async function keelVerifyOnHost(vm: VmSession): Promise<Map<string, VerifyCheck>> {
  const r = await vm.exec("sudo /usr/local/sbin/keel-verify", { timeoutMs: 15 * MINUTE });
  if (r.code !== 0) throw new Error(`keel-verify exited ${r.code}:\n${r.stdout}${r.stderr}`);
  const checks = new Map<string, VerifyCheck>();
  for (const line of r.stdout.split("\n").filter(Boolean)) {
    const [status, name, ...evidence] = line.split("\t");
    if (!["ok", "failed", "skipped"].includes(status) || !name) throw new Error(`keel-verify printed a line that is not STATUS<TAB>NAME<TAB>EVIDENCE: ${line}`);
    checks.set(name, { status: status as VerifyCheck["status"], evidence: evidence.join("\t") });
  }
  return checks;
}

/** Asserts every hardening check of keel verify is ok, showing the evidence of any that is not. */
export async function expectHardeningVerified(vm: VmSession): Promise<Map<string, VerifyCheck>> {
  const checks = await keelVerifyOnHost(vm);
  const got = Object.fromEntries(HARDENING_VERIFY_CHECKS.map((name) => [name, checks.get(name)?.status ?? "missing"]));
  const evidence = HARDENING_VERIFY_CHECKS.map((name) => `${name}: ${checks.get(name)?.evidence ?? "(no line)"}`).join("\n");
  expect(got, evidence).toEqual(Object.fromEntries(HARDENING_VERIFY_CHECKS.map((name) => [name, "ok"])));
  return checks;
}

/**
 * cloud-init ended its boot done, with no error and no problem in its logs; with
 * `recoverable: false`, with no recoverable error either.
 */
export async function expectCloudInitClean(vm: Vm, opts: { recoverable: boolean }): Promise<void> {
  const { status, logProblems } = await cloudInitProblems(vm);
  expect(status.status).toBe("done");
  expect(status.errors).toEqual([]);
  if (!opts.recoverable) expect(status.recoverableErrors).toEqual({});
  expect(logProblems).toEqual({});
}

/** The host names itself in /etc/hosts, so sudo (every remote step) looks nothing up and warns of nothing. */
export async function expectNamesItself(vm: Vm): Promise<void> {
  expect(await sh(vm, "getent hosts $(hostname)")).toMatch(/^127\.0\.1\.1\s/);
  const r = await vm.exec(`sudo ${ROOT_HELPER} true`);
  expect(r.code).toBe(0);
  expect(r.stderr).not.toContain("unable to resolve host");
}

/**
 * The IPv6 sources a static-IPv6 check logs in from (the documentation prefix, RFC 3849): the
 * host's keel:allowedSshCidrs must hold it. Broader than /48, so fail2ban may ban it like any
 * address (fail2banExemptCidrs), and adding it changes the firewall only.
 */
export const IPV6_CLIENT_CIDR = "2001:db8::/32";
const V6 = {
  netns: "keel-v6gw",
  /** The guest's side: an address of "its /64", configured statically. */
  guestLink: "keel-v6",
  guestAddress: "2001:db8:6::2",
  /** The gateway's side, as Hetzner's: link-local fe80::1 only. */
  gatewayLink: "keel-v6gw",
  /** A client beyond the gateway, in IPV6_CLIENT_CIDR but not in the guest's /64. */
  client: "2001:db8:ffff::10",
  /** The prefix the router advertisements offer. */
  advertisedPrefix: "2001:db8:bad:",
} as const;

/**
 * A router advertisement from the gateway namespace (fe80::1) to all nodes: a default router for
 * 1800 s, high router preference, and the prefix 2001:db8:bad::/64 for autoconfiguration. Sent
 * three times by python3 on a raw ICMPv6 socket (the kernel fills in the checksum).
 */
const SEND_RA = `
import socket, struct, time
idx = socket.if_nametoindex("${V6.gatewayLink}")
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.bind(("fe80::1", 0, 0, idx))
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, idx)
ra = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0x08, 1800, 0, 0)
prefix = struct.pack("!BBBBIII", 3, 4, 64, 0xC0, 86400, 14400, 0) + socket.inet_pton(socket.AF_INET6, "${V6.advertisedPrefix}:")
for _ in range(3):
    s.sendto(ra + prefix, ("ff02::1", 0, 0, idx))
    time.sleep(1)
`;

/**
 * What the guest's IPv6 link took from router advertisements: its addresses in the advertised
 * prefix, the prefix's route, and routes learnt from them (`proto ra`).
 */
async function takenFromAdvertisements(vm: Vm): Promise<string> {
  await asRoot(vm, `ip netns exec ${V6.netns} python3 -`, { stdin: SEND_RA });
  // The kernel handles an RA as it arrives; a moment for addrconf's work queue.
  await asRoot(vm, "sleep 2");
  // Routes unfiltered by protocol: `ip route show proto X` leaves the proto out of what it prints.
  return (await asRoot(vm, `{ ip -6 addr show dev ${V6.guestLink} | grep -F ${V6.advertisedPrefix}; ip -6 route show dev ${V6.guestLink} | grep -E '^${V6.advertisedPrefix}:/64 |proto ra'; } || true`)).trim();
}

/**
 * IPv6 as a Hetzner server has it, with keel's router-advertisement settings in force: a link made
 * after boot (it starts from keel's values: net.ipv6.conf.default's, and the glob's, which
 * systemd's udev rule applies to a new link) gets an address statically, and the way out is a
 * route through the link-local gateway fe80::1. Then:
 *  - router advertisements from that gateway add no address, no default route and no route;
 *  - the admin logs in over SSH from a client beyond the gateway, over IPv6 (UFW allows
 *    IPV6_CLIENT_CIDR, which the host's keel:allowedSshCidrs must hold);
 *  - as the control, the same advertisements on the same link with the kernel's defaults put back
 *    on it (accept_ra_defrtr, accept_ra_pinfo, autoconf, max_addresses 16) do add an address, the
 *    prefix's route and a default route, so the first check was not empty for want of one.
 */
export async function expectSshOverStaticIpv6(vm: Vm, opts: { port: number; user: string; privateKey: string; hostPublicKey: string }): Promise<void> {
  const inNs = `ip netns exec ${V6.netns}`;
  const key = "/run/keel-v6-test-key";
  const known = "/run/keel-v6-test-known-hosts";
  const teardown = `ip netns del ${V6.netns} 2>/dev/null || true; ip link del ${V6.guestLink} 2>/dev/null || true; rm -f ${key} ${known}`;
  await asRoot(vm, [
    teardown,
    "set -e",
    `ip netns add ${V6.netns}`,
    `ip link add ${V6.guestLink} type veth peer name ${V6.gatewayLink}`,
    `ip link set ${V6.gatewayLink} netns ${V6.netns}`,
    `${inNs} ip link set lo up`,
    `${inNs} ip link set ${V6.gatewayLink} up`,
    `${inNs} ip -6 addr add fe80::1/64 dev ${V6.gatewayLink} nodad`,
    `${inNs} ip -6 addr add ${V6.client}/128 dev lo`,
    `${inNs} ip -6 route add ${V6.guestAddress}/128 dev ${V6.gatewayLink}`,
    `ip link set ${V6.guestLink} up`,
    `ip -6 addr add ${V6.guestAddress}/64 dev ${V6.guestLink} nodad`,
    `ip -6 route add ${V6.client}/128 via fe80::1 dev ${V6.guestLink}`,
  ].join("\n"));
  try {
    // The link started from keel's defaults.
    const settings = ["accept_ra_defrtr", "accept_ra_pinfo", "accept_ra_rtr_pref", "autoconf", "router_solicitations", "max_addresses"];
    const values = await asRoot(vm, settings.map((s) => `sysctl -n net.ipv6.conf.${V6.guestLink}.${s}`).join("; "));
    expect(values.trim().split("\n")).toEqual(["0", "0", "0", "0", "0", "1"]);
    // Wait for the link-local address of the guest's side, which the gateway answers neighbour solicitations from.
    await waitFor(`a link-local address on ${V6.guestLink}`, async () => (await asRoot(vm, `ip -6 addr show dev ${V6.guestLink} scope link -tentative`)).trim(), (out) => out.includes("fe80::"));

    expect(await takenFromAdvertisements(vm)).toBe("");

    // known_hosts names a host on port 22 by its address alone, on another port as [address]:port.
    const hostName = opts.port === 22 ? V6.guestAddress : `[${V6.guestAddress}]:${opts.port}`;
    await asRoot(vm, `umask 077 && cat > ${key} && printf '%s %s\\n' ${shellQuote(hostName)} ${shellQuote(opts.hostPublicKey.trim())} > ${known}`, { stdin: opts.privateKey });
    const login = await tryAsRoot(
      vm,
      [
        `${inNs} ssh -F /dev/null -6 -b ${V6.client} -p ${opts.port} -i ${key} -o IdentitiesOnly=yes -o BatchMode=yes -o ConnectTimeout=20`,
        `-o StrictHostKeyChecking=yes -o UserKnownHostsFile=${known} -o GlobalKnownHostsFile=/dev/null ${opts.user}@${V6.guestAddress}`,
        `'echo "keel-ok from $SSH_CLIENT"'`,
      ].join(" "),
      { timeoutMs: 2 * MINUTE },
    );
    expect(login.code, login.stderr).toBe(0);
    expect(login.stdout).toMatch(new RegExp(`^keel-ok from ${V6.client} \\d+ ${opts.port}\\n$`));

    // The control: the kernel's defaults on this one link, the same advertisements.
    await asRoot(vm, ["accept_ra_defrtr=1", "accept_ra_pinfo=1", "autoconf=1", "max_addresses=16"].map((s) => `sysctl -qw net.ipv6.conf.${V6.guestLink}.${s}`).join(" && "));
    const taken = (await takenFromAdvertisements(vm)).split("\n");
    // An address autoconfigured in the prefix, the prefix's route, and the default route.
    expect(taken.filter((l) => /^\s*inet6 2001:db8:bad:[0-9a-f:]+\/64 scope global/.test(l)), taken.join("\n")).toHaveLength(1);
    expect(taken.filter((l) => l.startsWith("2001:db8:bad::/64 ")), taken.join("\n")).toHaveLength(1);
    expect(taken.filter((l) => /^default via fe80::1 .*proto ra/.test(l)), taken.join("\n")).toHaveLength(1);
  } finally {
    await asRoot(vm, teardown);
  }
}
