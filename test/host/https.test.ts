// keel:https on this machine's real Caddy (Debian 12's 2.6.2 package), systemd-analyze and UFW
// (docs/HTTPS.md): `caddy validate` on keel's Caddyfiles; the site's gate served by Caddy itself
// (plan/https.ts renderSiteBody behind a plain-HTTP loopback address, the engine a local listener)
// for an allowed source, one outside the CIDRs, the open paths and paths not in normal form;
// caddy.service with keel's drop-in measured by systemd-analyze; keel-https's apply, off and
// status (loaded as a module, its paths moved into a temp dir and systemctl answered by the test,
// Caddy's validation real); ufw-apply's open ports on real UFW in a private network namespace.
// Needs root. The whole endpoint with a certificate, the firewalls and the redirect: test/vm/https.test.ts.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { copyFileSync, cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import * as http from "node:http";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseConfig } from "../../config";
import { sha256 } from "../../plan/hash";
import { ufwSshConf } from "../../plan/hardening";
import { HTTPS_PATHS, MAX_CADDY_EXPOSURE, renderCaddyDropIn, renderCaddyfile, renderSiteBody, type HttpsConfig } from "../../plan/https";
import { TOOLS } from "../../plan/tools";
import { freePort } from "../../local/vm/qemu";
import { minimalRaw, REPO } from "../support/stack";
import { exposure } from "../support/units";

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
const tempDir = (prefix: string) => dirs[dirs.push(mkdtempSync(join(tmpdir(), prefix))) - 1];

const HTTPS = { domains: ["app.example.com", "www.example.com"], upstream: "127.0.0.1:8000", acmeEmail: "ops@example.com", allowedCidrs: ["127.0.0.1/32", "2001:db8::/48"], openPaths: ["/authorize", "/.well-known/oauth-*"] };
const https = (h: Record<string, unknown> = HTTPS): HttpsConfig => parseConfig(minimalRaw({ "keel:https": JSON.stringify(h) })).https!;

