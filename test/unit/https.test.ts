// keel:https (docs/HTTPS.md): its config, the plan with and without it, the firewall rules, the
// policy pack, the program's resources and outputs. What Caddy makes of the Caddyfile and drop-in is
// measured in test/host/https.test.ts; the whole endpoint with a certificate on a VM in
// test/vm/https.test.ts.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { firewallRules } from "../../components/firewall";
import { ConfigError, parseConfig } from "../../config";
import { sha256 } from "../../plan/hash";
import { ufwSshConf } from "../../plan/hardening";
import { buildHostPlan } from "../../plan/hostPlan";
import { CADDY_SERVICE, httpsDnsRecords, HTTPS_PATHS, openPathPatterns, renderCaddyDropIn, renderCaddyfile } from "../../plan/https";
import { TOOLS, toolPath } from "../../plan/tools";
import { FIREWALL, firewallSshOnly } from "../../policy/policies";
import { resourceViolations } from "../../policy/testing";
import { resolved, runProgram } from "../support/program";
import { minimalRaw, REPO, stackConfig } from "../support/stack";

const HTTPS = { domains: ["app.example.com"], upstream: "127.0.0.1:8000", acmeEmail: "ops@example.com", allowedCidrs: ["203.0.113.0/24", "2001:db8::/48"], openPaths: ["/authorize", "/.well-known/oauth-*"] };

function config(https: unknown = HTTPS, overrides: Record<string, string> = {}) {
  return parseConfig(minimalRaw({ ...(https === undefined ? {} : { "keel:https": JSON.stringify(https) }), ...overrides }));
}

