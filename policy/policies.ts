/**
 * keel's policies, as plain data and pure checks so they can be unit-tested without the Pulumi
 * engine (index.ts only wraps them in a PolicyPack). Every message names the resource or config key,
 * what was found and how to fix it; none ever contains a config value.
 */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import type { ResourceValidationArgs, ResourceValidationPolicy, ReportViolation, StackValidationPolicy } from "@pulumi/policy";
import { parse as parseYaml } from "yaml";

export const FIREWALL = "hcloud:index/firewall:Firewall";
export const SERVER = "hcloud:index/server:Server";
export const GITHUB_DEPLOY_KEY = "github:index/repositoryDeployKey:RepositoryDeployKey";
/** Stacks whose servers must be protected and backed up. */
export const PROD_STACKS = ["prod"];

/** The stack and project named in a URN (`urn:pulumi:<stack>::<project>::<type>::<name>`). */
export function parseUrn(urn: string): { stack: string; project: string } {
  const m = /^urn:pulumi:([^:]+)::([^:]+)::/.exec(urn);
  if (!m) throw new Error(`not a Pulumi URN: ${urn}`);
  return { stack: m[1], project: m[2] };
}

// ---------------------------------------------------------------------------------------------
// Firewall: inbound is SSH from the admin CIDRs plus ICMP, nothing else.

interface FirewallRule {
  direction?: string;
  protocol?: string;
  port?: string;
  sourceIps?: string[];
}

/** A CIDR whose prefix length is 0 matches every address of its family. */
function isAnywhere(cidr: string): boolean {
  return /\/0+$/.test(cidr.trim());
}

/** keel:https as the stack file sets it (config.ts validates it; the pack reads what it needs). */
export interface StackHttps {
  readonly allowedCidrs?: unknown;
  readonly public?: unknown;
}

/** The ports keel:https opens to anyone (plan/https.ts HTTPS_PORTS); no other port is ever open to anyone. */
export const HTTPS_PORTS = ["80", "443"];

/**
 * Problems with a firewall's inbound rules. The SSH port itself is the stack's choice
 * (keel:sshPort), so the rule is "one TCP port, never from anywhere", not "port 22". While the
 * port moves, `sshPortNext` (the stack file's keel:sshPortNext) is open too, from exactly the same
 * sources; no other second port. With keel:https in the stack file, TCP 80 and 443 may be open to
 * anyone (Caddy's gate decides who gets further); on a prod stack only when keel:https says who may
 * reach it (allowedCidrs) or that anyone may (public: true).
 */
