// docs/LIFECYCLE.md's table, checked against the program: every config key has a row, and each
// row's "steps that run again" are the steps whose triggers change when that key changes (a step's
// content hash, or the hash of the secret it gets: plan/steps.ts), or "refused" where
// components/connectionGuard.ts refuses the change on a stack whose server exists.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { connectionChangeProblems } from "../../components/connectionGuard";
import { ConfigError, parseConfig, type KeelConfig } from "../../config";
import { buildHostPlan } from "../../plan/hostPlan";
import { IMAGE_FACTS, type Image } from "../../images";
import { hostPaths } from "../../plan/layout";
import type { Step } from "../../plan/types";
import { OTHER_KEY, REPO, stackConfig } from "../support/stack";

const DOC = readFileSync(join(REPO, "docs", "LIFECYCLE.md"), "utf8");
const CONFIG_DOC = readFileSync(join(REPO, "docs", "CONFIG.md"), "utf8");

/** `| \`key\` | text | steps |` rows of the table. */
function rows(): Map<string, string> {
  const found = new Map<string, string>();
  for (const m of DOC.matchAll(/^\| `([A-Za-z0-9]+)` \| .* \| ([^|]+) \|$/gm)) found.set(m[1], m[2].trim());
  return found;
}

/** A value other than the prod stack's for each key (secrets: another secret value). */
const OTHER: Record<string, string> = {
  location: "nbg1",
  serverType: "cx33",
  image: "debian-12",
  ipv4: "false",
  hetznerBackups: "false",
  githubDeployKey: "true",
  protect: "false",
  timezone: "Europe/Berlin",
  minFreeDiskGiB: "5",
  adminKeys: JSON.stringify(["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINpzgnwZh5ywx8tiek0lsVZw1cOAxPtCo80isgK9oh64 alice@ops-laptop", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGNqiadKES6CIpKBM0w+huUkiQpWdXbQKHb47KM5JOeQ bob"]),
  retiredKeys: JSON.stringify([OTHER_KEY, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOy9+Iq5f53dB+js9HW+5YQK0uGYewGiAtaOxLB7VdPw carol"]),
  sshPort: "2222",
  sshPortNext: "2222",
  allowedSshCidrs: JSON.stringify(["198.51.100.0/24"]),
  deployUser: "ops",
  appName: "trader",
  repoUrl: "git@github.com:acme/other.git",
  repoRef: "1111111111111111111111111111111111111111",
  gitKnownHosts: JSON.stringify(["github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDifferentPinnedGitHostKeyForLifecycle000000"]),
  pythonVersion: "3.11",
  requirementsFile: "requirements-prod.txt",
  startCommand: "python -m other",
  settings: JSON.stringify({ heartbeatSeconds: 7 }),
  secretEnv: JSON.stringify({ ENGINE_API_KEY: "another-value", ENGINE_DB_KEY: "another-db-key" }),
  dbFile: "main.db",
  migrateFrom: "./old/engine.db",
  migrateFallbackDir: "./old/backups",
  migrateAcceptFallback: "a".repeat(64),
  backupSchedule: "*-*-* 04:00:00",
  startTimeoutMinutes: "60",
  backupRetention: "9",
  healthSchedule: "*:0/10",
  healthBackupMaxAgeHours: "30",
  healthDiskWarnPercent: "70",
  healthDiskCritPercent: "97",
  alertWebhookUrl: "https://hooks.example.net/keel-other",
  https: JSON.stringify({ domains: ["app.example.com"], upstream: "127.0.0.1:8000", acmeEmail: "ops@example.com", allowedCidrs: ["203.0.113.0/24"] }),
  auditLog: "audit.log",
};
/** Keys that take another key with them to be valid at all (the base gets it too). */
const NEEDS: Record<string, Record<string, string>> = {
  ipv4: { "keel:repoUrl": "file:///srv/engine.git", "keel:gitKnownHosts": "[]" },
  migrateFallbackDir: { "keel:migrateFrom": "./old/engine.db" },
  githubDeployKey: { "github:token": "github_pat_test-token-not-real" },
  migrateAcceptFallback: { "keel:migrateFrom": "./old/engine.db", "keel:migrateFallbackDir": "./old/backups" },
};
const SECRET = new Set(["secretEnv", "alertWebhookUrl"]);
const SECRET_BUNDLE: Record<string, string> = { secretEnv: "envFile", alertWebhookUrl: "alertWebhook" };

function config(extra: Record<string, string>): KeelConfig {
  const { raw, secretKeys } = stackConfig("prod");
  return parseConfig({ ...raw, ...extra }, (k) => secretKeys.includes(k) || k === "keel:alertWebhookUrl" || k === "github:token");
}

/** Keys whose new value takes another key's new value along (keel:pythonVersion is the image's Python). */
const ALONG: Record<string, Record<string, string>> = {
  image: { "keel:pythonVersion": IMAGE_FACTS[OTHER.image as Image].python },
};
/** Keys the config itself refuses to change alone: keel:pythonVersion must be the image's Python. */
const CONFIG_REFUSED = new Set(["pythonVersion"]);

/** The prod stack's config before and after `key` takes its OTHER value (with what it NEEDS in both). */
function change(key: string): { base: KeelConfig; changed: KeelConfig } {
  return { base: config(NEEDS[key] ?? {}), changed: config({ ...(NEEDS[key] ?? {}), [`keel:${key}`]: OTHER[key], ...(ALONG[key] ?? {}) }) };
}

/** Steps of `after` whose content hash differs from `before`'s step of that name, or that are new. */
function rerun(before: readonly Step[], after: readonly Step[]): string[] {
  const was = new Map(before.map((s) => [s.name, s.hash]));
  return after.filter((s) => was.get(s.name) !== s.hash).map((s) => s.name);
}

describe("docs/LIFECYCLE.md", () => {
  const table = rows();

  it("has one row for every key docs/CONFIG.md documents", () => {
    const keys = [...CONFIG_DOC.matchAll(/^\| `([A-Za-z0-9]+)` \|/gm)].map((m) => m[1]);
    expect(keys.length).toBeGreaterThan(30);
    expect([...table.keys()].sort()).toEqual([...keys].sort());
    expect(Object.keys(OTHER).sort()).toEqual([...keys].sort());
  });

  for (const [key, cell] of rows()) {
    it(`${key}: ${cell}`, () => {
      if (CONFIG_REFUSED.has(key)) {
        expect(cell).toBe("refused");
        expect(() => change(key)).toThrow(ConfigError);
        expect(() => change(key)).toThrow(new RegExp(`keel:${key}: `));
        return;
      }
      const { base, changed } = change(key);
      if (cell === "refused") {
        const last = { sshPort: base.sshPort, sshPorts: [base.sshPort], deployUser: base.deployUser, image: base.image, location: base.location, paths: hostPaths(base) };
        expect(connectionChangeProblems(base, last)).toEqual([]);
        expect(connectionChangeProblems(changed, last).length, "refused on a stack whose server exists").toBeGreaterThan(0);
        return;
      }
      const steps = SECRET.has(key)
        ? buildHostPlan(changed).steps.filter((s) => s.kind !== "local" && s.kind !== "upload" && "secret" in s && s.secret?.name === SECRET_BUNDLE[key]).map((s) => s.name)
        : rerun(buildHostPlan(base).steps, buildHostPlan(changed).steps);
      if (cell === "every remote step") {
        // The address the steps connect to: IPv4 when there is one (components/server.ts address).
        expect(key).toBe("ipv4");
        expect(steps).toEqual([]);
        return;
      }
      expect(steps).toEqual(cell === "none" ? [] : [...cell.matchAll(/`([a-z0-9-]+)`/g)].map((m) => m[1]));
    });
  }
});

// Issue 12 #6: a changed setting previews as `~` update, not `+-` replace. pulumi-command v1.2.1
// replaces a Command when its `triggers` change (provider/pkg/provider/common/inputs.go,
// replaceOnChanges) and updates it when any other input changes, running `update`, else `create`
// (provider/pkg/provider/remote/commandController.go Update). A remote step's triggers hold the
// unseen part of its inputs (step.unseenHash: the tools it runs), the server's id and its secret's
// hash (components/hostSteps.ts); its command and stdin are plain inputs.
describe("a config change runs the steps it changes as updates", () => {
  for (const key of Object.keys(OTHER).filter((k) => !CONFIG_REFUSED.has(k))) {
    it(key, () => {
      const { base, changed } = change(key);
      const before = buildHostPlan(base).steps;
      const after = buildHostPlan(changed).steps;
      const was = new Map(before.map((s) => [s.name, s]));
      for (const s of after) {
        const old = was.get(s.name);
        if (!old || old.hash === s.hash || s.kind === "local" || s.kind === "upload" || old.kind === "local" || old.kind === "upload") continue;
        // No trigger of its own changes, and the engine sees what did: the command or the stdin.
        expect(s.unseenHash, s.name).toBe(old.unseenHash);
        expect(s.command !== old.command || s.stdin !== old.stdin || s.stdinFrom !== old.stdinFrom || s.secret !== undefined, s.name).toBe(true);
      }
    });
  }
});
