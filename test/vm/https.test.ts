// Tier 3: keel:https and keel:auditLog on a real Debian 12 VM (docs/HTTPS.md). The run's deployed
// test host (support/keelVm.ts deployedTestHost) gets a later `pulumi up` that sets both keys, as
// an operator would: only the steps whose inputs changed run, from a step state seeded with the
// deploy (local/runSteps.ts seedState). The ACME CA is pebble (Debian's package), on the guest's
// loopback only, with a TLS certificate this test makes for it and puts in the guest's trust store;
// the guest's /etc/hosts, once the test adds the name, points it at itself, so pebble's HTTP-01 and
// TLS-ALPN-01 validations reach Caddy as Let's Encrypt's would reach a server whose DNS is set. Requests come
// from this machine through the forwarded ports (UFW and the Hetzner firewall's stand-in in the
// way: the source qemu gives them, 10.0.2.2, is the allowed CIDR) and from the guest itself to its
// own address 10.0.2.15 (outside the CIDRs). The up runs before the name resolves (DNS is the
// operator's, and late): it passes, the report says the certificate is pending, and once the name
// resolves Caddy gets it by itself. Then keel:https is removed again: the next up closes the ports
// and its delete stops Caddy.
import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import * as http from "node:http";
import * as https from "node:https";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sshPorts, type KeelConfig } from "../../config";
import { QEMU_HOST_CIDR } from "../../local/localStack";
import { runSteps, seedState, type StepRun } from "../../local/runSteps";
import type { Vm } from "../../local/vm";
import { buildHostPlan } from "../../plan/hostPlan";
import { CADDY_SERVICE, MAX_CADDY_EXPOSURE } from "../../plan/https";
import type { SecretName } from "../../plan/types";
import { asRoot, deployedHostConfig, deployedTestHost, FIRST_BOOT_HOOK_LIMIT, MINUTE, sh, shellQuote, tryAsRoot, waitFor } from "./support/keelVm";

const DOMAIN = "app.keel.test";
const PEBBLE_DIR = "/etc/keel-test/pebble";
const HTTPS_CONFIG = {
  domains: [DOMAIN],
  upstream: "127.0.0.1:8000",
  acmeEmail: "ops@keel.test",
  allowedCidrs: [QEMU_HOST_CIDR],
  openPaths: ["/authorize"],
  acmeCa: "https://localhost:14000/dir",
};

let vm: Vm;
let tmp: string;
let base: KeelConfig;
let withHttps: KeelConfig;
let secrets: Record<SecretName, string>;
let stateFile: string;
let pebbleRoot: string;
const upRuns: StepRun[] = [];
const downRuns: StepRun[] = [];

/** The CA pebble's listener presents a certificate of (made here; the guest trusts it), and that certificate for localhost. */
function pebbleTls(dir: string): { ca: string; cert: string; key: string } {
  const run = (...args: string[]) => {
    const r = spawnSync("openssl", args, { cwd: dir, encoding: "utf8" });
    if (r.status !== 0) throw new Error(`openssl ${args.join(" ")}: ${r.stderr}`);
  };
  run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=keel test ACME CA", "-days", "2");
  run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "key.pem", "-out", "req.csr", "-subj", "/CN=localhost");
  writeFileSync(join(dir, "ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
  run("x509", "-req", "-in", "req.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "cert.pem", "-days", "2", "-extfile", "ext.cnf");
  return { ca: readFileSync(join(dir, "ca.pem"), "utf8"), cert: readFileSync(join(dir, "cert.pem"), "utf8"), key: readFileSync(join(dir, "key.pem"), "utf8") };
}

/** pebble on the guest's loopback: its ACME directory on 14000, its management API (the issuing root) on 15000. */
async function startPebble(): Promise<void> {
  const tls = pebbleTls(tmp);
  const config = {
    pebble: {
      listenAddress: "127.0.0.1:14000",
      managementListenAddress: "127.0.0.1:15000",
      certificate: `${PEBBLE_DIR}/cert.pem`,
      privateKey: `${PEBBLE_DIR}/key.pem`,
      httpPort: 80,
      tlsPort: 443,
      ocspResponderURL: "",
      externalAccountBindingRequired: false,
    },
  };
  await asRoot(vm, `mkdir -p ${PEBBLE_DIR} && cat > ${PEBBLE_DIR}/bundle`, { stdin: JSON.stringify({ ...tls, config }) });
  await asRoot(
    vm,
    [
      `cd ${PEBBLE_DIR}`,
      `python3 -c 'import json; b = json.load(open("bundle")); [open(n, "w").write(b[k]) for n, k in (("cert.pem", "cert"), ("key.pem", "key"), ("/usr/local/share/ca-certificates/keel-test-acme.crt", "ca"))]; json.dump(b["config"], open("config.json", "w"))'`,
      "chmod 600 key.pem bundle",
      "update-ca-certificates >/dev/null",
      "apt-get -q update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q pebble >/dev/null",
      // No artificial validation delay, no nonces refused at random (pebble's test defaults).
      `systemd-run --quiet --unit=keel-test-pebble --setenv=PEBBLE_VA_NOSLEEP=1 --setenv=PEBBLE_WFE_NONCEREJECT=0 /usr/bin/pebble -config ${PEBBLE_DIR}/config.json`,
      "for i in $(seq 100); do ss -Hltn 'sport = :15000' | grep -q . && break; sleep 0.2; done",
    ].join(" && "),
    { timeoutMs: 10 * MINUTE },
  );
}

/** pebble's issuing root, which a client of the site trusts (a browser trusts Let's Encrypt's). */
async function issuingRoot(): Promise<string> {
  return sh(vm, `python3 -c 'import ssl, urllib.request; print(urllib.request.urlopen("https://localhost:15000/roots/0", context=ssl.create_default_context()).read().decode(), end="")'`);
}

/** A request from this machine through the forwarded guest port. */
function fromHere(scheme: "http" | "https", path: string): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders; issuer?: string }> {
  const port = vm.sshPort(scheme === "https" ? 443 : 80);
  return new Promise((resolve, reject) => {
    const opts = { host: "127.0.0.1", port, path, headers: { Host: DOMAIN }, timeout: 30_000 };
    const done = (res: http.IncomingMessage) => {
      // The socket is the response's only until it ends: read the certificate now.
      const cert = scheme === "https" ? (res.socket as import("node:tls").TLSSocket).getPeerCertificate() : undefined;
      let body = "";
      res.on("data", (d: Buffer) => (body += d.toString()));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers, issuer: cert?.issuer?.CN as string | undefined }));
      res.on("error", reject);
    };
    const req = scheme === "https" ? https.request({ ...opts, servername: DOMAIN, ca: pebbleRoot }, done) : http.request(opts, done);
    req.on("error", reject);
    req.end();
  });
}