export function firewallProblems(rules: readonly FirewallRule[] | undefined, moving?: { sshPort: string; sshPortNext: string }, https?: { config: StackHttps | undefined; prod: boolean }): string[] {
  const problems: string[] = [];
  const tcpPorts = new Set<string>();
  const tcpSources = new Set<string>();
  let webRules = false;
  for (const [i, rule] of (rules ?? []).entries()) {
    if (rule.direction !== "in") continue;
    const at = `rules[${i}]`;
    if (rule.protocol === "icmp") continue;
    if (rule.protocol !== "tcp") {
      problems.push(`${at} opens inbound ${String(rule.protocol).toUpperCase()}${rule.port ? ` port ${rule.port}` : ""}: only TCP on the SSH port and ICMP may be open. fix: remove the rule`);
      continue;
    }
    const port = String(rule.port ?? "any");
    if (HTTPS_PORTS.includes(port)) {
      if (https?.config !== undefined) {
        webRules = true;
        continue;
      }
      problems.push(`${at} opens inbound TCP port ${port}, but the stack file does not set keel:https: only keel:https opens 80 and 443. fix: remove the rule, or set keel:https in Pulumi.<stack>.yaml (docs/HTTPS.md)`);
      continue;
    }
    if (!/^[0-9]+$/.test(port)) {
      problems.push(`${at} opens inbound TCP port "${port}": only the single SSH port may be open (a range or "any" opens more). fix: set keel:sshPort and let keel render the rule`);
    }
    tcpPorts.add(port);
    tcpSources.add(JSON.stringify([...(rule.sourceIps ?? [])].sort()));
    for (const cidr of (rule.sourceIps ?? []).filter(isAnywhere)) {
      problems.push(`${at} opens inbound TCP port ${port} to ${cidr} (the whole internet): SSH must be limited to the admin CIDRs. fix: pulumi config set --path 'keel:allowedSshCidrs[0]' <your address>/32`);
    }
  }
  const asMoving = tcpPorts.size === 2 && moving !== undefined && tcpPorts.has(moving.sshPort) && tcpPorts.has(moving.sshPortNext) && tcpSources.size === 1;
  if (tcpPorts.size > 1 && !asMoving) {
    problems.push(`inbound TCP is open on ${tcpPorts.size} ports (${[...tcpPorts].sort().join(", ")}): only the SSH port may be open (and, while it moves, keel:sshPortNext from the same sources; with keel:https, 80 and 443). fix: remove the other rules; the engine is reached through SSH or keel:https's Caddy, never directly`);
  }
  if (webRules && https?.prod) {
    const cidrs = https.config?.allowedCidrs;
    const gated = Array.isArray(cidrs) && cidrs.length > 0 && !cidrs.some((c) => typeof c !== "string" || isAnywhere(c));
    if (!gated && https.config?.public !== true) {
      problems.push(`a prod stack opens 80 and 443 (keel:https) without saying who may reach the engine: set keel:https.allowedCidrs, or keel:https.public: true to open it to anyone on purpose. fix: pulumi config set --path 'keel:https.allowedCidrs[0]' <CIDR>, or pulumi config set --path 'keel:https.public' true`);
    }
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------
// Servers.

/** Server problems that hold for every stack. */
export function serverProblems(props: Record<string, unknown>, opts: { ignoreChanges?: string[] }): { firewall: string[]; ignoreChanges: string[] } {
  const firewall: string[] = [];
  // Only the array's length is read: the IDs themselves are unknown during a first preview.
  const ids = props.firewallIds;
  if (!Array.isArray(ids) || ids.length === 0) {
    firewall.push("the server has no firewallIds: it would boot with every port open until a firewall is attached. fix: attach the firewall at creation through firewallIds (a FirewallAttachment comes too late)");
  }
  const ignoreChanges: string[] = [];
  const missing = ["userData", "sshKeys"].filter((p) => !(opts.ignoreChanges ?? []).includes(p));
  if (missing.length) {
    ignoreChanges.push(`the server's ignoreChanges lacks ${missing.join(" and ")}: Hetzner replaces a server (and its disk, with the database) whenever ${missing.join(" or ")} change. fix: ignoreChanges: ["userData", "sshKeys"]; later changes reach the host through keel's converge steps`);
  }
  return { firewall, ignoreChanges };
}

/** Problems with a server of a production stack: it must be protected everywhere and backed up. */
export function prodServerProblems(props: Record<string, unknown>, opts: { protect?: boolean }): string[] {
  const problems: string[] = [];
  if (opts.protect !== true) problems.push("Pulumi protect is off");
  if (props.deleteProtection !== true) problems.push("deleteProtection is off at Hetzner");
  if (props.rebuildProtection !== true) problems.push("rebuildProtection is off at Hetzner");
  if (props.backups !== true) problems.push("Hetzner backups are off");
  return problems.length
    ? [`production server: ${problems.join("; ")} (a destroy, a replacement or a lost disk would take the database with it). fix: pulumi config set keel:protect true and pulumi config set keel:hetznerBackups true`]
    : [];
}

// ---------------------------------------------------------------------------------------------
// Config: no secret in plaintext in the stack file.

/** Keys whose every value is a secret, whatever it looks like. */
export const SECRET_CONFIG_KEYS = ["keel:secretEnv", "hcloud:token"];
/** A key (or nested key) with one of these in its name holds a secret. */
const SECRET_NAME = /token|passw(or)?d|passphrase|secret|private[-_]?key|api[-_]?key|credential/i;
/** Values that are secrets whatever their key is called. */
const SECRET_VALUES: Array<[RegExp, string]> = [
  [/-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/, "a private key"],
  // 64 letters and digits; a lowercase-hex SHA-256 (a pinned checksum) is not one.
  [/^(?![0-9a-f]{64}$)[A-Za-z0-9]{64}$/, "a Hetzner API token"],
  [/^pul-[0-9a-f]{40}$/, "a Pulumi access token"],
  [/^(gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})$/, "a GitHub token"],
];

function isSecure(value: unknown): boolean {
  return value !== null && typeof value === "object" && !Array.isArray(value) && typeof (value as { secure?: unknown }).secure === "string";
}

/**
 * Plaintext secrets in a stack file's `config:` map (as written by the CLI: a secret is
 * `{secure: v1:…}`, at the top or, with `--path`, at any leaf). Returns one message per leak.
 */
export function plaintextSecretProblems(config: Record<string, unknown>): string[] {
  const problems: string[] = [];
  const visit = (top: string, path: string, names: string[], value: unknown): void => {
    if (isSecure(value)) return;
    if (Array.isArray(value)) return value.forEach((v, i) => visit(top, `${path}[${i}]`, names, v));
    if (value !== null && typeof value === "object") {
      for (const [k, v] of Object.entries(value)) visit(top, `${path}.${k}`, [...names, k], v);
      return;
    }
    const fix = path === top ? `pulumi config set --secret ${top} <value>` : `pulumi config set --secret --path '${path}' <value>`;
    const looksLike = typeof value === "string" ? SECRET_VALUES.find(([re]) => re.test(value))?.[1] : undefined;
    const why = SECRET_CONFIG_KEYS.includes(top)
      ? `${top} only ever holds secrets`
      : names.some((n) => SECRET_NAME.test(n))
        ? "its name says it holds a secret"
        : looksLike && `it looks like ${looksLike}`;
    if (why) problems.push(`${path} is plaintext in the stack file, but ${why} (value not shown). fix: ${fix}, and rotate the secret if the file was ever committed`);
  };
  for (const [key, value] of Object.entries(config)) visit(key, key, [key.slice(key.indexOf(":") + 1)], value);
  return problems;
}

/** The directory holding Pulumi.yaml, searched upwards from `from`. */
export function findProjectDir(from: string): string | undefined {
  for (let dir = from; ; dir = dirname(dir)) {
    if (existsSync(join(dir, "Pulumi.yaml"))) return dir;
    if (dirname(dir) === dir) return undefined;
  }
}

/**
 * Reads the stack file's config map for `stack` of `project`, or explains why it cannot.
 * A policy pack sees the stack config only decrypted (PULUMI_CONFIG) and without the list of secret
 * keys, so the stack file in the repository is the one place that tells plaintext from secret.
 */
export function readStackConfig(projectDir: string | undefined, project: string, stack: string): { config: Record<string, unknown> } | { error: string } {
  if (!projectDir || !existsSync(join(projectDir, "Pulumi.yaml"))) return { error: `no Pulumi.yaml in ${projectDir ?? "the policy pack's directory or above"}` };
  const declared = (parseYaml(readFileSync(join(projectDir, "Pulumi.yaml"), "utf8")) as { name?: string } | null)?.name;
  if (declared !== project) return { error: `the policy pack belongs to project ${String(declared)}, not ${project}` };
  const file = join(projectDir, `Pulumi.${stack}.yaml`);
  if (!existsSync(file)) return { error: `no stack file Pulumi.${stack}.yaml in ${projectDir}` };
  const parsed = (parseYaml(readFileSync(file, "utf8")) ?? {}) as { config?: Record<string, unknown> };
  return { config: parsed.config ?? {} };
}

// ---------------------------------------------------------------------------------------------
// The policies.

function forType(type: string, check: (args: ResourceValidationArgs) => string[]) {
  return (args: ResourceValidationArgs, report: ReportViolation): void => {
    if (args.type !== type) return;
    for (const problem of check(args)) report(problem);
  };
}

/**
 * keel:sshPort (default 22) and keel:sshPortNext from the stack file, as port strings; undefined
 * when sshPortNext is unset or the file unreadable. Config that reaches the stack another way (an
 * ESC environment) is not seen here, so such a stack's move is refused by the pack.
 */
export function stackSshMove(projectDir: string | undefined, urn: string): { sshPort: string; sshPortNext: string } | undefined {
  const { stack, project } = parseUrn(urn);
  const read = readStackConfig(projectDir, project, stack);
  if ("error" in read) return undefined;
  const port = (value: unknown) => (typeof value === "number" || (typeof value === "string" && /^[0-9]+$/.test(value)) ? String(value) : undefined);
  const next = port(read.config["keel:sshPortNext"]);
  const current = read.config["keel:sshPort"] === undefined ? "22" : port(read.config["keel:sshPort"]);
  return next && current ? { sshPort: current, sshPortNext: next } : undefined;
}

/**
 * keel:https from the stack file, or undefined when it is unset or the file unreadable (then the pack
 * refuses 80 and 443: config that reaches the stack another way, an ESC environment, is not seen here).
 */
export function stackHttps(projectDir: string | undefined, urn: string): StackHttps | undefined {
  const { stack, project } = parseUrn(urn);
  const read = readStackConfig(projectDir, project, stack);
  if ("error" in read) return undefined;
  let value = read.config["keel:https"];
  // Set without --path, the stack file holds the object as a JSON string.
  if (typeof value === "string") {
    try {
      value = JSON.parse(value);
    } catch {
      return undefined;
    }
  }
  return value !== null && typeof value === "object" && !Array.isArray(value) ? (value as StackHttps) : undefined;
}

/** `projectDir` is where Pulumi.yaml and the stack files live; by default, found above this pack. */
export function firewallSshOnly(projectDir: string | undefined = findProjectDir(__dirname)): ResourceValidationPolicy {
  return {
    name: "hcloud-firewall-ssh-only",
    description: "Inbound firewall rules allow only TCP on one port (SSH; two while it moves) from limited CIDRs, ICMP, and with keel:https TCP 80 and 443 (on prod only with allowedCidrs or public: true).",
    enforcementLevel: "mandatory",
    validateResource: forType(FIREWALL, (args) =>
      firewallProblems(args.props.rules as FirewallRule[] | undefined, stackSshMove(projectDir, args.urn), {
        config: stackHttps(projectDir, args.urn),
        prod: PROD_STACKS.includes(parseUrn(args.urn).stack),
      }),
    ),
  };
}

export const serverFirewallAtCreation: ResourceValidationPolicy = {
  name: "hcloud-server-firewall-at-creation",
  description: "Every server is attached to a firewall at creation (non-empty firewallIds).",
  enforcementLevel: "mandatory",
  validateResource: forType(SERVER, (args) => serverProblems(args.props, args.opts).firewall),
};

export const serverIgnoresForceNewInputs: ResourceValidationPolicy = {
  name: "hcloud-server-ignore-changes",
  description: "Every server ignores changes to userData and sshKeys, which would replace it.",
  enforcementLevel: "mandatory",
  validateResource: forType(SERVER, (args) => serverProblems(args.props, args.opts).ignoreChanges),
};

export const prodServerProtected: ResourceValidationPolicy = {
  name: "hcloud-prod-server-protected",
  description: "Production servers have Pulumi protect, Hetzner delete and rebuild protection, and backups.",
  enforcementLevel: "mandatory",
  validateResource: forType(SERVER, (args) => (PROD_STACKS.includes(parseUrn(args.urn).stack) ? prodServerProblems(args.props, args.opts) : [])),
};

/**
 * A deploy key keel registers (keel:githubDeployKey) reads the repository, never writes it: the
 * server holds its private half, and a write key would let a taken-over engine push to the code it
 * runs. `readOnly` must be set to true, not left to the provider's default.
 */
export const githubDeployKeyReadOnly: ResourceValidationPolicy = {
  name: "github-deploy-key-read-only",
  description: "Every GitHub deploy key is registered read-only (readOnly: true).",
  enforcementLevel: "mandatory",
  validateResource: forType(GITHUB_DEPLOY_KEY, (args) =>
    args.props.readOnly === true
      ? []
      : [`the GitHub deploy key has readOnly ${JSON.stringify(args.props.readOnly ?? null)}: the server would hold a key that can push to the repository it deploys. fix: readOnly: true (components/githubDeployKey.ts)`],
  ),
};

/** `projectDir` is where Pulumi.yaml and the stack files live; by default, found above this pack. */
export function noPlaintextSecretConfig(projectDir: string | undefined = findProjectDir(__dirname)): StackValidationPolicy {
  return {
    name: "config-no-plaintext-secrets",
    description: "No secret is stored in plaintext in the stack's config file.",
    enforcementLevel: "mandatory",
    validateStack: (args, report) => {
      const urn = args.resources[0]?.urn;
      if (!urn) return args.notApplicable("the stack has no resources");
      const { stack, project } = parseUrn(urn);
      const read = readStackConfig(projectDir, project, stack);
      if ("error" in read) {
        report(`cannot check the stack config for plaintext secrets: ${read.error}. fix: run the pack from keel's repository with the stack file checked in`);
        return;
      }
      for (const problem of plaintextSecretProblems(read.config)) report(problem);
    },
  };
}

export function keelPolicies(projectDir?: string): Array<ResourceValidationPolicy | StackValidationPolicy> {
  return [firewallSshOnly(projectDir), serverFirewallAtCreation, serverIgnoresForceNewInputs, prodServerProtected, githubDeployKeyReadOnly, noPlaintextSecretConfig(projectDir)];
}
