import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseConfig, type KeelConfig } from "../../config";
import { firstBootPackages } from "../../plan/hardening";
import { buildHostPlan } from "../../plan/hostPlan";
import { renderEnvFile } from "../../plan/secrets";
import { REDACTED, readStackFile } from "../../plan/stackFile";
import { scriptStep, toolStep } from "../../plan/steps";
import { OTHER_KEY, stackConfig } from "../support/stack";

function prod(overrides: Record<string, string> = {}): KeelConfig {
  const { raw, secretKeys } = stackConfig("prod");
  return parseConfig({ ...raw, ...overrides }, (k) => secretKeys.includes(k));
}

function hashes(cfg: KeelConfig): Record<string, string> {
  return Object.fromEntries(buildHostPlan(cfg).steps.map((s) => [s.name, s.hash]));
}

function changedSteps(a: KeelConfig, b: KeelConfig): string[] {
  const ha = hashes(a);
  const hb = hashes(b);
  return Object.keys({ ...ha, ...hb }).filter((k) => ha[k] !== hb[k]);
}

describe("host plan", () => {
  it("starts with the readiness gate, then keel's tools and packages, with unique kebab-case step names", () => {
    const steps = buildHostPlan(prod()).steps;
    expect(steps.slice(0, 4).map((s) => s.name)).toEqual(["ready", "tools", "packages", "layout"]);
    const names = steps.map((s) => s.name);
    expect(new Set(names).size).toBe(names.length);
    for (const n of names) expect(n).toMatch(/^[a-z][a-z0-9-]*$/);
  });

  it("installs the first-boot packages a server lacks before any hardening step uses them", () => {
    const steps = buildHostPlan(prod()).steps;
    const packages = steps.find((s) => s.name === "packages")!;
    expect(packages.command).toBe(`sudo /usr/local/sbin/keel-packages ${firstBootPackages(prod().image).join(" ")}`);
    const firstHarden = steps.findIndex((s) => s.name.startsWith("harden-"));
    expect(firstHarden).toBeGreaterThan(steps.indexOf(packages));
    expect(buildHostPlan(prod()).files.find((f) => f.path === "/usr/local/sbin/keel-packages")).toMatchObject({ owner: "root", mode: "0755" });
  });

  it("is deterministic: the same config gives the same bytes and hashes", () => {
    expect(JSON.stringify(buildHostPlan(prod()))).toBe(JSON.stringify(buildHostPlan(prod())));
  });

  it("re-runs only the admin-keys step when an admin key is added", () => {
    const more = prod({ "keel:adminKeys": JSON.stringify([...prod().adminKeys, OTHER_KEY]), "keel:retiredKeys": "[]" });
    expect(changedSteps(prod(), more)).toEqual(["admin-keys"]);
    const keys = buildHostPlan(more).files.find((f) => f.path === "/home/deploy/.ssh/authorized_keys")!;
    expect(keys).toMatchObject({ owner: "deploy", group: "deploy", mode: "0600" });
    expect(keys.content.trim().split("\n")).toEqual(more.adminKeys);
  });

  it("drops a retired key from authorized_keys: the file holds exactly the admin keys", () => {
    const content = buildHostPlan(prod()).files.find((f) => f.path.endsWith("authorized_keys"))!.content;
    expect(content).not.toContain(OTHER_KEY.split(" ")[1]);
  });

  it("changes no step hash when only a secret value changes (the secret trigger is separate)", () => {
    const a = prod({ "keel:secretEnv": JSON.stringify({ ENGINE_API_KEY: "one" }) });
    const b = prod({ "keel:secretEnv": JSON.stringify({ ENGINE_API_KEY: "two" }) });
    expect(changedSteps(a, b)).toEqual([]);
  });

  it("never puts a secret in a command, and secret steps carry no plain stdin", () => {
    for (const step of buildHostPlan(prod()).steps) {
      expect(step.command).not.toMatch(/canary|PRIVATE KEY/);
      if (step.secret) expect(step.stdin).toBeUndefined();
    }
  });

  it("refuses step arguments that would need shell quoting", () => {
    expect(() => scriptStep("x", "x", "scripts/steps/wait-ready.sh", ["a b"])).toThrow(/argument "a b" would need shell quoting/);
    expect(() => toolStep("x", "x", "place", ["$(id)"])).toThrow(/would need shell quoting/);
  });

  it("writes the EnvironmentFile sorted, quoted and escaped for systemd", () => {
    expect(renderEnvFile({ ZED: 'say "hi"', API_KEY: "a\\b$HOME" })).toBe('API_KEY="a\\\\b$HOME"\nZED="say \\"hi\\""\n');
  });
});

describe("stack files", () => {
  it("reports encrypted values as secret and never passes their ciphertext on", () => {
    const dir = mkdtempSync(join(tmpdir(), "keel-stack-"));
    try {
      const file = join(dir, "Pulumi.test.yaml");
      writeFileSync(
        file,
        ["config:", "  hcloud:token:", "    secure: v1:abc", "  keel:secretEnv:", "    API_KEY:", "      secure: v1:def", "  keel:sshPort: 2222", "  keel:adminKeys:", "    - a", ""].join("\n"),
      );
      const { raw, secretKeys } = readStackFile(file);
      expect(secretKeys.sort()).toEqual(["hcloud:token", "keel:secretEnv"]);
      expect(raw).toEqual({ "hcloud:token": REDACTED, "keel:secretEnv": JSON.stringify({ API_KEY: REDACTED }), "keel:sshPort": "2222", "keel:adminKeys": '["a"]' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
