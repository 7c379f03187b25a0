import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parse as parseYaml, stringify as stringifyYaml } from "yaml";
import {
  FIREWALL,
  GITHUB_DEPLOY_KEY,
  SERVER,
  findProjectDir,
  firewallSshOnly,
  githubDeployKeyReadOnly,
  keelPolicies,
  noPlaintextSecretConfig,
  prodServerProtected,
  serverFirewallAtCreation,
  serverIgnoresForceNewInputs,
} from "../../policy/policies";
import { NotApplicable, resourceViolations, stackViolations, type PlainResource } from "../../policy/testing";
import { REPO } from "../support/stack";

const urn = (stack: string, type: string, name: string) => `urn:pulumi:${stack}::keel::keel:index:Keel$${type}::${name}`;

const SSH = { direction: "in", protocol: "tcp", port: "22", sourceIps: ["203.0.113.10/32", "2001:db8:1234::/48"] };
const ICMP = { direction: "in", protocol: "icmp", sourceIps: ["0.0.0.0/0", "::/0"] };

function firewall(rules: Array<Record<string, unknown>>): PlainResource {
  return { type: FIREWALL, name: "keel-firewall-fw", urn: urn("prod", FIREWALL, "keel-firewall-fw"), props: { rules }, opts: {} };
}

function server(stack: string, props: Record<string, unknown> = {}, opts: PlainResource["opts"] = {}): PlainResource {
  return {
    type: SERVER,
    name: "keel-server-server",
    urn: urn(stack, SERVER, "keel-server-server"),
    props: { firewallIds: [1001], deleteProtection: true, rebuildProtection: true, backups: true, ...props },
    opts: { protect: true, ignoreChanges: ["userData", "sshKeys"], ...opts },
  };
}

