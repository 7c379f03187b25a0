import { describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { parseConfig, type KeelConfig } from "../../config";
import {
  ALLOWED_IPV4,
  ALLOWED_IPV6,
  DENIED_IPV4,
  DENIED_IPV6,
  GATE_FAILURE_STATUS,
  configFile,
  engineSteps,
  execStart,
  renderConfigYaml,
  renderUnit,
  secretsChangedCommand,
  unitFile,
} from "../../plan/engine";
import { buildHostPlan } from "../../plan/hostPlan";
import type { Bundle, Step } from "../../plan/types";
import { CANARY, stackConfig } from "../support/stack";

/** The prod stack's config, with keys overridden as `pulumi config set` would. */
function config(overrides: Record<string, string> = {}, secretEnv?: Record<string, string>): KeelConfig {
  const { raw, secretKeys } = stackConfig("prod");
  if (secretEnv) raw["keel:secretEnv"] = JSON.stringify(secretEnv);
  return parseConfig({ ...raw, ...overrides }, (k) => secretKeys.includes(k));
}

function hashes(cfg: KeelConfig): Map<string, string> {
  return new Map(buildHostPlan(cfg).steps.map((s) => [s.name, s.hash]));
}

/** Names of the steps whose hash differs between two configs (those Pulumi would re-run). */
function rerun(a: KeelConfig, b: KeelConfig): string[] {
  const before = hashes(a);
  return [...hashes(b)].filter(([name, hash]) => before.get(name) !== hash).map(([name]) => name);
}

function unitLines(cfg: KeelConfig, key: string): string[] {
  return renderUnit(cfg)
    .split("\n")
    .filter((l) => l.startsWith(`${key}=`))
    .map((l) => l.slice(key.length + 1));
}

const OTHER_COMMIT = "0123456789abcdef0123456789abcdef01234567";

describe("engine unit file", () => {
  const cfg = config();

  it("runs the engine from the venv, in the checkout, as its own user, with the env file", () => {
    expect(unitLines(cfg, "User")).toEqual(["engine"]);
    expect(unitLines(cfg, "Group")).toEqual(["engine"]);
    expect(unitLines(cfg, "WorkingDirectory")).toEqual(["/opt/engine/app"]);
    expect(unitLines(cfg, "ExecStart")).toEqual(["/opt/engine/venv/bin/python -m engine"]);
    expect(unitLines(cfg, "EnvironmentFile")).toEqual(["/etc/engine/engine.env"]);
    expect(unitLines(cfg, "Environment")).toEqual([
      "KEEL_CONFIG=%d/config.yaml",
      "KEEL_DB=/var/lib/engine/engine.db",
      "KEEL_STATE_DIR=/var/lib/engine",
      "PYTHONUNBUFFERED=1",
      "PYTHONDONTWRITEBYTECODE=1",
    ]);
    expect(unitLines(cfg, "LoadCredential")).toEqual(["config.yaml:/etc/engine/config.yaml"]);
    expect(unitLines(cfg, "StandardOutput")).toEqual(["journal"]);
    expect(unitLines(cfg, "StandardError")).toEqual(["journal"]);
  });

  it("restarts a crash after a short delay, within a start limit, and never a failed startup gate", () => {
    expect(unitLines(cfg, "Restart")).toEqual(["on-failure"]);
    expect(unitLines(cfg, "RestartSec")).toEqual(["5"]);
    expect(unitLines(cfg, "StartLimitIntervalSec")).toEqual(["300"]);
    expect(unitLines(cfg, "StartLimitBurst")).toEqual(["5"]);
    expect(unitLines(cfg, "RestartPreventExitStatus")).toEqual([String(GATE_FAILURE_STATUS)]);
    expect(GATE_FAILURE_STATUS).toBe(78);
    // The start limit is a [Unit] setting since systemd 230.
    const unitSection = renderUnit(cfg).split("[Service]")[0];
    expect(unitSection).toContain("StartLimitBurst=5");
  });

  it("writes only the state directory and reaches only the network", () => {
    // Not the backups: they are the backup user's (docs/DATABASE.md "The backup identity").
    expect(unitLines(cfg, "ReadWritePaths")).toEqual(["/var/lib/engine"]);
    expect(unitLines(cfg, "ProtectSystem")).toEqual(["strict"]);
    expect(unitLines(cfg, "RestrictAddressFamilies")).toEqual(["AF_INET AF_INET6"]);
    expect(unitLines(cfg, "CapabilityBoundingSet")).toEqual([""]);
    expect(unitLines(cfg, "IPAddressDeny")).toEqual(["any"]);
    expect(renderUnit(cfg)).not.toMatch(/^(User|Group)=root$/m);
  });

  it("is a plain unit, not a template, so systemd runs one engine only", () => {
    expect(unitFile(cfg)).toMatchObject({ path: "/etc/systemd/system/engine.service", owner: "root", group: "root", mode: "0644" });
    expect(unitFile(cfg).path).not.toContain("@");
  });

  it("follows keel:appName and keel:dbFile", () => {
    const other = config({ "keel:appName": "trader", "keel:dbFile": "book.sqlite" });
    expect(unitLines(other, "User")).toEqual(["trader"]);
    expect(unitLines(other, "ReadWritePaths")).toEqual(["/var/lib/trader"]);
    expect(unitLines(other, "Environment")).toContain("KEEL_DB=/var/lib/trader/book.sqlite");
    expect(unitFile(other).path).toBe("/etc/systemd/system/trader.service");
  });

  it("resolves the start command's program in the venv's bin/ and refuses a path", () => {
    expect(execStart(config({ "keel:startCommand": "gunicorn engine.app:app --workers=1" }))).toBe(
      "/opt/engine/venv/bin/gunicorn engine.app:app --workers=1",
    );
    expect(() => execStart(config({ "keel:startCommand": "/usr/bin/python3 -m engine" }))).toThrow(
      /^keel:startCommand: expected a program in the venv's bin\/ .*found "\/usr\/bin\/python3 -m engine"\. fix: pulumi config set keel:startCommand/,
    );
  });

  it("allows every IP address except link-local and multicast, exactly", () => {
    const v4 = cover(ALLOWED_IPV4, DENIED_IPV4, 32);
    const v6 = cover(ALLOWED_IPV6, DENIED_IPV6, 128);
    expect(v4).toEqual({ total: 1n << 32n, overlaps: 0 });
    expect(v6).toEqual({ total: 1n << 128n, overlaps: 0 });
    expect(unitLines(cfg, "IPAddressAllow")).toEqual(["localhost", ALLOWED_IPV4.join(" "), ALLOWED_IPV6.join(" ")]);
    expect(ALLOWED_IPV4.some((p) => contains(p, "169.254.169.254", 32))).toBe(false);
  });
});

/** Sums the sizes of the prefixes and counts overlapping pairs: an exact cover sums to 2^bits with none. */
function cover(allowed: string[], denied: string[], bits: number): { total: bigint; overlaps: number } {
  const ranges = [...allowed, ...denied].map((p) => range(p, bits)).sort((a, b) => (a[0] < b[0] ? -1 : 1));
  let overlaps = 0;
  for (let i = 1; i < ranges.length; i++) if (ranges[i][0] <= ranges[i - 1][1]) overlaps++;
  return { total: ranges.reduce((sum, [lo, hi]) => sum + hi - lo + 1n, 0n), overlaps };
}

function range(prefix: string, bits: number): [bigint, bigint] {
  const [addr, len] = prefix.split("/");
  const size = 1n << BigInt(bits - Number(len));
  const lo = (toBigInt(addr, bits) / size) * size;
  return [lo, lo + size - 1n];
}

function contains(prefix: string, addr: string, bits: number): boolean {
  const [lo, hi] = range(prefix, bits);
  const a = toBigInt(addr, bits);
  return a >= lo && a <= hi;
}

function toBigInt(addr: string, bits: number): bigint {
  if (bits === 32) return addr.split(".").reduce((n, part) => (n << 8n) + BigInt(part), 0n);
  const [head, tail = ""] = addr.split("::");
  const h = head ? head.split(":") : [];
  const t = tail ? tail.split(":") : [];
  const groups = [...h, ...Array(8 - h.length - t.length).fill("0"), ...t];
  return groups.reduce((n, g) => (n << 16n) + BigInt(parseInt(g, 16)), 0n);
}

describe("engine config.yaml", () => {
  const cfg = config();

  it("is keel:settings as YAML, root:engine 0640, with a header saying where secrets are", () => {
    const file = configFile(cfg);
    expect(file).toMatchObject({ path: "/etc/engine/config.yaml", owner: "root", group: "engine", mode: "0640" });
    expect(parseYaml(file.content)).toEqual({ session: { mode: "live", maxOpenPositions: 3 }, logLevel: "INFO" });
    expect(file.content).toMatch(/^# \/etc\/engine\/config\.yaml: the non-secret settings of engine/);
    expect(file.content).toContain("Secrets are in /etc/engine/engine.env, never here.");
  });

  it("gives equal bytes for equal settings, whatever their key order", () => {
    const a = config({ "keel:settings": JSON.stringify({ b: { y: 1, x: 2 }, a: "one" }) });
    const b = config({ "keel:settings": JSON.stringify({ a: "one", b: { x: 2, y: 1 } }) });
    expect(renderConfigYaml(a)).toBe(renderConfigYaml(b));
    expect(renderConfigYaml(a)).toMatch(/\na: one\nb:\n {2}x: 2\n {2}y: 1\n$/);
  });

  it("keeps every string on one line", () => {
    const text = renderConfigYaml(config({ "keel:settings": JSON.stringify({ note: "two\nlines", long: "x".repeat(200) }) }));
    expect(text).toContain('note: "two\\nlines"');
    expect(text).toContain(`long: ${"x".repeat(200)}\n`);
  });
});

describe("engine steps", () => {
  const cfg = config();
  const steps = engineSteps(cfg);
  const byName = (name: string): Step => steps.find((s) => s.name === name)!;

  it("come after the secret steps, in deploy order", () => {
    const names = buildHostPlan(cfg).steps.map((s) => s.name);
    // The database's steps sit between the unit and the start (plan/database.ts); others may follow.
    expect(names.slice(names.indexOf("secrets") + 1).filter((n) => n.startsWith("engine-"))).toEqual([
      "engine-preflight",
      "engine-source",
      "engine-venv",
      "engine-config",
      "engine-unit",
      "engine-start",
    ]);
    expect(names.indexOf("engine-preflight")).toBe(names.indexOf("secrets") + 1);
  });

  // A restart waits for the stop (post-session backup) and the start (pre-session backup): the steps
  // that restart the engine wait as long, keel:startTimeoutMinutes included.
  it("give the steps that restart the engine the stop, the start timeout, the settle time and two minutes", () => {
    const plan = (c: KeelConfig) => buildHostPlan(c).steps;
    for (const c of [cfg, config({ "keel:startTimeoutMinutes": "60" })]) {
      const want = 30 + c.startTimeoutMinutes * 60 + 5 + 120;
      expect(plan(c).filter((s) => s.name === "engine-start" || s.name === "secrets").map((s) => [s.name, s.timeoutSeconds])).toEqual([
        ["secrets", want],
        ["engine-start", want],
      ]);
    }
  });

  it("run root actions only through keel's tools, and the rest as the deploy user", () => {
    // The backups' parent (/var/backups/engine itself is made later, with the backup tree).
    expect(byName("engine-preflight").command).toBe("bash -s -- 3.12 10 /var/lib/engine /var/backups");
    expect(byName("engine-source").command).toBe(
      `bash -s -- git@github.com:example-org/engine.git ${cfg.repoRef} /opt/engine/app /home/deploy/.ssh/keel_deploy_ed25519 /home/deploy/.ssh/keel_git_known_hosts`,
    );
    expect(byName("engine-venv").command).toBe(`sudo /usr/local/sbin/keel-engine-venv deploy /opt/engine/app ${cfg.repoRef} requirements.lock /opt/engine/venv 3.12`);
    expect(byName("engine-start").command).toMatch(/^sudo \/usr\/local\/sbin\/keel-engine-start unit=engine\.service unit-file=\/etc\/systemd\/system\/engine\.service unit-sha256=[0-9a-f]{64} /);
    for (const s of steps) expect(s.command).toMatch(/^(bash -s -- |sudo \/usr\/local\/sbin\/keel-)/);
  });

  it("verify the unit before keeping it, and reload systemd only when it changed", () => {
    const bundle = JSON.parse(byName("engine-unit").stdin!) as Bundle;
    expect(bundle.check).toEqual(["systemd-analyze", "verify", "/etc/systemd/system/engine.service"]);
    expect(bundle.onChange).toEqual([["systemctl", "daemon-reload"]]);
    expect(bundle.files.map((f) => f.path)).toEqual(["/etc/systemd/system/engine.service"]);
  });

  it("carry no secret: the canary is in no command or input, and secret values change no hash", () => {
    const plan = buildHostPlan(cfg);
    for (const s of plan.steps) expect(`${s.command}\n${s.stdin ?? ""}\n${s.description}`).not.toContain(CANARY);
    const otherSecrets = config({}, { ENGINE_API_KEY: "another-value", ENGINE_DB_KEY: "and-another" });
    expect(rerun(cfg, otherSecrets)).toEqual([]);
  });

  it("re-run on a new commit: source, venv (the lock file lives in the repo) and start, nothing else", () => {
    expect(rerun(cfg, config({ "keel:repoRef": OTHER_COMMIT }))).toEqual(["engine-source", "engine-venv", "engine-start"]);
  });

  it("re-run on a new lock file path: venv and start", () => {
    expect(rerun(cfg, config({ "keel:requirementsFile": "requirements/prod.txt" }))).toEqual(["engine-venv", "engine-start"]);
  });

  it("re-run on new settings: config and start", () => {
    expect(rerun(cfg, config({ "keel:settings": JSON.stringify({ logLevel: "DEBUG" }) }))).toEqual(["engine-config", "engine-start"]);
  });

  it("re-run on a new start command: unit and start", () => {
    expect(rerun(cfg, config({ "keel:startCommand": "python -m engine.main" }))).toEqual(["engine-unit", "engine-start"]);
  });

  it("re-run the preflight alone on a new disk threshold", () => {
    expect(rerun(cfg, config({ "keel:minFreeDiskGiB": "20" }))).toEqual(["engine-preflight"]);
  });

  it("re-run on a new Python pin (it comes with a new image): preflight and venv, which gate on it, and start (a new venv)", () => {
    const debian12 = config({ "keel:image": "debian-12", "keel:pythonVersion": "3.11" });
    const debian13 = config({ "keel:image": "debian-13", "keel:pythonVersion": "3.13" });
    expect(rerun(debian12, debian13).filter((name) => name.startsWith("engine-"))).toEqual(["engine-preflight", "engine-venv", "engine-start"]);
    // The Python pin is what moves them: the same image with another pin is refused by the config.
    expect(() => config({ "keel:image": "debian-12", "keel:pythonVersion": "3.13" })).toThrow(/keel:pythonVersion: keel:image debian-12 ships Python 3\.11/);
  });

  it("give the secrets step a restart that also brings back an engine its gate stopped", () => {
    expect(secretsChangedCommand(cfg)).toEqual(["/usr/local/sbin/keel-engine-start", "secrets-changed", "unit=engine.service", "settle=5"]);
    const secrets = buildHostPlan(cfg).steps.find((s) => s.name === "secrets")!;
    expect(secrets.secret!.bundle("API_KEY=\"x\"\n").onChange).toEqual([secretsChangedCommand(cfg)]);
  });

  it("take a file:/// repository as it is", () => {
    const local = config({ "keel:repoUrl": "file:///srv/engine.git" });
    expect(engineSteps(local).find((s) => s.name === "engine-source")!.command).toContain(" file:///srv/engine.git ");
  });
});
