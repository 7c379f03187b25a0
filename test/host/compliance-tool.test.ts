// keel-compliance (the live host's OpenSCAP scan, docs/COMPLIANCE.md "On a live host") and keel
// verify's compliance check, run by this machine's python3. Here: what the tool refuses before it
// changes anything, and what verify makes of each result it may find. The scan itself needs
// keel's tailoring file placed and the pinned content: it runs on the demo VM (test/vm/demo.test.ts).
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { SSG_PACKAGE } from "../../compliance/content";
import { TOOLS } from "../../plan/tools";
import { REPO } from "../support/stack";

const TOOL = join(REPO, TOOLS.compliance);
const STATE_DIR = "/var/lib/keel/compliance";

function tool(args: string[], opts: { input?: string | Buffer; as?: "root" | "nobody" } = {}) {
  const argv = ["python3", "-I", TOOL, ...args];
  const [cmd, ...rest] = opts.as === "nobody" ? ["runuser", "-u", "nobody", "--", ...argv] : argv;
  const r = spawnSync(cmd, rest, { input: opts.input ?? "", encoding: "utf8", env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" } });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

describe("keel-compliance", () => {
  it("names the content it takes: the pinned ssg-debian package", () => {
    const r = tool(["content"], { as: "nobody" });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(`${SSG_PACKAGE.name} ${SSG_PACKAGE.version} ${SSG_PACKAGE.url} ${SSG_PACKAGE.sha256}\n`);
  });

  it("runs only as root", () => {
    const r = tool(["run"], { as: "nobody" });
    expect([r.code, r.stderr]).toEqual([2, "keel-compliance: must run as root (sudo)\n"]);
  });

  it("refuses any other bytes than the pinned package on stdin, saying which and what to give, before it changes anything", () => {
    const had = existsSync(STATE_DIR);
    for (const input of ["", Buffer.alloc(4096, 0x41)]) {
      const r = tool(["run"], { input });
      expect(r.code, r.stderr).toBe(2);
      const sha = createHash("sha256").update(input).digest("hex");
      expect(r.stderr).toBe(
        `keel-compliance: stdin is not ssg-debian ${SSG_PACKAGE.version} (${input.length} bytes, sha256 ${sha}; expected ${SSG_PACKAGE.sha256}): give it ${SSG_PACKAGE.url}, as scripts/runbook/compliance.sh does; nothing was changed\n`,
      );
    }
    expect(existsSync(STATE_DIR)).toBe(had);
  });

  it("takes only the levels it knows", () => {
    const r = tool(["run", "--level", "high"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("argument --level: invalid choice: 'high'");
  });
});

describe("keel verify's compliance check (keel-verify check_compliance)", () => {
  const dir = mkdtempSync(join(tmpdir(), "keel-verify-compliance-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const tailoring = join(dir, "tailoring.xml");
  const result = join(dir, "intermediary.json");
  writeFileSync(tailoring, "<xccdf:Tailoring/>\n");
  const tailoringSha = createHash("sha256").update("<xccdf:Tailoring/>\n").digest("hex");
  const record = (extra: object) => ({ level: "intermediary", content: "ssg-debian 0.1.76-1", finished: "2026-12-05T18:00:00Z", tailoring_sha256: tailoringSha, pass: 144, fail: 0, notapplicable: 36, failed: [], not_decided: [], ...extra });

  /** check_compliance() with the module's paths pointed at this test's files: [status, name, evidence]. */
  function check(written: object | string | undefined): string[] {
    rmSync(result, { force: true });
    if (written !== undefined) writeFileSync(result, typeof written === "string" ? written : JSON.stringify(written));
    const program = `
import importlib.machinery, importlib.util, json
spec = importlib.util.spec_from_loader("keel_verify", importlib.machinery.SourceFileLoader("keel_verify", ${JSON.stringify(join(REPO, TOOLS.verify))}))
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
m.COMPLIANCE_RESULT, m.COMPLIANCE_TAILORING = ${JSON.stringify(result)}, ${JSON.stringify(tailoring)}
m.check_compliance()
print(json.dumps(m.results))`;
    const r = spawnSync("python3", ["-I", "-B", "-c", program], { encoding: "utf8" });
    expect(r.stderr).toBe("");
    const results = JSON.parse(r.stdout) as string[][];
    expect(results).toHaveLength(1);
    return results[0];
  }

  it("is skipped, saying how to run it, when the profile was never evaluated on the host", () => {
    const [status, name, evidence] = check(undefined);
    expect([status, name]).toEqual(["skipped", "compliance"]);
    expect(evidence).toContain("has not been evaluated on this host; scripts/runbook/compliance.sh evaluates it");
  });

  it("is ok when the last run decided every rule and none failed, with the tailoring placed now", () => {
    expect(check(record({}))).toEqual([
      "ok",
      "compliance",
      "the tailored ANSSI BP-028 intermediary profile passed 144 rules (36 not applicable) on 2026-12-05T18:00:00Z, ssg-debian 0.1.76-1; not re-evaluated by verify",
    ]);
  });

  it("fails naming each rule that failed or was not decided", () => {
    const [status, , evidence] = check(record({ fail: 1, failed: ["aide_build_database"], not_decided: ["sysctl_x (stalled)"] }));
    expect(status).toBe("failed");
    expect(evidence).toContain("failed aide_build_database; not decided sysctl_x (stalled)");
  });

  it("fails a result that decided nothing, and one it cannot read", () => {
    expect(check(record({ pass: 0 }))[0]).toBe("failed");
    const [status, , evidence] = check("{not json");
    expect(status).toBe("failed");
    expect(evidence).toContain(`${result} could not be read`);
  });

  it("is skipped when the last run used another tailoring file than the one placed now", () => {
    const [status, , evidence] = check(record({ tailoring_sha256: "0".repeat(64) }));
    expect(status).toBe("skipped");
    expect(evidence).toContain("used another tailoring file than the one placed now");
  });
});
