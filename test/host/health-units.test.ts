// The health check's systemd units checked by the real systemd-analyze, keel's runbook scripts by
// shellcheck, and keel-health and keel-health-alert by python3.
import { spawnSync } from "node:child_process";
import { chmodSync, cpSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parseConfig, type KeelConfig } from "../../config";
import { healthUnitFiles } from "../../plan/health";
import { TOOLS, toolPath } from "../../plan/tools";
import { REPO, stackConfig } from "../support/stack";
import { exposure, MAX_HEALTH_EXPOSURE } from "../support/units";

/** The exposure `systemd-analyze security` may report for keel-health.service (root, for its checks). */
const MAX_EXPOSURE = MAX_HEALTH_EXPOSURE;

function config(stack: string): KeelConfig {
  const { raw, secretKeys } = stackConfig(stack);
  return parseConfig(raw, (k) => secretKeys.includes(k));
}

function run(cmd: string, args: string[]) {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  return { code: r.status, out: r.stdout + r.stderr };
}


const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** A root holding the system's units, the rendered units, and (unless told) the keel-health program. */
function verifyRoot(cfg: KeelConfig, withProgram = true): string {
  const root = mkdtempSync(join(tmpdir(), "keel-health-units-"));
  dirs.push(root);
  cpSync("/usr/lib/systemd/system", join(root, "usr/lib/systemd/system"), { recursive: true });
  for (const f of healthUnitFiles(cfg)) {
    mkdirSync(dirname(join(root, f.path)), { recursive: true });
    writeFileSync(join(root, f.path), f.content);
  }
  if (withProgram) {
    const program = join(root, toolPath("health"));
    mkdirSync(dirname(program), { recursive: true });
    writeFileSync(program, "#!/bin/sh\n");
    chmodSync(program, 0o755);
  }
  return root;
}

describe.each(["prod", "staging"])("keel-health.service and .timer of the %s stack, checked by systemd-analyze", (stack) => {
  const cfg = config(stack);

  it("verify without a warning, the timer with its service", () => {
    const root = verifyRoot(cfg);
    expect(run("systemd-analyze", ["verify", `--root=${root}`, "keel-health.timer", "keel-health.service"])).toEqual({ code: 0, out: "" });
  });

  it("fail verification when keel-health is not installed (what the units step's check catches)", () => {
    const r = run("systemd-analyze", ["verify", `--root=${verifyRoot(cfg, false)}`, "keel-health.service"]);
    expect(r.code).not.toBe(0);
    expect(r.out).toContain("Command /usr/local/sbin/keel-health is not executable");
  });

  it(`rate the service's exposure at most ${MAX_EXPOSURE} offline: root for the checks, little else`, () => {
    const dir = mkdtempSync(join(tmpdir(), "keel-health-units-"));
    dirs.push(dir);
    const service = healthUnitFiles(cfg)[0];
    const file = join(dir, "keel-health.service");
    writeFileSync(file, service.content);
    const r = run("systemd-analyze", ["security", "--offline=true", file]);
    const level = exposure(r.out);
    console.log(`systemd-analyze security --offline=true keel-health.service (${stack}): exposure ${level}`);
    expect(level).toBeLessThanOrEqual(MAX_EXPOSURE);
    const bare = service.content.split("# Sandbox:")[0];
    writeFileSync(file, bare);
    expect(exposure(run("systemd-analyze", ["security", "--offline=true", file]).out)).toBeGreaterThan(level + 3);
  });
});

describe("the health and runbook scripts", () => {
  const runbook = readdirSync(join(REPO, "scripts", "runbook")).filter((f) => f.endsWith(".sh")).map((f) => join(REPO, "scripts", "runbook", f));

  it("are shellcheck clean (the runbook's)", () => {
    expect(runbook.length).toBeGreaterThanOrEqual(9);
    expect(run("shellcheck", ["-x", ...runbook])).toEqual({ code: 0, out: "" });
  });

  it("keel-health-alert parses with python3 (without writing a __pycache__)", () => {
    expect(run("python3", ["-c", "import ast, sys; ast.parse(open(sys.argv[1]).read())", join(REPO, TOOLS["health-alert"])])).toEqual({ code: 0, out: "" });
  });

  it("keel-health compiles with python3 -m py_compile (a copy in a temporary directory: no __pycache__ here)", () => {
    const dir = mkdtempSync(join(tmpdir(), "keel-health-compile-"));
    dirs.push(dir);
    cpSync(join(REPO, TOOLS.health), join(dir, "keel_health.py"));
    expect(run("python3", ["-I", "-m", "py_compile", join(dir, "keel_health.py")])).toEqual({ code: 0, out: "" });
  });
});