/** Requests from the guest to its own address (10.0.2.15: outside the CIDRs), as `STATUS PATH` lines. */
async function fromGuest(paths: string[]): Promise<string[]> {
  const script = `
import socket, ssl, sys
ctx = ssl.create_default_context()
ctx.load_verify_locations(cadata=sys.stdin.read())
for path in sys.argv[1:]:
    with socket.create_connection(("10.0.2.15", 443), timeout=30) as s, ctx.wrap_socket(s, server_hostname="${DOMAIN}") as t:
        t.sendall(("GET %s HTTP/1.1\\r\\nHost: ${DOMAIN}\\r\\nConnection: close\\r\\n\\r\\n" % path).encode())
        data = b""
        while chunk := t.recv(65536):
            data += chunk
    print(data.split(b"\\r\\n", 1)[0].decode().split(" ")[1], path)
`;
  const out = await sh(vm, `python3 -c ${shellQuote(script)} ${paths.map(shellQuote).join(" ")}`, { stdin: pebbleRoot });
  return out.trim().split("\n");
}

interface HealthReport {
  status: string;
  checks: Record<string, { status: string; summary: string; details: Record<string, unknown> }>;
}
const health = async (only: string) => JSON.parse((await tryAsRoot(vm, `/usr/local/sbin/keel-health --json --only ${only}`, { timeoutMs: 5 * MINUTE })).stdout) as HealthReport;

/** keel-verify on the guest: its lines as {name: [status, evidence]}. */
async function verify(): Promise<Record<string, [string, string]>> {
  const r = await tryAsRoot(vm, "/usr/local/sbin/keel-verify", { timeoutMs: 10 * MINUTE });
  expect(r.code, r.stderr).toBe(0);
  return Object.fromEntries(r.stdout.trim().split("\n").map((l) => l.split("\t")).map(([status, name, evidence]) => [name, [status, evidence]]));
}

beforeAll(async () => {
  const d = await deployedTestHost("https", { extraGuestPorts: [80, 443] });
  ({ vm, tmp, secrets } = d);
  base = d.cfg;
  withHttps = deployedHostConfig(d.admin.publicKey, d.commit, {
    "keel:settings": JSON.stringify({ heartbeatSeconds: 5, session: { mode: "paper" }, listen: HTTPS_CONFIG.upstream }),
    "keel:https": JSON.stringify(HTTPS_CONFIG),
    "keel:auditLog": "audit.log",
  });
  stateFile = join(tmp, "steps-state.json");
  seedState(stateFile, vm, buildHostPlan(base).steps, secrets);
  await vm.setFirewall(sshPorts(base));
  await startPebble();
}, FIRST_BOOT_HOOK_LIMIT + 40 * MINUTE);