function problems(https: unknown, overrides: Record<string, string> = {}): string[] {
  try {
    config(https, overrides);
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  return [];
}

describe("keel:https, validated like every other key", () => {
  it("takes the issue's example: a domain, the engine's loopback port, the ACME e-mail, CIDRs and open paths", () => {
    expect(config().https).toEqual(HTTPS);
    expect(config({ ...HTTPS, allowedCidrs: undefined, openPaths: undefined, public: true }).https).toEqual({ ...HTTPS, allowedCidrs: undefined, openPaths: [], public: true });
    expect(config({ ...HTTPS, upstream: "[::1]:8080" }).https?.upstream).toBe("[::1]:8080");
  });

  it("refuses a domain that is not a DNS name, naming the key, the value and the fix", () => {
    for (const bad of ["https://app.example.com", "app.example.com:443", "*.example.com", "localhost", "App.Example.com", "app_1.example.com", "app.example.com/"]) {
      const found = problems({ ...HTTPS, domains: [bad] });
      expect(found, bad).toEqual([expect.stringMatching(/^keel:https\.domains\[0\]: expected a DNS name in lowercase, such as app\.example\.com .*; found .*\. fix: pulumi config set --path 'keel:https\.domains\[0\]' <value>/)]);
    }
  });

  it("refuses an upstream that is not loopback, or a port that is SSH's or Caddy's own", () => {
    expect(problems({ ...HTTPS, upstream: "0.0.0.0:8000" })).toEqual([expect.stringContaining("keel:https.upstream: expected a loopback address (127.0.0.0/8 or [::1]), not 0.0.0.0: the engine must not listen on the network")]);
    expect(problems({ ...HTTPS, upstream: "10.0.0.5:8000" })).toEqual([expect.stringContaining("not 10.0.0.5")]);
    expect(problems({ ...HTTPS, upstream: "localhost:8000" })).toEqual([expect.stringContaining("host:port with a loopback address, such as 127.0.0.1:8000")]);
    expect(problems({ ...HTTPS, upstream: "127.0.0.1" })).toEqual([expect.stringContaining("host:port with a loopback address")]);
    expect(problems({ ...HTTPS, upstream: "127.0.0.1:0" })).toEqual([expect.stringContaining("a port from 1 to 65535")]);
    expect(problems({ ...HTTPS, upstream: "127.0.0.1:22" })).toEqual([expect.stringContaining("keel:https.upstream: port 22 is SSH's, not the engine's")]);
    expect(problems({ ...HTTPS, upstream: "127.0.0.1:2222" }, { "keel:sshPort": "2222" })).toEqual([expect.stringContaining("port 2222 is SSH's")]);
    expect(problems({ ...HTTPS, upstream: "127.0.0.1:443" })).toEqual([expect.stringContaining("port 443 is Caddy (HTTPS)'s")]);
  });

  it("refuses CIDRs with host bits, naming the network", () => {
    expect(problems({ ...HTTPS, allowedCidrs: ["203.0.113.7/24"] })).toEqual([
      expect.stringContaining("keel:https.allowedCidrs[0]: expected a CIDR such as 203.0.113.7/32 or 2001:db8::/48 (host bits are set; the network is 203.0.113.0/24"),
    ]);
  });

  it("refuses open paths that are not plain prefixes, open paths without allowedCidrs, and contradictions", () => {
    expect(problems({ ...HTTPS, openPaths: ["authorize"] })).toEqual([expect.stringContaining("keel:https.openPaths[0]: expected a path prefix such as /authorize")]);
    expect(problems({ ...HTTPS, openPaths: ["/a/../admin"] })).toEqual([expect.stringContaining("keel:https.openPaths[0]: expected a path prefix without . or .. segments")]);
    expect(problems({ ...HTTPS, openPaths: ["/a*b"] })).toEqual([expect.stringContaining("keel:https.openPaths[0]: expected a path prefix")]);
    expect(problems({ ...HTTPS, openPaths: ["/{x}"] })).toEqual([expect.stringContaining("keel:https.openPaths[0]")]);
    expect(problems({ ...HTTPS, allowedCidrs: undefined })).toEqual([expect.stringContaining("keel:https.openPaths: only used together with keel:https.allowedCidrs")]);
    expect(problems({ ...HTTPS, public: true })).toEqual([expect.stringContaining("keel:https.public: true says the endpoint is open to anyone, but keel:https.allowedCidrs limits it")]);
    expect(problems({ ...HTTPS, allowedCidrs: undefined, openPaths: [], public: false })).toEqual([expect.stringContaining("keel:https.public: false, but no keel:https.allowedCidrs")]);
    expect(problems({ ...HTTPS, domains: ["a.example.com", "a.example.com"] })).toEqual([expect.stringContaining("keel:https.domains: a.example.com is listed twice")]);
    // A gate that lets everyone through: refused, pointing to public: true.
    expect(problems({ ...HTTPS, allowedCidrs: ["203.0.113.0/24", "::/0"] })).toEqual([expect.stringContaining("keel:https.allowedCidrs[1]: ::/0 is every address, which is no gate")]);
    expect(problems({ ...HTTPS, openPaths: ["/"] })).toEqual([expect.stringContaining("keel:https.openPaths[0]: / opens every path, which leaves no gate")]);
    expect(problems({ ...HTTPS, openPaths: ["/authorize", "/*"] })).toEqual([expect.stringContaining("keel:https.openPaths[1]: /* opens every path")]);
  });

  it("refuses an unknown field, a missing one, and an ACME directory that is not https", () => {
    expect(problems({ ...HTTPS, port: 8443 })).toEqual([expect.stringMatching(/^keel:https: expected .*port/)]);
    const { acmeEmail: _, ...noEmail } = HTTPS;
    expect(problems(noEmail)).toEqual([expect.stringContaining("keel:https.acmeEmail:")]);
    expect(problems({ ...HTTPS, acmeCa: "http://127.0.0.1:14000/dir" })).toEqual([expect.stringContaining("keel:https.acmeCa: expected an ACME directory URL")]);
  });
});

describe("the plan with and without keel:https", () => {
  const { raw, secretKeys } = stackConfig("prod");
  const without = parseConfig(raw, (k) => secretKeys.includes(k));
  const withHttps = parseConfig({ ...raw, "keel:https": JSON.stringify(HTTPS) }, (k) => secretKeys.includes(k));

  it("without it: no HTTPS step, no Caddy file, UFW's conf and the Hetzner rules SSH and ICMP only", () => {
    const plan = buildHostPlan(without);
    expect(plan.steps.filter((s) => /https|caddy/.test(s.name))).toEqual([]);
    expect(plan.files.filter((f) => /caddy/i.test(f.path))).toEqual([]);
    expect(ufwSshConf(without)).not.toMatch(/^open /m);
    expect(firewallRules({ ...without }).map((r) => `${r.protocol}/${r.port ?? ""}`)).toEqual(["tcp/22", "icmp/"]);
  });

  it("with it: the same plan plus the three HTTPS steps after the engine's, and the firewall step's two open ports", () => {
    const a = buildHostPlan(without).steps;
    const b = buildHostPlan(withHttps).steps;
    const names = b.map((s) => s.name);
    expect(names.filter((n) => n.startsWith("https-"))).toEqual(["https-config", "https-package", "https-start"]);
    expect(names.indexOf("https-config")).toBe(names.indexOf("engine-start") + 1);
    expect(names.indexOf("https-start") + 1).toBe(names.indexOf("alert-webhook"));
    const rest = b.filter((s) => !s.name.startsWith("https-"));
    expect(rest.map((s) => s.name)).toEqual(a.map((s) => s.name));
    // Every other step has the same bytes (the engine's unit does not change: the engine listens on its own).
    expect(rest.filter((s, i) => JSON.stringify(s) !== JSON.stringify(a[i])).map((s) => s.name)).toEqual(["harden-firewall"]);
    expect(ufwSshConf(withHttps)).toBe(ufwSshConf(without).replace(/\n$/, "\n# keel:https: Caddy's ports, open to anyone (its gate decides by keel:https.allowedCidrs).\nopen 80\nopen 443\n"));
  });

  it("opens 80 and 443 to anyone in the Hetzner firewall (Caddy's gate decides), SSH unchanged", () => {
    const rules = firewallRules({ ...withHttps, httpsPorts: [80, 443] });
    expect(rules.map((r) => `${r.protocol}/${r.port ?? ""} ${(r.sourceIps as string[]).join(",")}`)).toEqual([
      `tcp/22 ${withHttps.allowedSshCidrs.join(",")}`,
      "tcp/80 0.0.0.0/0,::/0",
      "tcp/443 0.0.0.0/0,::/0",
      "icmp/ 0.0.0.0/0,::/0",
    ]);
  });

  it("places keel's Caddyfile and the drop-in before the package, whose own start then runs keel's configuration", () => {
    const steps = buildHostPlan(withHttps).steps;
    const config = steps.find((s) => s.name === "https-config")!;
    expect(config.bundle?.files.map((f) => [f.path, f.owner, f.mode])).toEqual([
      [HTTPS_PATHS.caddyfile, "root", "0644"],
      [HTTPS_PATHS.dropIn, "root", "0644"],
    ]);
    expect(config.bundle?.onChange).toEqual([["systemctl", "daemon-reload"]]);
    expect(steps.find((s) => s.name === "https-package")!.command).toBe(`sudo ${toolPath("packages")} caddy`);
  });

  it("starts Caddy through keel-https, whose bytes the command names (a new tool updates the step, never replaces it), and stops it when the step is deleted", () => {
    const start = buildHostPlan(withHttps).steps.find((s) => s.name === "https-start")!;
    if (start.kind === "local" || start.kind === "upload") throw new Error("https-start is a remote step");
    const caddyfile = renderCaddyfile(withHttps.https!);
    expect(start.command).toBe(
      `sudo ${toolPath("https")} apply caddyfile=${HTTPS_PATHS.caddyfile} caddyfile-sha256=${sha256(caddyfile)} drop-in=${HTTPS_PATHS.dropIn} drop-in-sha256=${sha256(renderCaddyDropIn())} tool-sha256=${sha256(readFileSync(join(REPO, TOOLS.https), "utf8"))}`,
    );
    expect(start.deleteCommand).toBe(`sudo ${toolPath("https")} off`);
    // No bytes behind the trigger: only the server's id replaces it (components/hostSteps.ts).
    expect(start.unseenHash).toBe(sha256(JSON.stringify({ dependsOn: [] })));
  });
});

describe("keel's Caddyfile", () => {
  const h = config().https!;

  it("serves every domain with the gate, HSTS, the journal log and no admin endpoint", () => {
    const text = renderCaddyfile({ ...h, domains: ["app.example.com", "www.example.com"] });
    expect(text).toContain("# keel-https domains: app.example.com www.example.com\n");
    expect(text).toMatch(/^\{\n\tadmin off\n\temail ops@example\.com\n\tservers \{\n\t\tprotocols h1 h2\n\t\}\n\}\n\napp\.example\.com, www\.example\.com \{\n/m);
    expect(text).toContain('\theader Strict-Transport-Security "max-age=31536000"\n');
    expect(text).toContain("\t\tnot remote_ip 203.0.113.0/24 2001:db8::/48\n\t\tnot path /authorize /authorize/* /.well-known/oauth-*\n");
    expect(text).toContain('\troute {\n\t\trespond @unclean "Bad Request" 400\n\t\trespond @upgrade "Bad Request" 400\n\t\trespond @outside "Forbidden" 403\n\t\treverse_proxy 127.0.0.1:8000 {\n');
    expect(text).toContain("\t\t\theader_up -Forwarded\n\t\t\theader_up -X-Real-IP\n\t\t}\n\t}\n");
    expect(text).toContain("\t@upgrade {\n\t\theader Upgrade *\n\t\tnot header_regexp Upgrade (?i)^websocket$\n\t}\n");
    expect(text).not.toContain("acme_ca");
    expect(renderCaddyfile({ ...h, acmeCa: "https://acme-staging-v02.api.letsencrypt.org/directory" })).toContain("\temail ops@example.com\n\tacme_ca https://acme-staging-v02.api.letsencrypt.org/directory\n");
  });

  it("without allowedCidrs: no gate, open to anyone", () => {
    const text = renderCaddyfile({ ...h, allowedCidrs: undefined, openPaths: [], public: true });
    expect(text).not.toContain("@outside");
    expect(text).not.toContain("403");
    expect(text).toContain("\t# No keel:https.allowedCidrs: open to anyone.\n");
  });

  it("opens a path and what is below it, or with a trailing * every path that starts so", () => {
    expect(openPathPatterns("/authorize")).toEqual(["/authorize", "/authorize/*"]);
    expect(openPathPatterns("/api/public/")).toEqual(["/api/public", "/api/public/*"]);
    expect(openPathPatterns("/.well-known/oauth-*")).toEqual(["/.well-known/oauth-*"]);
    expect(openPathPatterns("/")).toEqual(["/*"]);
  });

  it("runs Caddy on keel's Caddyfile with the package's unit and keel's sandbox", () => {
    const dropIn = renderCaddyDropIn();
    expect(dropIn).toContain(`[Service]\nExecStart=\nExecStart=/usr/bin/caddy run --config ${HTTPS_PATHS.caddyfile} --adapter caddyfile\n`);
    expect(dropIn).toContain("CapabilityBoundingSet=CAP_NET_BIND_SERVICE\nAmbientCapabilities=CAP_NET_BIND_SERVICE\n");
    expect(dropIn).toContain(`ReadWritePaths=${HTTPS_PATHS.caddyHome}\n`);
    expect(CADDY_SERVICE).toBe("caddy.service");
  });

  it("tells the operator which DNS records to create", () => {
    expect(httpsDnsRecords(["app.example.com"], "198.51.100.7", "2001:db8::1")).toEqual([
      { name: "app.example.com", type: "A", value: "198.51.100.7" },
      { name: "app.example.com", type: "AAAA", value: "2001:db8::1" },
    ]);
    expect(httpsDnsRecords(["app.example.com"], undefined, "2001:db8::1")).toEqual([{ name: "app.example.com", type: "AAAA", value: "2001:db8::1" }]);
  });
});

describe("the policy pack with keel:https", () => {
  const urn = (stack: string) => `urn:pulumi:${stack}::keel::keel:index:Keel$${FIREWALL}::keel-firewall-fw`;
  const SSH = { direction: "in", protocol: "tcp", port: "22", sourceIps: ["203.0.113.10/32"] };
  const web = (port: string) => ({ direction: "in", protocol: "tcp", port, sourceIps: ["0.0.0.0/0", "::/0"] });
  const firewall = (stack: string, rules: unknown[]) => ({ type: FIREWALL, name: "keel-firewall-fw", urn: urn(stack), props: { rules }, opts: {} });

  function withStackFile<T>(stack: string, body: string, run: (dir: string) => Promise<T>): Promise<T> {
    const dir = mkdtempSync(join(tmpdir(), "keel-policy-https-"));
    writeFileSync(join(dir, "Pulumi.yaml"), "name: keel\nruntime: nodejs\n");
    writeFileSync(join(dir, `Pulumi.${stack}.yaml`), body);
    return run(dir).finally(() => rmSync(dir, { recursive: true, force: true }));
  }

  it("refuses 80 and 443 when the stack file does not set keel:https (keel's own prod)", async () => {
    expect(await resourceViolations(firewallSshOnly(), firewall("prod", [SSH, web("80"), web("443")]))).toEqual([
      expect.stringContaining("rules[1] opens inbound TCP port 80, but the stack file does not set keel:https"),
      expect.stringContaining("rules[2] opens inbound TCP port 443, but the stack file does not set keel:https"),
    ]);
  });

  it("accepts 80 and 443 to anyone with keel:https, on staging without allowedCidrs too; every other port stays refused", async () => {
    await withStackFile("staging", "config:\n  keel:https:\n    domains: [app.example.com]\n", async (dir) => {
      expect(await resourceViolations(firewallSshOnly(dir), firewall("staging", [SSH, web("80"), web("443")]))).toEqual([]);
      expect(await resourceViolations(firewallSshOnly(dir), firewall("staging", [SSH, web("80"), web("443"), web("8443")]))).toEqual([
        expect.stringContaining("rules[3] opens inbound TCP port 8443 to 0.0.0.0/0 (the whole internet)"),
        expect.stringContaining("rules[3] opens inbound TCP port 8443 to ::/0"),
        expect.stringContaining("inbound TCP is open on 2 ports (22, 8443)"),
      ]);
    });
  });

  it("on prod requires keel:https.allowedCidrs or an explicit public: true", async () => {
    const rules = [SSH, web("80"), web("443")];
    await withStackFile("prod", "config:\n  keel:https:\n    domains: [app.example.com]\n", async (dir) => {
      expect(await resourceViolations(firewallSshOnly(dir), firewall("prod", rules))).toEqual([expect.stringContaining("a prod stack opens 80 and 443 (keel:https) without saying who may reach the engine")]);
    });
    await withStackFile("prod", "config:\n  keel:https:\n    public: true\n", async (dir) => {
      expect(await resourceViolations(firewallSshOnly(dir), firewall("prod", rules))).toEqual([]);
    });
    await withStackFile("prod", "config:\n  keel:https:\n    allowedCidrs: [198.51.100.0/24]\n", async (dir) => {
      expect(await resourceViolations(firewallSshOnly(dir), firewall("prod", rules))).toEqual([]);
    });
    // Set without --path: a JSON string in the stack file, read the same.
    await withStackFile("prod", `config:\n  keel:https: '${JSON.stringify({ domains: ["app.example.com"], allowedCidrs: ["198.51.100.0/24"] })}'\n`, async (dir) => {
      expect(await resourceViolations(firewallSshOnly(dir), firewall("prod", rules))).toEqual([]);
    });
    // A CIDR of every address is no gate.
    await withStackFile("prod", "config:\n  keel:https:\n    allowedCidrs: [0.0.0.0/0]\n", async (dir) => {
      expect(await resourceViolations(firewallSshOnly(dir), firewall("prod", rules))).toEqual([expect.stringContaining("without saying who may reach the engine")]);
    });
  });
});

// Without it: test/unit/program.staging.test.ts (the runtime is process-global: one program per file).
describe("the program with keel:https, under Pulumi mocks", () => {
  it("opens 80 and 443, gives the https-start command its delete, and outputs the DNS records", async () => {
    const run = await runProgram("staging", { "keel:https": JSON.stringify({ ...HTTPS, allowedCidrs: undefined, openPaths: [], public: true }) });
    const rules = await resolved<Array<Record<string, unknown>>>(run.one("hcloud:index/firewall:Firewall").inputs.rules);
    expect(rules.filter((r) => r.protocol === "tcp").map((r) => r.port)).toEqual(["2222", "80", "443"]);
    const start = run.byType("command:remote:Command").find((c) => c.name.endsWith("-https-start"))!;
    expect(await resolved(start.inputs.delete)).toBe(`sudo ${toolPath("https")} off`);
    // Replaced delete-first: a new server (same address) gets off, then apply (components/hostSteps.ts).
    expect(start.opts.deleteBeforeReplace).toBe(true);
    for (const c of run.byType("command:remote:Command").filter((c) => !c.name.endsWith("-https-start"))) {
      expect(c.inputs.delete, c.name).toBeUndefined();
      expect(c.opts.deleteBeforeReplace, c.name).toBeUndefined();
    }
    expect(await resolved(run.outputs.httpsDnsRecords)).toEqual([
      { name: "app.example.com", type: "A", value: "198.51.100.7" },
      { name: "app.example.com", type: "AAAA", value: "2001:db8:4f8::1" },
    ]);
  });
});
