// keel-compliance (the live host's OpenSCAP scan, docs/COMPLIANCE.md "On a live host") and keel
// verify's compliance check, run by this machine's python3. Here: what the tool refuses before it
// changes anything, and what verify makes of each result it may find. The scan itself needs
// keel's tailoring file placed and the pinned content: it runs on the demo VM (test/vm/demo.test.ts).
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { SSG_PACKAGE } from "../../compliance/content";
import { COMPLIANCE_TAILORING, TOOLS } from "../../plan/tools";
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
  it("compiles (python3 -m py_compile, in a temporary directory)", () => {
    const tmp = mkdtempSync(join(tmpdir(), "keel-compliance-compile-"));
    try {
      const r = spawnSync("python3", ["-I", "-c", "import py_compile, sys; py_compile.compile(sys.argv[1], cfile=sys.argv[2], doraise=True)", TOOL, join(tmp, "c.pyc")], { encoding: "utf8" });
      expect(r.status, r.stderr).toBe(0);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });

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

/** Runs `body` (Python) with the tool loaded as module m; returns what it prints, parsed as JSON. */
function withModule(body: string, input = ""): unknown {
  const program = `
import importlib.machinery, importlib.util, json, sys
spec = importlib.util.spec_from_loader("keel_compliance", importlib.machinery.SourceFileLoader("keel_compliance", ${JSON.stringify(TOOL)}))
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
${body}`;
  const r = spawnSync("python3", ["-I", "-B", "-c", program], { input, encoding: "utf8" });
  expect(r.stderr).toBe("");
  return JSON.parse(r.stdout);
}

describe("keel-compliance's gates and batches (its functions, with paths and oscap stood in for)", () => {
  const dir = mkdtempSync(join(tmpdir(), "keel-compliance-gates-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("evaluates only the tailoring file keel-place recorded: a missing file, a missing record or changed bytes are refused", () => {
    const tailoring = join(dir, "tailoring.xml");
    const manifest = join(dir, "manifest.json");
    writeFileSync(tailoring, "<xccdf:Tailoring/>\n");
    const sha = createHash("sha256").update("<xccdf:Tailoring/>\n").digest("hex");
    const attempt = (manifestText: string | undefined, path = tailoring) => {
      rmSync(manifest, { force: true });
      if (manifestText !== undefined) writeFileSync(manifest, manifestText);
      return withModule(`
m.TAILORING, m.MANIFEST = ${JSON.stringify(path)}, ${JSON.stringify(manifest)}
try:
    print(json.dumps(["ok", m.placed_tailoring().decode()]))
except m.Refused as e:
    print(json.dumps(["refused", str(e)]))`);
    };
    expect(attempt(JSON.stringify({ [tailoring]: { sha256: sha } }))).toEqual(["ok", "<xccdf:Tailoring/>\n"]);
    expect(attempt(JSON.stringify({ [tailoring]: { sha256: sha } }), join(dir, "absent.xml"))).toEqual(["refused", expect.stringContaining("absent.xml is not on this host")]);
    expect(attempt(undefined)).toEqual(["refused", expect.stringContaining("has no record of")]);
    expect(attempt(JSON.stringify({ [tailoring]: { sha256: "0".repeat(64) } }))).toEqual(["refused", expect.stringContaining("was changed since keel placed it (the health report's drift check names it)")]);
  });

  it("refuses a system the content's benchmark is not for, after the package and before anything else", () => {
    const out = withModule(
      `
m.SSG_SHA256 = ${JSON.stringify(createHash("sha256").update("package").digest("hex"))}
m.STATE_DIR = ${JSON.stringify(join(dir, "state"))}
m.system = lambda: ("ubuntu", "24.04")
try:
    m.run("intermediary")
except m.Refused as e:
    print(json.dumps(str(e)))`,
      "package",
    );
    expect(out).toBe("this host runs ubuntu 24.04; the content's benchmark is for Debian 12 only (its rules would all be not applicable here)");
    expect(existsSync(join(dir, "state"))).toBe(false);
  });

  it("splits a stalled batch until the rule that stalls is alone, tries it once more, and counts it not decided; a timed-out batch is not decided and not split", () => {
    const rules = Array.from({ length: 50 }, (_, i) => `r${i}`);
    const out = withModule(`
m.say = lambda text: None
runs = []
def fake(work, name, profile, rules, deadline):
    runs.append(len(rules))
    if "r7" in rules:
        return "stalled"
    if "r30" in rules:
        return "timeout"
    return {r: ("fail" if r == "r3" else "pass") for r in rules}
m.evaluate = fake
results, stalls = m.evaluate_all("/nonexistent", "p", ${JSON.stringify(rules)})
print(json.dumps({"results": results, "stalls": stalls, "runs": runs}))`) as { results: Record<string, string>; stalls: number; runs: number[] };
    expect(Object.keys(out.results).sort()).toEqual([...rules].sort());
    expect(out.results.r7).toBe("stalled");
    expect(out.results.r3).toBe("fail");
    // r30's batch of 24 (r24..r47) timed out whole.
    expect(rules.filter((r) => out.results[r] === "timeout")).toEqual(rules.slice(24, 48));
    expect(Object.values(out.results).filter((v) => v === "pass")).toHaveLength(50 - 1 - 1 - 24);
    // r7's batch, each stalled part split first-half-first: 24 (r0-23) → 12 (r0-11) → 6 (r0-5
    // passes), 6 (r6-11) → 3 (r6-8) → 1 (r6 passes), 2 (r7-8) → 1 (r7), r7 once more, 1 (r8);
    // then 3 (r9-11), 12 (r12-23); r30's batch of 24 runs once; 2 (r48-49).
    expect(out.stalls).toBe(7);
    expect(out.runs).toEqual([24, 12, 6, 6, 3, 1, 2, 1, 1, 1, 3, 12, 24, 2]);
  });

  it("records the sha256 of the tailoring it evaluated, the copy it took of what keel placed", () => {
    const tailoring = join(dir, "placed.xml");
    const manifest = join(dir, "manifest-run.json");
    const state = join(dir, "state-run");
    writeFileSync(tailoring, "<xccdf:Tailoring>placed</xccdf:Tailoring>\n");
    const sha = createHash("sha256").update("<xccdf:Tailoring>placed</xccdf:Tailoring>\n").digest("hex");
    writeFileSync(manifest, JSON.stringify({ [tailoring]: { sha256: sha } }));
    const out = withModule(
      `
import os, subprocess
m.SSG_SHA256 = ${JSON.stringify(createHash("sha256").update("package").digest("hex"))}
m.TAILORING, m.MANIFEST, m.STATE_DIR = ${JSON.stringify(tailoring)}, ${JSON.stringify(manifest)}, ${JSON.stringify(state)}
m.system = lambda: m.SYSTEM
m.say = lambda text: None
m.subprocess.run = lambda *a, **k: subprocess.CompletedProcess(a, 0, "", "")  # keel-packages
m.data_stream = lambda deb, out: open(out, "w").close()
m.selected_rules = lambda work, profile: ["r1", "r2"]
seen = {}
def evaluate_all(work, profile, rules):
    seen["evaluated"] = open(os.path.join(work, "tailoring.xml")).read()
    return {"r1": "pass", "r2": "notapplicable"}, 0
m.evaluate_all = evaluate_all
code = m.run("intermediary")
record = json.load(open(os.path.join(m.STATE_DIR, "intermediary.json")))
print(json.dumps({"code": code, "record": record, "seen": seen, "left": sorted(os.listdir(m.STATE_DIR))}))`,
      "package",
    ) as { code: number; record: Record<string, unknown>; seen: { evaluated: string }; left: string[] };
    expect(out.code).toBe(0);
    expect(out.seen.evaluated).toBe("<xccdf:Tailoring>placed</xccdf:Tailoring>\n");
    expect(out.record).toMatchObject({ level: "intermediary", tailoring_sha256: sha, pass: 1, notapplicable: 1, fail: 0, failed: [], not_decided: [] });
    // The work directory is gone; the lock and the record stay.
    expect(out.left).toEqual([".lock", "intermediary.json"]);
  });

  it("watches oscap: a run whose CPU time stands still is killed with everything it started, and one that finishes is read", () => {
    const bin = join(dir, "bin");
    const work = join(dir, "work");
    mkdirSync(bin, { recursive: true });
    mkdirSync(work, { recursive: true });
    // A stand-in oscap: "stall" sleeps (with a child) without using CPU; otherwise it writes a
    // results file with the rules it was given, the first one failed.
    writeFileSync(
      join(bin, "oscap"),
      `#!/bin/bash
rules=() results=""
while [[ $# -gt 0 ]]; do
  case $1 in --rule) rules+=("$2"); shift ;; --results) results=$2; shift ;; esac
  shift
done
if [[ \${rules[0]} == stall ]]; then sleep 300 & echo $! > ${join(dir, "child.pid")}; wait; fi
{
  echo '<TestResult xmlns="http://checklists.nist.gov/xccdf/1.2">'
  for i in "\${!rules[@]}"; do
    r=pass; [[ $i -eq 0 ]] && r=fail
    echo "<rule-result idref=\\"\${rules[$i]}\\"><result>$r</result></rule-result>"
  done
  echo '</TestResult>'
} > "$results"
exit 2
`,
      { mode: 0o755 },
    );
    const out = withModule(`
import time
m.ENV["PATH"] = ${JSON.stringify(bin)} + ":" + m.ENV["PATH"]
m.POLL_SECONDS, m.STALL_SECONDS = 1, 3
done = m.evaluate(${JSON.stringify(work)}, "ok", "p", ["a", "b"], time.monotonic() + 60)
stalled = m.evaluate(${JSON.stringify(work)}, "st", "p", ["stall"], time.monotonic() + 60)
print(json.dumps({"done": done, "stalled": stalled}))`) as { done: Record<string, string>; stalled: string };
    expect(out.done).toEqual({ a: "fail", b: "pass" });
    expect(out.stalled).toBe("stalled");
    const child = Number(readFileSync(join(dir, "child.pid"), "utf8"));
    expect(existsSync(`/proc/${child}`) && !readFileSync(`/proc/${child}/stat`, "utf8").includes(") Z ")).toBe(false);
  });
});

describe("keel verify's compliance line (keel-compliance verdict, which keel-verify asks)", () => {
  const dir = mkdtempSync(join(tmpdir(), "keel-verify-compliance-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const result = join(dir, "intermediary.json");
  const manifest = join(dir, "manifest.json");
  const tailoringSha = createHash("sha256").update("<xccdf:Tailoring/>\n").digest("hex");
  writeFileSync(manifest, JSON.stringify({ [COMPLIANCE_TAILORING]: { sha256: tailoringSha, mode: "0644" } }));
  const record = (extra: object) => ({ level: "intermediary", content: `ssg-debian ${SSG_PACKAGE.version}`, finished: "2026-12-05T18:00:00Z", tailoring_sha256: tailoringSha, pass: 144, fail: 0, notapplicable: 36, failed: [], not_decided: [], ...extra });

  /**
   * verdict() with the module's state directory and manifest at this test's files and the host's
   * system given: [status, "compliance", evidence], as keel-verify reports it.
   */
  function check(written: unknown, system: [string, string] = ["debian", "12"]): string[] {
    rmSync(result, { force: true });
    if (written !== undefined) writeFileSync(result, typeof written === "string" ? written : JSON.stringify(written));
    const [status, evidence] = withModule(`
m.STATE_DIR, m.MANIFEST = ${JSON.stringify(dir)}, ${JSON.stringify(manifest)}
m.system = lambda: tuple(${JSON.stringify(system)})
print(json.dumps(m.verdict()))`) as [string, string];
    return [status, "compliance", evidence];
  }

  it("is what keel-verify reports: the tool's STATUS<TAB>EVIDENCE, and failed when the tool gives none", () => {
    const stub = join(dir, "keel-compliance-stub");
    const verify = (answer: string) => {
      writeFileSync(stub, `#!/bin/sh\n[ "$1" = verdict ] || exit 9\n${answer}\n`, { mode: 0o755 });
      const program = `
import importlib.machinery, importlib.util, json
spec = importlib.util.spec_from_loader("keel_verify", importlib.machinery.SourceFileLoader("keel_verify", ${JSON.stringify(join(REPO, TOOLS.verify))}))
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
m.check_compliance(${JSON.stringify(stub)})
print(json.dumps(m.results))`;
      const r = spawnSync("python3", ["-I", "-B", "-c", program], { encoding: "utf8" });
      expect(r.stderr).toBe("");
      return JSON.parse(r.stdout) as string[][];
    };
    expect(verify("printf 'skipped\\tnot evaluated here\\n'")).toEqual([["skipped", "compliance", "not evaluated here"]]);
    expect(verify("echo broken >&2; exit 3")).toEqual([["failed", "compliance", `${stub} verdict exited 3 without a verdict: broken`]]);
    expect(verify("echo 'passed'")).toEqual([["failed", "compliance", `${stub} verdict exited 0 without a verdict: passed`]]);
  });

  it("is skipped, saying how to run it, when the profile was never evaluated on the host", () => {
    const [status, name, evidence] = check(undefined);
    expect([status, name]).toEqual(["skipped", "compliance"]);
    expect(evidence).toContain("has not been evaluated on this host; scripts/runbook/compliance.sh evaluates it");
  });

  it("is skipped on a system the content is not for", () => {
    expect(check(record({}), ["ubuntu", "24.04"])).toEqual(["skipped", "compliance", "this host runs ubuntu 24.04; the compliance content (ANSSI BP-028 for Debian 12) is for Debian 12 only"]);
  });

  it("is ok when the last run, of the pinned content and the tailoring keel placed, decided every rule and none failed", () => {
    expect(check(record({}))).toEqual([
      "ok",
      "compliance",
      `the tailored ANSSI BP-028 intermediary profile passed 144 rules (36 not applicable) on 2026-12-05T18:00:00Z, ssg-debian ${SSG_PACKAGE.version}; not re-evaluated by verify`,
    ]);
  });

  it("fails naming each rule that failed or was not decided", () => {
    const [status, , evidence] = check(record({ fail: 1, failed: ["aide_build_database"], not_decided: ["sysctl_x (stalled)"] }));
    expect(status).toBe("failed");
    expect(evidence).toContain("failed aide_build_database; not decided sysctl_x (stalled)");
  });

  it("fails a result that decided nothing, and one it cannot read", () => {
    expect(check(record({ pass: 0 }))).toEqual(["failed", "compliance", expect.stringContaining("decided no rule")]);
    for (const bad of ["{not json", "[1, 2]"]) expect(check(bad)).toEqual(["failed", "compliance", expect.stringContaining(result)]);
  });

  it("fails when keel-place's manifest has no record of the tailoring file, naming it", () => {
    writeFileSync(manifest, "{}");
    try {
      expect(check(record({}))).toEqual(["failed", "compliance", `${manifest} has no readable record of ${COMPLIANCE_TAILORING} (KeyError): pulumi up places it again`]);
    } finally {
      writeFileSync(manifest, JSON.stringify({ [COMPLIANCE_TAILORING]: { sha256: tailoringSha, mode: "0644" } }));
    }
  });

  it("is skipped when the last run was of another tailoring file or content than keel placed and pins now", () => {
    for (const other of [{ tailoring_sha256: "0".repeat(64) }, { content: "ssg-debian 0.1.75-1" }]) {
      const [status, , evidence] = check(record(other));
      expect(status).toBe("skipped");
      expect(evidence).toContain("was not of the content (ssg-debian 0.1.76-1) and tailoring file keel placed now");
    }
  });
});