afterAll(async () => {
  await vm?.shutdown();
}, 3 * MINUTE);

describe("keel:https on a Debian 12 VM", () => {
  it("an up that sets it runs only the steps it changes: the layout (the log's directory), the firewall, the audit log's three, the engine's settings, unit and start, and Caddy's three", async () => {
    upRuns.push(...(await runSteps(vm, buildHostPlan(withHttps).steps, secrets, { stateFile, firewall: [...sshPorts(withHttps), 80, 443], log: (l) => console.log(`https VM: ${l}`) })));
    expect(upRuns.every((r) => r.code === 0)).toBe(true);
    expect(upRuns.map((r) => r.name)).toEqual([
      "layout",
      "harden-firewall",
      "audit-log-package",
      "audit-log",
      "audit-log-start",
      "engine-config",
      "engine-unit",
      "engine-start",
      "https-config",
      "https-package",
      "https-start",
    ]);
    // The package's own start already ran keel's Caddyfile (the drop-in came first); apply, which
    // cannot know what a Caddy it did not start runs, restarts it once.
    expect(upRuns.find((r) => r.name === "https-start")!.stdout).toMatch(/^keel-https: caddy\.service (re)?started with keel's Caddyfile; active and steady$/m);
  }, 40 * MINUTE);

  it("Caddy obtains the certificate from the ACME CA once the name resolves here; the health report says pending until then, ok after", async () => {
    // The up did not wait for DNS: the name does not resolve yet, and the report says so.
    const pending = await health("https");
    expect(pending.checks.https).toMatchObject({ status: "degraded", summary: expect.stringContaining(`certificate pending for ${DOMAIN}: DNS must point here`) });
    // The operator's DNS step: the name now points at the server (its own loopback, for the CA on it).
    await asRoot(vm, `echo '127.0.0.1 ${DOMAIN}' >> /etc/hosts`);
    const status = await waitFor(
      "keel-https status",
      async () => JSON.parse((await tryAsRoot(vm, "/usr/local/sbin/keel-https status --json")).stdout || "{}") as { status?: string; certificates?: Array<{ state: string; issuer: string }> },
      (s) => s.status === "ok",
      8 * MINUTE,
    );
    expect(status.certificates).toEqual([expect.objectContaining({ state: "ok", issuer: "localhost-14000-dir" })]);
    const report = await health("https");
    expect(report.checks.https).toMatchObject({ status: "ok", summary: expect.stringContaining(`certificates ok for ${DOMAIN}`) });
    pebbleRoot = await issuingRoot();
  }, 15 * MINUTE);

  it("serves the engine over HTTPS to an allowed source, with HSTS and a certificate the CA issued", async () => {
    const r = await fromHere("https", "/");
    expect([r.status, r.body]).toEqual([200, "keel sample engine: GET /\n"]);
    expect(r.headers["strict-transport-security"]).toBe("max-age=31536000");
    expect(r.issuer).toMatch(/^Pebble Intermediate CA/);
  }, 5 * MINUTE);

  it("answers 403 to a source outside allowedCidrs, except on the open path; a path not in normal form is refused", async () => {
    expect(await fromGuest(["/", "/admin", "/authorize", "/authorize/callback", "/authorize-admin", "/admin/%2e%2e/authorize"])).toEqual([
      "403 /",
      "403 /admin",
      "200 /authorize",
      "200 /authorize/callback",
      "403 /authorize-admin",
      "400 /admin/%2e%2e/authorize",
    ]);
  }, 5 * MINUTE);

  it("redirects port 80 to HTTPS", async () => {
    const r = await fromHere("http", "/x?y=1");
    expect(r.status).toBe(308);
    expect(r.headers.location).toBe(`https://${DOMAIN}/x?y=1`);
  }, 5 * MINUTE);

  it("logs the requests to the journal, and the engine's audit log has them, append-only", async () => {
    const journal = await asRoot(vm, `journalctl -u ${CADDY_SERVICE} -o cat --no-pager | grep -F '"logger":"http.log.access' | tail -n 20`);
    expect(journal).toContain('"uri":"/authorize/callback"');
    const audit = await asRoot(vm, "lsattr /var/log/engine/audit.log | cut -c1-6 && grep -c '\"event\": \"request\"' /var/log/engine/audit.log");
    expect(audit).toMatch(/^-----a\n[1-9][0-9]*\n$/);
  }, 5 * MINUTE);

  it("rotates the audit log for real: the engine frozen meanwhile and thawed, the copy compressed and root's, the live file append-only and still the engine's", async () => {
    const rotate = () => asRoot(vm, "systemctl start keel-audit-log.service", { timeoutMs: 5 * MINUTE });
    await rotate(); // logrotate's first run only starts its record
    // A day later, to logrotate: its record of the last rotation moved back.
    await asRoot(vm, `sed -i -E 's/ [0-9]{4}-[0-9]+-[0-9]+-[0-9]+:[0-9]+:[0-9]+$/ 2000-1-1-0:0:0/' /var/lib/keel/audit-log/logrotate.state`);
    await fromHere("https", "/before-rotation");
    await rotate();
    const status = JSON.parse(await asRoot(vm, "/usr/local/sbin/keel-audit-log status --json")) as Record<string, any>;
    expect(status).toMatchObject({ enabled: true, append_only: true, rotated: 1, problems: [], last_run: { result: "ok", rotated: true } });
    expect(await asRoot(vm, "stat -c '%U:%G %a' /var/log/engine/audit.log.1.gz /var/log/engine/audit.log && zcat /var/log/engine/audit.log.1.gz | grep -c before-rotation")).toBe("root:root 440\nengine:engine 640\n1\n");
    expect((await sh(vm, "systemctl show engine.service -p FreezerState -p ActiveState")).trim().split("\n").sort()).toEqual(["ActiveState=active", "FreezerState=running"]);
    // The engine's descriptor still writes into the live file: copytruncate kept it.
    await fromHere("https", "/after-rotation");
    expect(await asRoot(vm, "grep -c after-rotation /var/log/engine/audit.log; lsattr /var/log/engine/audit.log | cut -c1-6")).toBe("1\n-----a\n");
    expect((await health("audit-log")).checks["audit-log"]).toMatchObject({ status: "ok" });
  }, 10 * MINUTE);

  it(`runs Caddy sandboxed: systemd-analyze security rates the live caddy.service at most ${MAX_CADDY_EXPOSURE}`, async () => {
    const out = await sh(vm, `systemd-analyze security ${CADDY_SERVICE} --no-pager`);
    const level = Number(/Overall exposure level for \S+: (\d+\.\d+)/.exec(out)![1]);
    console.log(`systemd-analyze security ${CADDY_SERVICE} on the VM: ${level}`);
    expect(level).toBeLessThanOrEqual(MAX_CADDY_EXPOSURE);
    expect((await sh(vm, `systemctl show ${CADDY_SERVICE} -p User --value`)).trim()).toBe("caddy");
    expect(await sh(vm, `systemctl show ${CADDY_SERVICE} -p ExecStart --value`)).toContain("argv[]=/usr/bin/caddy run --config /etc/keel/caddy/Caddyfile --adapter caddyfile ;");
  }, 5 * MINUTE);

  it("keel verify checks it: UFW's planned rules with 80 and 443, Caddy the only other listener, the https line ok", async () => {
    const lines = await verify();
    expect(lines.ufw).toEqual(["ok", expect.stringContaining("2 keel:https")]);
    expect(lines.listeners[0]).toBe("ok");
    expect(lines.https).toEqual(["ok", expect.stringContaining(DOMAIN)]);
  }, 10 * MINUTE);

  it("an up that removes it closes the ports and, through the step's delete, stops and disables Caddy", async () => {
    downRuns.push(...(await runSteps(vm, buildHostPlan(base).steps, secrets, { stateFile, firewall: sshPorts(base), log: (l) => console.log(`https VM: ${l}`) })));
    expect(downRuns.map((r) => r.name)).toEqual(["layout", "harden-firewall", "engine-config", "engine-unit", "engine-start", "https-start (delete)", "audit-log-start (delete)"]);
    expect(downRuns.find((r) => r.name === "https-start (delete)")!.stdout).toBe("keel-https: caddy.service stopped and disabled (keel:https is off)\n");
    expect((await tryAsRoot(vm, `systemctl is-enabled ${CADDY_SERVICE}; systemctl is-active ${CADDY_SERVICE}`)).stdout.trim().split("\n")).toEqual(["disabled", "inactive"]);
    expect(await asRoot(vm, "ufw show added | grep -c keel-https || true")).toBe("0\n");
    const lines = await verify();
    expect(lines.ufw[0]).toBe("ok");
    expect(lines.listeners[0]).toBe("ok");
    expect(lines.https).toEqual(["skipped", expect.stringContaining("keel:https is off")]);
    // keel:auditLog went with it: audit-log-start's delete stopped the rotation; the log stays.
    expect(lines["audit-log"]).toEqual(["skipped", expect.stringContaining("keel:auditLog is not set")]);
    expect((await tryAsRoot(vm, "systemctl is-enabled keel-audit-log.timer; ls /var/log/engine")).stdout.trim().split("\n")).toEqual(["disabled", "audit.log", "audit.log.1.gz"]);
    const report = await health("https,audit-log");
    expect([report.checks.https.summary, report.checks["audit-log"].status]).toEqual(["off (keel:https unset)", "ok"]);
  }, 40 * MINUTE);
});