describe("hcloud-firewall-ssh-only", () => {
  it("accepts SSH from limited CIDRs plus ICMP from anywhere, on any SSH port", async () => {
    expect(await resourceViolations(firewallSshOnly(), firewall([SSH, ICMP]))).toEqual([]);
    expect(await resourceViolations(firewallSshOnly(), firewall([{ ...SSH, port: "2222" }, ICMP]))).toEqual([]);
  });

  it("ignores outbound rules", async () => {
    const out = { direction: "out", protocol: "udp", port: "53", destinationIps: ["0.0.0.0/0"] };
    expect(await resourceViolations(firewallSshOnly(), firewall([SSH, ICMP, out]))).toEqual([]);
  });

  it("refuses a second inbound TCP port", async () => {
    const https = { ...SSH, port: "8443", sourceIps: ["0.0.0.0/0", "::/0"] };
    const found = await resourceViolations(firewallSshOnly(), firewall([SSH, https]));
    expect(found).toContainEqual(expect.stringContaining("inbound TCP is open on 2 ports (22, 8443): only the SSH port may be open"));
    // From limited sources too, when they are not the SSH rule's own.
    const other = { ...SSH, port: "8080", sourceIps: ["198.51.100.0/24"] };
    expect(await resourceViolations(firewallSshOnly(), firewall([SSH, other, ICMP]))).toEqual([expect.stringContaining("inbound TCP is open on 2 ports (22, 8080)")]);
  });

  it("accepts the SSH port and the stack file's keel:sshPortNext from the same sources while the port moves, nothing else", async () => {
    const dir = mkdtempSync(join(tmpdir(), "keel-policy-next-"));
    try {
      writeFileSync(join(dir, "Pulumi.yaml"), "name: keel\nruntime: nodejs\n");
      writeFileSync(join(dir, "Pulumi.prod.yaml"), 'config:\n  keel:sshPortNext: "2222"\n');
      const moving = firewallSshOnly(dir);
      const next = { ...SSH, port: "2222", sourceIps: [...SSH.sourceIps].reverse() };
      expect(await resourceViolations(moving, firewall([SSH, next, ICMP]))).toEqual([]);
      // Without keel:sshPortNext in the stack file (keel's own prod), the same rules are refused.
      expect(await resourceViolations(firewallSshOnly(), firewall([SSH, next, ICMP]))).toEqual([expect.stringContaining("inbound TCP is open on 2 ports (22, 2222)")]);
      // Another second port, other sources, or a third port: refused even while it moves.
      expect(await resourceViolations(moving, firewall([SSH, { ...SSH, port: "8443" }, ICMP]))).toEqual([expect.stringContaining("inbound TCP is open on 2 ports (22, 8443)")]);
      expect(await resourceViolations(moving, firewall([SSH, { ...next, sourceIps: ["198.51.100.0/24"] }, ICMP]))).toEqual([expect.stringContaining("inbound TCP is open on 2 ports (22, 2222)")]);
      expect(await resourceViolations(moving, firewall([SSH, next, { ...SSH, port: "2200" }, ICMP]))).toEqual([expect.stringContaining("inbound TCP is open on 3 ports (22, 2200, 2222)")]);
      // The other port must be keel:sshPort (22 when the stack file does not set it).
      expect(await resourceViolations(moving, firewall([{ ...SSH, port: "3306" }, next, ICMP]))).toEqual([expect.stringContaining("inbound TCP is open on 2 ports (2222, 3306)")]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("refuses any inbound UDP (or other protocol) rule", async () => {
    const udp = { direction: "in", protocol: "udp", port: "51820", sourceIps: ["203.0.113.10/32"] };
    expect(await resourceViolations(firewallSshOnly(), firewall([SSH, udp]))).toEqual([
      "rules[1] opens inbound UDP port 51820: only TCP on the SSH port and ICMP may be open. fix: remove the rule",
    ]);
    const gre = { direction: "in", protocol: "gre", sourceIps: ["203.0.113.10/32"] };
    expect(await resourceViolations(firewallSshOnly(), firewall([SSH, gre]))).toEqual([expect.stringContaining("rules[1] opens inbound GRE")]);
  });

  it("refuses SSH open to the whole internet, IPv4 or IPv6", async () => {
    for (const anywhere of ["0.0.0.0/0", "::/0"]) {
      const found = await resourceViolations(firewallSshOnly(), firewall([{ ...SSH, sourceIps: ["203.0.113.10/32", anywhere] }, ICMP]));
      expect(found).toEqual([expect.stringContaining(`rules[0] opens inbound TCP port 22 to ${anywhere} (the whole internet): SSH must be limited to the admin CIDRs`)]);
    }
  });

  it("refuses a TCP port range or 'any'", async () => {
    expect(await resourceViolations(firewallSshOnly(), firewall([{ ...SSH, port: "1-65535" }]))).toEqual([
      expect.stringContaining('rules[0] opens inbound TCP port "1-65535": only the single SSH port may be open'),
    ]);
    expect(await resourceViolations(firewallSshOnly(), firewall([{ ...SSH, port: "any" }]))).toEqual([expect.stringContaining('port "any"')]);
  });

  it("leaves other resource types alone", async () => {
    const notAFirewall = { ...firewall([{ ...SSH, sourceIps: ["0.0.0.0/0"] }]), type: "hcloud:index/network:Network" };
    expect(await resourceViolations(firewallSshOnly(), notAFirewall)).toEqual([]);
  });
});

describe("hcloud-server-firewall-at-creation", () => {
  it("accepts a server with a firewall, even while its ID is unknown during preview", async () => {
    expect(await resourceViolations(serverFirewallAtCreation, server("staging"))).toEqual([]);
    // What the engine sends on a first preview: the firewall does not exist yet. (The sentinel is
    // internal to @pulumi/policy, hence the cast.)
    const { unknownNumberValue } = (await import("@pulumi/policy/proxy")) as unknown as { unknownNumberValue: string };
    expect(unknownNumberValue).toMatch(/^[0-9a-f-]{36}$/);
    expect(await resourceViolations(serverFirewallAtCreation, server("staging", { firewallIds: [unknownNumberValue] }))).toEqual([]);
  });

  it("refuses a server without firewallIds, or with none", async () => {
    for (const firewallIds of [undefined, []]) {
      expect(await resourceViolations(serverFirewallAtCreation, server("staging", { firewallIds }))).toEqual([
        expect.stringContaining("the server has no firewallIds: it would boot with every port open"),
      ]);
    }
  });
});

describe("github-deploy-key-read-only", () => {
  const key = (props: Record<string, unknown>): PlainResource => ({
    type: GITHUB_DEPLOY_KEY,
    name: "keel-deploy-key",
    urn: urn("staging", GITHUB_DEPLOY_KEY, "keel-deploy-key"),
    props: { repository: "engine", title: "keel keel/staging", key: "ssh-ed25519 AAAA", ...props },
    opts: {},
  });

  it("accepts a read-only key and refuses one that can write, or leaves it to the provider", async () => {
    expect(await resourceViolations(githubDeployKeyReadOnly, key({ readOnly: true }))).toEqual([]);
    expect(await resourceViolations(githubDeployKeyReadOnly, key({ readOnly: false }))).toEqual([
      "the GitHub deploy key has readOnly false: the server would hold a key that can push to the repository it deploys. fix: readOnly: true (components/githubDeployKey.ts)",
    ]);
    expect(await resourceViolations(githubDeployKeyReadOnly, key({}))).toEqual([expect.stringContaining("the GitHub deploy key has readOnly null")]);
  });
});

describe("hcloud-server-ignore-changes", () => {
  it("refuses a server that would be replaced when userData or sshKeys change", async () => {
    expect(await resourceViolations(serverIgnoresForceNewInputs, server("staging", {}, { ignoreChanges: ["sshKeys"] }))).toEqual([
      expect.stringContaining("the server's ignoreChanges lacks userData: Hetzner replaces a server"),
    ]);
    expect(await resourceViolations(serverIgnoresForceNewInputs, server("staging", {}, { ignoreChanges: [] }))).toEqual([
      expect.stringContaining("lacks userData and sshKeys"),
    ]);
  });
});

describe("hcloud-prod-server-protected", () => {
  it("accepts a protected, backed-up prod server and any staging server", async () => {
    expect(await resourceViolations(prodServerProtected, server("prod"))).toEqual([]);
    const bare = server("staging", { deleteProtection: false, rebuildProtection: false, backups: false }, { protect: false });
    expect(await resourceViolations(prodServerProtected, bare)).toEqual([]);
  });

  it("names every missing protection of a prod server", async () => {
    const cases: Array<[Record<string, unknown>, PlainResource["opts"], string]> = [
      [{}, { protect: false }, "Pulumi protect is off"],
      [{ deleteProtection: false }, {}, "deleteProtection is off at Hetzner"],
      [{ rebuildProtection: false }, {}, "rebuildProtection is off at Hetzner"],
      [{ backups: false }, {}, "Hetzner backups are off"],
    ];
    for (const [props, opts, message] of cases) {
      const found = await resourceViolations(prodServerProtected, server("prod", props, opts));
      expect(found).toEqual([expect.stringMatching(new RegExp(`^production server: ${message} \\(a destroy, .*\\)\\. fix: pulumi config set keel:protect true`))]);
    }
  });
});

describe("config-no-plaintext-secrets", () => {
  const resources = (stack: string): PlainResource[] => [
    { type: "pulumi:pulumi:Stack", name: `keel-${stack}`, urn: `urn:pulumi:${stack}::keel::pulumi:pulumi:Stack::keel-${stack}`, props: {}, opts: {} },
  ];
  const work = mkdtempSync(join(tmpdir(), "keel-policy-"));
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  /** A copy of keel's project with the prod stack file's config changed by `edit`. */
  function projectWith(edit: (config: Record<string, unknown>) => void): string {
    const dir = mkdtempSync(join(work, "project-"));
    cpSync(join(REPO, "Pulumi.yaml"), join(dir, "Pulumi.yaml"));
    const file = parseYaml(readFileSync(join(REPO, "Pulumi.prod.yaml"), "utf8")) as { config: Record<string, unknown> };
    edit(file.config);
    writeFileSync(join(dir, "Pulumi.prod.yaml"), stringifyYaml(file));
    return dir;
  }
  const check = (dir: string | undefined, stack = "prod") => stackViolations(noPlaintextSecretConfig(dir), resources(stack));
  const SECURE = { secure: "v1:bm90LWEtcmVhbC1jaXBoZXJ0ZXh0" };

  it("finds keel's project above the policy pack, and passes keel's checked-in stack files", async () => {
    expect(findProjectDir(join(REPO, "policy"))).toBe(REPO);
    expect(await check(undefined, "prod")).toEqual([]);
    expect(await check(undefined, "staging")).toEqual([]);
  });

  it("accepts secrets stored encrypted, whole or per --path leaf", async () => {
    const dir = projectWith((c) => {
      c["hcloud:token"] = SECURE;
      c["keel:secretEnv"] = { ENGINE_API_KEY: SECURE, ENGINE_DB_KEY: SECURE };
    });
    expect(await check(dir)).toEqual([]);
  });

  it("refuses a plaintext hcloud:token or keel:secretEnv, and never shows the value", async () => {
    const token = "plaintext-hcloud-token-value";
    const dir = projectWith((c) => {
      c["hcloud:token"] = token;
      c["keel:secretEnv"] = { ENGINE_API_KEY: SECURE, ENGINE_DB_KEY: "plaintext-db-key" };
    });
    const found = await check(dir);
    expect(found).toEqual([
      "hcloud:token is plaintext in the stack file, but hcloud:token only ever holds secrets (value not shown). fix: pulumi config set --secret hcloud:token <value>, and rotate the secret if the file was ever committed",
      expect.stringContaining("keel:secretEnv.ENGINE_DB_KEY is plaintext in the stack file, but keel:secretEnv only ever holds secrets (value not shown). fix: pulumi config set --secret --path 'keel:secretEnv.ENGINE_DB_KEY' <value>"),
    ]);
    expect(found.join("\n")).not.toContain(token);
    expect(found.join("\n")).not.toContain("plaintext-db-key");
  });

  it("refuses plaintext under a secret-sounding name, at any depth and in any namespace", async () => {
    const dir = projectWith((c) => {
      c["keel:settings"] = { logLevel: "INFO", broker: { apiToken: "abc" } };
      c["aws:secretKey"] = "abc";
      c["keel:dbPassword"] = "abc";
    });
    const found = await check(dir);
    expect(found.map((m) => m.split(" ")[0])).toEqual(["keel:settings.broker.apiToken", "aws:secretKey", "keel:dbPassword"]);
    expect(found[0]).toContain("its name says it holds a secret");
  });

  it("refuses plaintext that looks like a key or token, whatever its name", async () => {
    const pem = [`-----BEGIN OPENSSH ${"PRIVATE"} KEY-----`, "b3BlbnNzaC1rZXktdjEAAAAA", "-----END OPENSSH PRIVATE KEY-----"].join("\n");
    const dir = projectWith((c) => {
      c["keel:settings"] = { note: pem, hetzner: "A".repeat(32) + "b".repeat(32), notes: [`pul-${"0".repeat(40)}`] };
    });
    const found = await check(dir);
    expect(found).toEqual([
      expect.stringContaining("keel:settings.note is plaintext in the stack file, but it looks like a private key"),
      expect.stringContaining("keel:settings.hetzner is plaintext in the stack file, but it looks like a Hetzner API token"),
      expect.stringContaining("keel:settings.notes[0] is plaintext in the stack file, but it looks like a Pulumi access token"),
    ]);
    expect(found.join("\n")).not.toContain("b3BlbnNzaC1rZXktdjEAAAAA");
  });

  it("lets ordinary values through: checksums, commits, public keys", async () => {
    const dir = projectWith((c) => {
      c["keel:settings"] = { modelSha256: "0123456789abcdef".repeat(4), pinnedCommit: "3f9c2a1d4b5e6f708192a3b4c5d6e7f8091a2b3c" };
    });
    expect(await check(dir)).toEqual([]);
  });

  it("fails closed when it cannot read the stack's config", async () => {
    const dir = projectWith(() => undefined);
    expect(await check(dir, "qa")).toEqual([expect.stringContaining(`cannot check the stack config for plaintext secrets: no stack file Pulumi.qa.yaml in ${dir}`)]);
    writeFileSync(join(dir, "Pulumi.yaml"), "name: other\nruntime: nodejs\n");
    expect(await check(dir)).toEqual([expect.stringContaining("the policy pack belongs to project other, not keel")]);
    expect(await check(join(work, "nowhere"))).toEqual([expect.stringContaining(`no Pulumi.yaml in ${join(work, "nowhere")}`)]);
  });

  it("is not applicable to an empty stack", async () => {
    await expect(stackViolations(noPlaintextSecretConfig(REPO), [])).rejects.toBeInstanceOf(NotApplicable);
  });
});

describe("the pack", () => {
  it("enforces every policy as mandatory, under unique names", () => {
    const policies = keelPolicies();
    expect(policies.map((p) => p.name)).toEqual([
      "hcloud-firewall-ssh-only",
      "hcloud-server-firewall-at-creation",
      "hcloud-server-ignore-changes",
      "hcloud-prod-server-protected",
      "github-deploy-key-read-only",
      "config-no-plaintext-secrets",
    ]);
    expect(new Set(policies.map((p) => p.enforcementLevel))).toEqual(new Set(["mandatory"]));
  });
});
