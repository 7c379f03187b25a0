import { spawnSync } from "node:child_process";
import { chmodSync, cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseConfig, type KeelConfig } from "../../config";
import { execStart, renderUnit, unitFilePath } from "../../plan/engine";
import { REPO, stackConfig } from "../support/stack";
import { exposure, MAX_ENGINE_EXPOSURE } from "../support/units";
import { TOOLS } from "../../plan/tools";

/** The exposure `systemd-analyze security` may report for the engine's unit (issue 3). */
const MAX_EXPOSURE = MAX_ENGINE_EXPOSURE;

function config(stack: string, overrides: Record<string, string> = {}): KeelConfig {
  const { raw, secretKeys } = stackConfig(stack);
  return parseConfig({ ...raw, ...overrides }, (k) => secretKeys.includes(k));
}

function run(cmd: string, args: string[]) {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  return { code: r.status, out: r.stdout + r.stderr };
}

/**
 * `systemd-analyze verify` checks that ExecStart exists, and loads the units the unit depends on,
 * so it runs against a root holding the system's units, the rendered unit and a stand-in for the
 * venv's program (this machine has no /opt/<app>).
 */
function verifyRoot(cfg: KeelConfig, unit: string, withProgram = true): string {
  const root = mkdtempSync(join(tmpdir(), "keel-unit-"));
  cpSync("/usr/lib/systemd/system", join(root, "usr/lib/systemd/system"), { recursive: true });
  mkdirSync(dirname(join(root, unitFilePath(cfg))), { recursive: true });
  writeFileSync(join(root, unitFilePath(cfg)), unit);
  if (withProgram) {
    const program = join(root, execStart(cfg).split(" ")[0]);
    mkdirSync(dirname(program), { recursive: true });
    writeFileSync(program, "#!/bin/sh\n");
    chmodSync(program, 0o755);
  }
  return root;
}

describe.each(["prod", "staging"])("the engine unit of the %s stack, checked by systemd-analyze", (stack) => {
  const cfg = config(stack);
  const unit = renderUnit(cfg);
  const roots: string[] = [];
  let file: string;
  beforeAll(() => {
    const dir = mkdtempSync(join(tmpdir(), "keel-unit-"));
    roots.push(dir);
    file = join(dir, "engine.service");
    writeFileSync(file, unit);
  });
  afterAll(() => roots.forEach((r) => rmSync(r, { recursive: true, force: true })));

  it("verifies without a warning", () => {
    const root = verifyRoot(cfg, unit);
    roots.push(root);
    expect(run("systemd-analyze", ["verify", `--root=${root}`, "engine.service"])).toEqual({ code: 0, out: "" });
  });

  it("fails verification when the venv's program is missing (what the unit step's check catches)", () => {
    const root = verifyRoot(cfg, unit, false);
    roots.push(root);
    const r = run("systemd-analyze", ["verify", `--root=${root}`, "engine.service"]);
    expect(r.code).not.toBe(0);
    expect(r.out).toContain("Command /opt/engine/venv/bin/python is not executable");
  });

  it(`has an exposure of at most ${MAX_EXPOSURE} offline`, () => {
    // --threshold counts in tenths: the exit status alone also says "at most 1.5".
    const r = run("systemd-analyze", ["security", "--offline=true", `--threshold=${MAX_EXPOSURE * 10}`, file]);
    expect(r.code).toBe(0);
    const level = exposure(r.out);
    console.log(`systemd-analyze security --offline=true (${stack}): exposure ${level}`);
    expect(level).toBeLessThanOrEqual(MAX_EXPOSURE);
    // What is left open is what the engine needs: the network.
    const open = r.out.split("\n").filter((l) => l.startsWith("✗")).map((l) => l.split(/\s+/)[1]);
    expect(open).toEqual(expect.arrayContaining(["PrivateNetwork=", "RestrictAddressFamilies=~AF_(INET|INET6)"]));
    expect(open.length).toBeLessThanOrEqual(5);
  });

  it("would score worse without its sandbox (the measurement can fail)", () => {
    const bare = unit.split("# Sandbox:")[0] + "\n[Install]\nWantedBy=multi-user.target\n";
    const barefile = join(dirname(file), "bare.service");
    writeFileSync(barefile, bare);
    expect(exposure(run("systemd-analyze", ["security", "--offline=true", barefile]).out)).toBeGreaterThan(MAX_EXPOSURE);
  });
});

describe("keel's engine scripts", () => {
  it("are shellcheck clean", () => {
    const scripts = [join(REPO, "scripts", "steps", "engine-preflight.sh"), join(REPO, "scripts", "steps", "engine-source.sh"), join(REPO, TOOLS["engine-venv"]), join(REPO, TOOLS["engine-start"])];
    expect(run("shellcheck", scripts)).toEqual({ code: 0, out: "" });
  });
});