/** `caddy validate` as keel-https runs it, with a throwaway home for what provisioning writes. */
function validate(text: string): { code: number; out: string } {
  const dir = tempDir("keel-caddy-validate-");
  writeFileSync(join(dir, "Caddyfile"), text);
  const r = spawnSync("caddy", ["validate", "--config", join(dir, "Caddyfile"), "--adapter", "caddyfile"], { encoding: "utf8", env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", HOME: dir }, timeout: 60_000 });
  return { code: r.status ?? -1, out: r.stdout + r.stderr };
}

describe("keel's Caddyfile, validated by Caddy 2.6.2", () => {
  it.each([
    ["allowedCidrs and open paths", HTTPS],
    ["open to anyone (public)", { ...HTTPS, allowedCidrs: undefined, openPaths: [], public: true }],
    ["another ACME directory, the engine on [::1]", { ...HTTPS, acmeCa: "https://acme-staging-v02.api.letsencrypt.org/directory", upstream: "[::1]:8080" }],
  ])("%s", (_, h) => {
    const r = validate(renderCaddyfile(https(h)));
    expect(r.out).toContain("Valid configuration");
    expect(r.code).toBe(0);
  });

  it("refuses what Caddy refuses: the check keel-https runs before any restart is real", () => {
    const r = validate(renderCaddyfile(https()).replace("reverse_proxy", "reverse_proxyy"));
    expect(r.code).not.toBe(0);
    expect(r.out).toMatch(/unrecognized directive: reverse_proxyy/);
  });
});

describe("the gate, served by Caddy", () => {
  let caddy: ChildProcess;
  let engine: http.Server;
  let port: number;
  const seen: string[] = [];
  const headers: http.IncomingHttpHeaders[] = [];
  let log = "";

  beforeAll(async () => {
    const upstream = await freePort();
    port = await freePort();
    engine = http.createServer((req, res) => {
      seen.push(req.url ?? "");
      headers.push(req.headers);
      res.end(`engine: ${req.url}\n`);
    });
    // An upgrade the engine answers itself (with a refusal): the test sees whether it got there.
    engine.on("upgrade", (req: http.IncomingMessage, socket: import("node:net").Socket) => {
      seen.push(`upgrade ${String(req.headers.upgrade)} ${req.url}`);
      socket.end("HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    });
    await new Promise<void>((resolve) => engine.listen(upstream, "127.0.0.1", resolve));
    // The very site block of keel's Caddyfile, behind plain HTTP on two loopback addresses: a
    // client on 127.0.0.1 is inside the CIDRs, one on 127.0.0.2 outside.
    const h = https({ ...HTTPS, upstream: `127.0.0.1:${upstream}` });
    const dir = tempDir("keel-caddy-gate-");
    writeFileSync(join(dir, "Caddyfile"), ["{", "\tadmin off", "}", `http://127.0.0.1:${port}, http://127.0.0.2:${port} {`, ...renderSiteBody(h), "}", ""].join("\n"));
    caddy = spawn("caddy", ["run", "--config", join(dir, "Caddyfile"), "--adapter", "caddyfile"], { env: { PATH: "/usr/bin:/bin", HOME: dir }, stdio: ["ignore", "ignore", "pipe"] });
    caddy.stderr!.on("data", (d: Buffer) => (log += d.toString()));
    for (let i = 0; i < 100 && !/serving initial configuration/.test(log); i++) await new Promise((r) => setTimeout(r, 100));
    expect(log).toMatch(/serving initial configuration/);
  }, 30_000);

  afterAll(async () => {
    caddy?.kill();
    await new Promise((resolve) => engine?.close(resolve));
  });

  /** GET `path` (sent as written) from `source`: the status, the body and the HSTS header. */
  function get(source: string, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string; hsts: string | undefined }> {
    return new Promise((resolve, reject) => {
      const req = http.request({ host: source, port, path, localAddress: source, headers: { Host: `${source}:${port}`, ...headers } }, (res) => {
        let body = "";
        res.on("data", (d: Buffer) => (body += d.toString()));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body, hsts: res.headers["strict-transport-security"] as string | undefined }));
      });
      req.on("error", reject);
      req.end();
    });
  }

  it("lets a source inside allowedCidrs reach every path of the engine, with HSTS", async () => {
    for (const path of ["/", "/admin", "/authorize-admin", "/api/v1/items?x=1"]) {
      const r = await get("127.0.0.1", path);
      expect([r.status, r.body], path).toEqual([200, `engine: ${path}\n`]);
      expect(r.hsts).toBe("max-age=31536000");
    }
  });

  it("answers 403 outside the CIDRs, except on the open paths and what is below them", async () => {
    for (const path of ["/", "/admin", "/authorize-admin", "/.well-known/openid-configuration"]) {
      expect((await get("127.0.0.2", path)).status, path).toBe(403);
    }
    for (const path of ["/authorize", "/authorize/", "/authorize?client_id=x", "/authorize/callback", "/.well-known/oauth-authorization-server"]) {
      const r = await get("127.0.0.2", path);
      expect([r.status, r.body], path).toEqual([200, `engine: ${path}\n`]);
    }
    const r = await get("127.0.0.2", "/admin");
    expect(r.hsts).toBe("max-age=31536000");
  });

  it("refuses a path not in normal form (400), from anywhere: the gate and the engine would read it differently", async () => {
    const before = seen.length;
    for (const source of ["127.0.0.1", "127.0.0.2"]) {
      for (const path of ["/admin/../authorize", "/admin/%2e%2e/authorize", "/authorize/..%2fadmin", "/authorize/./x", "//authorize", "/authorize%5c..%5cadmin"]) {
        expect((await get(source, path)).status, `${source} ${path}`).toBe(400);
      }
    }
    expect(seen.length, "none of them reached the engine").toBe(before);
  });

  it("refuses an upgrade to anything but WebSocket (h2c would tunnel past the gate); a WebSocket upgrade on an open path reaches the engine", async () => {
    const before = seen.length;
    for (const source of ["127.0.0.1", "127.0.0.2"]) {
      const r = await get(source, "/authorize", { Connection: "Upgrade, HTTP2-Settings", Upgrade: "h2c", "HTTP2-Settings": "AAMAAABkAARAAAAAAAIAAAAA" });
      expect(r.status, source).toBe(400);
    }
    expect(seen.length, "no h2c upgrade reached the engine").toBe(before);
    const ws = await get("127.0.0.2", "/authorize/socket", { Connection: "Upgrade", Upgrade: "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==" });
    expect(ws.status).toBe(426);
    expect(seen.slice(before)).toEqual(["upgrade websocket /authorize/socket"]);
    expect((await get("127.0.0.2", "/admin", { Connection: "Upgrade", Upgrade: "websocket" })).status).toBe(403);
  });

  it("passes the client's address to the engine as Caddy sets it, not as the client claims it", async () => {
    await get("127.0.0.1", "/whoami", { Forwarded: "for=198.51.100.1", "X-Real-IP": "198.51.100.1", "X-Forwarded-For": "198.51.100.1" });
    expect(headers.at(-1)).toMatchObject({ "x-forwarded-for": "127.0.0.1" });
    expect(headers.at(-1)).not.toHaveProperty("forwarded");
    expect(headers.at(-1)).not.toHaveProperty("x-real-ip");
  });

  it("logs each request as JSON to stderr (the journal under systemd), without the credentials it carried", async () => {
    await get("127.0.0.2", "/secret-path", { Authorization: "Bearer token-3f1d77", Cookie: "session=cookie-9a2b" });
    for (let i = 0; i < 50 && !log.includes("/secret-path"); i++) await new Promise((r) => setTimeout(r, 100));
    const line = log.split("\n").find((l) => l.includes('"uri":"/secret-path"'));
    expect(line).toBeDefined();
    expect(JSON.parse(line!)).toMatchObject({ logger: "http.log.access.log0", status: 403, request: { remote_ip: "127.0.0.2", uri: "/secret-path" } });
    expect(line).not.toContain("token-3f1d77");
    expect(line).not.toContain("cookie-9a2b");
  });
});

describe("caddy.service with keel's drop-in, measured by systemd-analyze", () => {
  /** A root with this machine's units, Debian's caddy.service and (unless told) keel's drop-in and a stand-in caddy. */
  function root(withDropIn: boolean): string {
    const r = tempDir("keel-caddy-units-");
    cpSync("/usr/lib/systemd/system", join(r, "usr/lib/systemd/system"), { recursive: true });
    copyFileSync("/lib/systemd/system/caddy.service", join(r, "usr/lib/systemd/system/caddy.service"));
    if (withDropIn) {
      mkdirSync(join(r, dirname(HTTPS_PATHS.dropIn)), { recursive: true });
      writeFileSync(join(r, HTTPS_PATHS.dropIn), renderCaddyDropIn());
    }
    mkdirSync(join(r, "usr/bin"), { recursive: true });
    writeFileSync(join(r, "usr/bin/caddy"), "#!/bin/sh\n", { mode: 0o755 });
    return r;
  }
  const run = (args: string[]) => {
    const r = spawnSync("systemd-analyze", args, { encoding: "utf8" });
    return { code: r.status, out: r.stdout + r.stderr };
  };

  it("verifies without a warning", () => {
    expect(run(["verify", `--root=${root(true)}`, "caddy.service"])).toEqual({ code: 0, out: "" });
  });

  it(`rates an exposure of at most ${MAX_CADDY_EXPOSURE}, where Debian's unit alone is far above it`, () => {
    const level = exposure(run(["security", "--offline=true", `--root=${root(true)}`, "caddy.service"]).out);
    const bare = exposure(run(["security", "--offline=true", `--root=${root(false)}`, "caddy.service"]).out);
    console.log(`systemd-analyze security --offline=true caddy.service: ${level} with keel's drop-in, ${bare} without`);
    expect(level).toBeLessThanOrEqual(MAX_CADDY_EXPOSURE);
    expect(bare).toBeGreaterThan(MAX_CADDY_EXPOSURE + 4);
  });
});

describe("keel-https", () => {
  const TOOL = join(REPO, TOOLS.https);
  const toolSha = sha256(readFileSync(TOOL, "utf8"));

  /**
   * A host in a temp dir: keel's Caddyfile and drop-in, Caddy's certificates and keel-https's stamp.
   * systemctl is the test's (its answers in `unit`, its calls recorded); `runuser … caddy validate`
   * is real, run as root with the temp home.
   */
  class Host {
    readonly root = tempDir("keel-https-");
    readonly caddyfile = join(this.root, "etc/Caddyfile");
    readonly dropIn = join(this.root, "etc/90-keel.conf");
    readonly certs = join(this.root, "caddy/.local/share/caddy/certificates");
    readonly stamp = join(this.root, "state/https.applied");
    /** The firewall step's UFW configuration: its open lines are the plan's word that keel:https is set. */
    readonly ufw = join(this.root, "etc/ufw-ssh.conf");
    readonly unitFile = join(this.root, "unit.json");
    constructor(caddyfile = renderCaddyfile(https())) {
      for (const d of ["etc", "caddy", "state"]) mkdirSync(join(this.root, d), { recursive: true });
      writeFileSync(this.caddyfile, caddyfile);
      writeFileSync(this.dropIn, renderCaddyDropIn());
      this.unit({ ActiveState: "inactive", MainPID: "0", installed: true });
      this.planned(true);
    }
    planned(on: boolean): void {
      writeFileSync(this.ufw, `port 22\nallow 203.0.113.10/32\n${on ? "open 80\nopen 443\n" : ""}`);
    }
    unit(u: Record<string, unknown>): void {
      writeFileSync(this.unitFile, JSON.stringify({ calls: [], ...u }));
    }
    calls = (): string[][] => JSON.parse(readFileSync(this.unitFile, "utf8")).calls;
    run(args: string[]): { code: number; stdout: string; stderr: string } {
      const program = `
import importlib.machinery, importlib.util, json, subprocess, sys
spec = importlib.util.spec_from_loader("m", importlib.machinery.SourceFileLoader("m", ${JSON.stringify(TOOL)}))
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
root = sys.argv[1]
m.CADDYFILE, m.CADDY_HOME = root + "/etc/Caddyfile", root + "/caddy"
m.STAMP, m.UFW_CONF = root + "/state/https.applied", root + "/etc/ufw-ssh.conf"
m.CERTIFICATES = m.CADDY_HOME + "/.local/share/caddy/certificates"
m.SETTLE_SECONDS = 1
real_run = m.run
def fake_run(*argv, **kw):
    if argv[0] == "runuser":  # the validation, as root here (the caddy user cannot read a root temp dir)
        return real_run(*argv[argv.index("--") + 1:], **kw)
    if argv[0] != "systemctl":
        return real_run(*argv, **kw)
    with open(root + "/unit.json") as f:
        unit = json.load(f)
    unit["calls"].append(list(argv[1:]))
    out, code = "", 0
    if argv[1] == "show":
        out = str(unit.get(argv[2].split("=", 1)[1], "")) + "\\n"
    elif argv[1] == "cat":
        code = 0 if unit["installed"] else 1
    elif argv[1] == "restart":
        unit["ActiveState"], unit["MainPID"] = unit.get("after_restart", ("active", "4242"))
    elif argv[1] == "disable":
        unit["ActiveState"], unit["MainPID"] = "inactive", "0"
    with open(root + "/unit.json", "w") as f:
        json.dump(unit, f)
    return subprocess.CompletedProcess(argv, code, out, "")
m.run = fake_run
sys.exit(m.main(sys.argv[2:]))`;
      const r = spawnSync("python3", ["-I", "-B", "-c", program, this.root, ...args], { encoding: "utf8", env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" }, timeout: 60_000 });
      return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
    }
    apply(overrides: Record<string, string> = {}) {
      const args = {
        caddyfile: this.caddyfile,
        "caddyfile-sha256": sha256(readFileSync(this.caddyfile, "utf8")),
        "drop-in": this.dropIn,
        "drop-in-sha256": sha256(renderCaddyDropIn()),
        "tool-sha256": toolSha,
        ...overrides,
      };
      return this.run(["apply", ...Object.entries(args).map(([k, v]) => `${k}=${v}`)]);
    }
    /** A certificate for `domain` from `issuer`, valid for `days` more days. */
    certificate(domain: string, days: number, issuer = "acme-v02.api.letsencrypt.org-directory"): void {
      const dir = join(this.certs, issuer, domain);
      mkdirSync(dir, { recursive: true });
      const r = spawnSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", join(dir, `${domain}.key`), "-out", join(dir, `${domain}.crt`), "-subj", `/CN=${domain}`, "-days", String(days)], { encoding: "utf8" });
      expect(r.status, r.stderr).toBe(0);
    }
  }

  it("apply refuses, changing nothing, when a file is not the plan's or the tool is another (exit 3), and on bad usage (exit 2)", () => {
    const h = new Host();
    expect(h.apply({ "tool-sha256": "0".repeat(64) })).toMatchObject({ code: 3, stderr: expect.stringContaining("this keel-https is not the one the plan expects; the tools step must run first") });
    expect(h.apply({ "caddyfile-sha256": "0".repeat(64) })).toMatchObject({ code: 3, stderr: expect.stringContaining("is not the file the plan placed; the https-config step must run first") });
    expect(h.apply({ "drop-in-sha256": "0".repeat(64) })).toMatchObject({ code: 3, stderr: expect.stringContaining("90-keel.conf is not the file the plan placed") });
    expect(h.apply({ caddyfile: "/etc/caddy/Caddyfile" }).code).toBe(2);
    expect(h.run(["apply", "caddyfile"]).code).toBe(2);
    expect(h.run(["reload"]).code).toBe(2);
    expect(h.calls()).toEqual([]);
  });

  it("apply validates with Caddy first: a Caddyfile Caddy refuses is named and Caddy is not touched", () => {
    const h = new Host(renderCaddyfile(https()).replace("reverse_proxy", "reverse_proxyy"));
    const r = h.apply();
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/keel-https: Caddy refuses .*Caddyfile: .*unrecognized directive: reverse_proxyy/);
    expect(h.calls()).toEqual([]);
  });

  it("apply enables and starts Caddy, checks it stays up, and the next apply with the same files changes nothing", () => {
    const h = new Host();
    const first = h.apply();
    expect(first, first.stderr).toMatchObject({ code: 0, stdout: "keel-https: caddy.service started with keel's Caddyfile; active and steady\n" });
    expect(h.calls().filter((c) => c[0] !== "show")).toEqual([["enable", "--quiet", "caddy.service"], ["restart", "caddy.service"]]);
    expect(readFileSync(h.stamp, "utf8")).toBe(`${sha256(readFileSync(h.caddyfile, "utf8"))} ${sha256(renderCaddyDropIn())}\n`);
    h.unit({ ActiveState: "active", MainPID: "4242", installed: true });
    expect(h.apply()).toMatchObject({ code: 0, stdout: "keel-https: caddy.service is active with this configuration; nothing changed\n" });
    expect(h.calls().filter((c) => c[0] === "restart")).toEqual([]);
  });

  it("apply restarts Caddy for a new Caddyfile, and fails when it does not stay up", () => {
    const h = new Host();
    writeFileSync(h.stamp, "old old\n");
    h.unit({ ActiveState: "active", MainPID: "4242", installed: true, after_restart: ["failed", "0"] });
    const r = h.apply();
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("keel-https: caddy.service is not steady 1s after its start: failed");
    expect(readFileSync(h.stamp, "utf8")).toBe("old old\n");
  });

  it("off stops and disables Caddy and forgets what was applied; without Caddy it has nothing to do", () => {
    const h = new Host();
    writeFileSync(h.stamp, "x y\n");
    h.unit({ ActiveState: "active", MainPID: "4242", installed: true });
    expect(h.run(["off"])).toMatchObject({ code: 0, stdout: "keel-https: caddy.service stopped and disabled (keel:https is off)\n" });
    expect(h.calls()).toEqual([["cat", "caddy.service"], ["disable", "--now", "--quiet", "caddy.service"]]);
    expect(() => readFileSync(h.stamp)).toThrow();
    h.unit({ ActiveState: "inactive", MainPID: "0", installed: false });
    expect(h.run(["off"])).toMatchObject({ code: 0, stdout: "keel-https: caddy.service is not installed; nothing to stop\n" });
  });

  it("status: off when the plan does not set it (degraded if Caddy runs anyway); certificate pending until Caddy holds one; ok; expiring; down when Caddy is not active, whatever ran", () => {
    const h = new Host();
    h.planned(false);
    const status = (): Record<string, any> => {
      const r = h.run(["status", "--json"]);
      return { code: r.code, ...(JSON.parse(r.stdout) as Record<string, any>) };
    };
    expect(status()).toMatchObject({ code: 0, enabled: false, status: "ok", summary: "keel:https is off" });
    h.unit({ ActiveState: "active", MainPID: "4242", installed: true });
    expect(status()).toMatchObject({ code: 1, enabled: false, status: "degraded", summary: expect.stringContaining("keel:https is off, but caddy.service is active") });
    h.planned(true);
    expect(status()).toMatchObject({
      code: 1,
      status: "degraded",
      summary: "certificate pending for app.example.com, www.example.com: DNS must point here (stack output httpsDnsRecords), then Caddy obtains it",
      certificates: [
        { domain: "app.example.com", state: "pending" },
        { domain: "www.example.com", state: "pending" },
      ],
    });
    h.certificate("app.example.com", 89);
    // Another issuer's certificate (a CA the Caddyfile no longer names) is not the one Caddy serves.
    h.certificate("www.example.com", 60, "localhost-14000-dir");
    expect(status()).toMatchObject({ code: 1, summary: expect.stringContaining("certificate pending for www.example.com:") });
    h.certificate("www.example.com", 60, "acme.zerossl.com-v2-DV90");
    const ok = status();
    expect(ok).toMatchObject({ code: 0, status: "ok", certificates: [{ state: "ok", issuer: "acme-v02.api.letsencrypt.org-directory" }, { state: "ok", issuer: "acme.zerossl.com-v2-DV90" }] });
    expect(ok.summary).toMatch(/^caddy\.service active; certificates ok for app\.example\.com, www\.example\.com \(next expiry \d{4}-\d\d-\d\dT/);
    h.certificate("www.example.com", 5, "acme.zerossl.com-v2-DV90");
    rmSync(join(h.certs, "localhost-14000-dir"), { recursive: true });
    expect(status()).toMatchObject({ code: 1, status: "degraded", summary: expect.stringMatching(/^certificate expiring for www\.example\.com \(\d\.\d days left\): renewals fail/) });
    h.unit({ ActiveState: "failed", MainPID: "0", installed: true });
    expect(status()).toMatchObject({ code: 3, status: "down", summary: "caddy.service is failed: nothing answers on 80 and 443" });
    expect(h.run(["status"]).stdout).toBe("keel-https: down: caddy.service is failed: nothing answers on 80 and 443\n");
  });

  it("status reads only what the Caddyfile's ACME directory issued, follows no link the caddy user planted and reads no huge or odd file", () => {
    const h = new Host(renderCaddyfile(https({ ...HTTPS, acmeCa: "https://localhost:14000/dir" })));
    h.unit({ ActiveState: "active", MainPID: "4242", installed: true });
    const status = () => h.run(["status", "--json"]);
    h.certificate("app.example.com", 60, "acme-v02.api.letsencrypt.org-directory");
    expect(JSON.parse(status().stdout).certificates[0]).toMatchObject({ domain: "app.example.com", state: "pending" });
    // A link anywhere below the certificates directory: refused (exit 4, unknown to keel-health), never followed.
    symlinkSync(join(h.certs, "acme-v02.api.letsencrypt.org-directory"), join(h.certs, "localhost-14000-dir"));
    expect(status()).toMatchObject({ code: 4, stderr: expect.stringContaining("cannot read Caddy's state") });
    rmSync(join(h.certs, "localhost-14000-dir"));
    mkdirSync(join(h.certs, "localhost-14000-dir", "app.example.com"), { recursive: true });
    symlinkSync("/etc/shadow", join(h.certs, "localhost-14000-dir", "app.example.com", "app.example.com.crt"));
    expect(status().code).toBe(4);
    rmSync(join(h.certs, "localhost-14000-dir", "app.example.com", "app.example.com.crt"));
    spawnSync("mkfifo", [join(h.certs, "localhost-14000-dir", "app.example.com", "app.example.com.crt")]);
    expect(status()).toMatchObject({ code: 4, stderr: expect.stringContaining("is not a regular file of at most 65536 bytes") });
  });

  it("status refuses a Caddyfile that is not keel's (no domains line) rather than report it healthy", () => {
    const h = new Host("localhost {\n}\n");
    const r = h.run(["status", "--json"]);
    expect(r.code).toBe(4);
    expect(r.stderr).toContain("has no '# keel-https domains:' line; it is not keel's");
  });
});

describe("what keel-health and keel verify make of keel-https status", () => {
  const loader = (file: string) => `
import importlib.machinery, importlib.util, json, sys
spec = importlib.util.spec_from_loader("m", importlib.machinery.SourceFileLoader("m", ${JSON.stringify(join(REPO, file))}))
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
`;
  const python = (program: string): unknown => {
    const r = spawnSync("python3", ["-I", "-B", "-c", program], { encoding: "utf8", env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" } });
    expect(r.stderr).toBe("");
    return JSON.parse(r.stdout);
  };
  let dir = "";
  const answer = (status: unknown, rc: number) => {
    dir ||= tempDir("keel-https-callers-");
    writeFileSync(join(dir, "keel-https"), `#!/bin/sh\n[ "$1 $2" = "status --json" ] || exit 9\necho '${JSON.stringify(status)}'\nexit ${rc}\n`, { mode: 0o755 });
  };
  const health = (status: unknown, rc = 0) => {
    answer(status, rc);
    return python(`${loader(TOOLS.health)}
r = m.check_https(m.Context(conf={"tools_dir": ${JSON.stringify(dir)}}, state={}, now=0, webhook=False))
print(json.dumps([r.status, r.summary, r.todo]))`);
  };
  /** keel verify's https line; systemd's answers for caddy.service are the test's (this machine runs no Caddy unit). */
  const verify = (status: unknown, rc = 0, unit: { execStart?: string; exposure?: string } = {}) => {
    answer(status, rc);
    const execStart = unit.execStart ?? "{ path=/usr/bin/caddy ; argv[]=/usr/bin/caddy run --config /etc/keel/caddy/Caddyfile --adapter caddyfile ; ignore_errors=no }";
    return python(`${loader(TOOLS.verify)}
real_run = m.run
def run(*argv):
    if argv[0] == "systemctl":
        return 0, ${JSON.stringify(execStart)} + "\\n", ""
    if argv[0] == "systemd-analyze":
        return 0, "→ Overall exposure level for caddy.service: ${unit.exposure ?? "1.5"} OK", ""
    return real_run(*argv)
m.run = run
m.check_https(${JSON.stringify(join(dir, "keel-https"))})
print(json.dumps(m.results))`);
  };
  const ok = { enabled: true, status: "ok", summary: "caddy.service active; certificates ok for app.example.com (next expiry 2027-03-01T00:00:00Z)", active_state: "active", certificates: [] };
  const pending = { ...ok, status: "degraded", summary: "certificate pending for app.example.com: DNS must point here (stack output httpsDnsRecords), then Caddy obtains it" };
  const down = { ...ok, status: "down", summary: "caddy.service is failed: nothing answers on 80 and 443", active_state: "failed" };

  it("keel-health: off is ok; ok; a pending certificate degraded, saying to create the DNS records; Caddy not running down; no status unknown", () => {
    expect(health({ enabled: false, status: "ok", summary: "keel:https is off", active_state: "inactive", certificates: [] })).toEqual(["ok", "off (keel:https unset)", ""]);
    expect(health(ok)).toEqual(["ok", ok.summary, ""]);
    expect(health(pending, 1)).toEqual(["degraded", pending.summary, expect.stringContaining("create the records of pulumi stack output httpsDnsRecords")]);
    expect(health(down, 3)).toEqual(["down", down.summary, expect.stringContaining("journalctl -u caddy")]);
    expect((health({ enabled: false, status: "degraded", summary: "keel:https is off, but caddy.service is active: …" }, 1) as string[])[0]).toBe("degraded");
    expect((health("not json", 4) as string[]).slice(0, 2)).toEqual(["unknown", "keel-https status exited 4 without a status"]);
  });

  it("keel verify: skipped when off, ok, failed when pending, down or without a status", () => {
    const tool = () => join(dir, "keel-https");
    expect(verify({ enabled: false, status: "ok", summary: "keel:https is off" })).toEqual([["skipped", "https", "keel:https is off: Caddy does not run, 80 and 443 are closed"]]);
    expect(verify(ok)).toEqual([["ok", "https", `${ok.summary}; keel's Caddyfile, exposure 1.5`]]);
    expect(verify(pending, 1)).toEqual([["failed", "https", pending.summary]]);
    expect(verify(down, 3)).toEqual([["failed", "https", down.summary]]);
    // Caddy as Debian runs it (its own Caddyfile), or out of keel's sandbox: failed, named.
    expect(verify(ok, 0, { execStart: "{ path=/usr/bin/caddy ; argv[]=/usr/bin/caddy run --environ --config /etc/caddy/Caddyfile ; }" })).toEqual([["failed", "https", expect.stringContaining("caddy.service does not run keel's Caddyfile")]]);
    expect(verify(ok, 0, { exposure: "9.0" })).toEqual([["failed", "https", "caddy.service: exposure 9.0 (planned at most 2.0)"]]);
    expect(verify("x", 4)).toEqual([["failed", "https", expect.stringMatching(new RegExp(`^${tool()} status exited 4 without a status`))]]);
  });

  it("keel verify's ufw and listeners lines: the open ports are keel:https's rules, Caddy (its binary, its user) the one listener besides sshd on them", () => {
    const conf = tempDir("keel-https-verify-");
    writeFileSync(join(conf, "on.conf"), ufwSshConf(parseConfig(minimalRaw({ "keel:https": JSON.stringify({ ...HTTPS, allowedCidrs: undefined, openPaths: [], public: true }) }))));
    writeFileSync(join(conf, "off.conf"), ufwSshConf(parseConfig(minimalRaw())));
    const ss = [
      'tcp LISTEN 0 128 0.0.0.0:22 0.0.0.0:* users:(("sshd",pid=10,fd=3))',
      'tcp LISTEN 0 4096 *:443 *:* users:(("caddy",pid=20,fd=7))',
      'tcp LISTEN 0 4096 *:80 *:* users:(("caddy",pid=20,fd=8))',
    ].join("\n");
    const listeners = (file: string, exe = "/usr/bin/caddy", user = "caddy") =>
      python(`${loader(TOOLS.verify)}
import pwd
m.UFW_CONF = ${JSON.stringify(conf)} + "/" + ${JSON.stringify(file)}
ssh, web = m.planned_ufw()
uid = pwd.getpwnam(${JSON.stringify(user)}).pw_uid
m.run = lambda *argv: (0, ${JSON.stringify(ss)}, "")
m.owner_exe = lambda process: (0, "/usr/sbin/sshd") if "sshd" in process else (uid, ${JSON.stringify(exe)})
m.check_listeners([22], m.https_ports())
print(json.dumps([sorted(web), m.results]))`);
    expect(listeners("on.conf")).toEqual([
      ["ufw allow 443/tcp comment 'keel-https'", "ufw allow 80/tcp comment 'keel-https'"],
      [["ok", "listeners", "beyond loopback only sshd on 22 and Caddy on 80, 443 (keel:https) (and the DHCP client)"]],
    ]);
    // Without keel:https, or another program or user on 80 and 443: failed.
    expect((listeners("off.conf") as unknown[][])[1]).toEqual([["failed", "listeners", "listening beyond loopback besides sshd on [22]: tcp *:443 (caddy), tcp *:80 (caddy)"]]);
    expect(((listeners("on.conf", "/usr/bin/python3") as unknown[][])[1] as string[][])[0][0]).toBe("failed");
    expect(((listeners("on.conf", "/usr/bin/caddy", "nobody") as unknown[][])[1] as string[][])[0][0]).toBe("failed");
  });
});

describe("ufw-apply with keel:https's ports", () => {
  it("opens 80 and 443 to anyone beside SSH, closes them when keel:https goes, and refuses any other open port", () => {
    const dir = tempDir("keel-ufw-https-");
    cpSync("/etc/ufw", join(dir, "etc-ufw"), { recursive: true });
    cpSync("/lib/ufw", join(dir, "lib-ufw"), { recursive: true });
    const conf = (h?: Record<string, unknown>) => ufwSshConf(parseConfig(minimalRaw({ "keel:image": "debian-12", ...(h ? { "keel:https": JSON.stringify(h) } : {}) })));
    writeFileSync(join(dir, "on.conf"), conf({ ...HTTPS, allowedCidrs: undefined, openPaths: [], public: true }));
    writeFileSync(join(dir, "off.conf"), conf());
    writeFileSync(join(dir, "bad.conf"), conf().replace(/\n$/, "\nopen 8080\n"));
    const apply = join(REPO, "cloud-init", "files", "ufw-apply.sh");
    const script = [
      "set -e",
      `mount --bind ${join(dir, "etc-ufw")} /etc/ufw`,
      `mount --bind ${join(dir, "lib-ufw")} /lib/ufw`,
      `bash ${apply} ${join(dir, "on.conf")}`,
      "echo '== on'; ufw show added",
      `bash ${apply} ${join(dir, "on.conf")} 2>/dev/null`,
      "echo '== again'; ufw show added",
      `bash ${apply} ${join(dir, "off.conf")} 2>/dev/null`,
      "echo '== off'; ufw show added",
      `bash ${apply} ${join(dir, "bad.conf")} 2>&1 && echo '== 8080 accepted' || echo "== 8080 refused: $?"`,
      "echo '== after'; ufw show added",
    ].join("\n");
    const r = spawnSync("unshare", ["--net", "--mount", "--propagation", "private", "bash", "-c", script], { encoding: "utf8", timeout: 120_000 });
    expect(r.status, r.stderr).toBe(0);
    const section = (name: string) => r.stdout.split(`== ${name}\n`)[1].split("\n== ")[0];
    const rules = (text: string) => text.split("\n").filter((l) => l.startsWith("ufw ")).sort();
    const ssh = "ufw allow from 203.0.113.10 to any port 22 proto tcp comment 'keel-ssh'";
    expect(rules(section("on"))).toEqual(["ufw allow 443/tcp comment 'keel-https'", "ufw allow 80/tcp comment 'keel-https'", ssh]);
    expect(r.stdout).toContain("keel ufw-apply: inbound denied except tcp/22 from 203.0.113.10/32 and tcp/80 443 from anywhere; UFW enabled");
    expect(rules(section("again"))).toEqual(rules(section("on")));
    expect(rules(section("off"))).toEqual([ssh]);
    expect(r.stdout).toMatch(/bad open port '8080' \(keel:https opens 80 and 443 only\)\n== 8080 refused: 2/);
    expect(rules(section("after"))).toEqual([ssh]);
  }, 180_000);
});
