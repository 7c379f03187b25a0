// keel verify's audit check (scripts/runbook/verify-host.py audit_problems), run by this machine's
// python3 on keel's rendered audit rules and on what `auditctl -l` prints of them: auditctl stops at
// the first rule the kernel refuses (so every rule after it is missing), and an audit path rule on
// a link never fires (Ubuntu 26.04's /usr/bin/sudo links to sudo-rs).
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { auditRules } from "../../cloud-init/hardening";
import { REPO } from "../support/stack";

/** audit_problems(planned, loaded, sudo_exe), from the script itself. */
function auditProblems(planned: string, loaded: string, sudoExe: string): string[] {
  const program = `
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("verify_host", ${JSON.stringify(join(REPO, "scripts", "runbook", "verify-host.py"))})
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
a = json.load(sys.stdin)
print(json.dumps(m.audit_problems(a["planned"], a["loaded"], a["sudo"])))`;
  const r = spawnSync("python3", ["-I", "-c", program], { input: JSON.stringify({ planned, loaded, sudo: sudoExe }), encoding: "utf8" });
  expect(r.stderr).toBe("");
  return JSON.parse(r.stdout) as string[];
}

/** What `auditctl -l` prints of rule lines: watches as written, syscall rules with -S all for a path rule and -F key=. */
function asLoaded(rules: string): string {
  return rules
    .split("\n")
    .filter((l) => l.startsWith("-w ") || l.startsWith("-a "))
    .map((l) => (l.startsWith("-a ") ? l.replace(/ -k (\S+)$/, " -F key=$1").replace("auid!=unset", "auid!=-1").replace("-a always,exit -F path=", "-a always,exit -S all -F path=") : l))
    .join("\n");
}

describe("keel verify's audit check", () => {
  for (const [image, sudo] of [["debian-12", "/usr/bin/sudo"], ["ubuntu-26.04", "/usr/lib/cargo/bin/sudo"]] as const) {
    it(`passes when every rule of ${image}'s file is loaded and sudo runs ${sudo}`, () => {
      const rules = auditRules({ image });
      expect(auditProblems(rules, asLoaded(rules), sudo)).toEqual([]);
    });
  }

  it("counts the rules lost after one the kernel refused, per key", () => {
    const rules = auditRules({ image: "debian-12" });
    const loaded = asLoaded(rules).split("\n");
    const cut = loaded.findIndex((l) => l.includes("sudo-exec"));
    expect(auditProblems(rules, loaded.slice(0, cut).join("\n"), "/usr/bin/sudo")).toEqual(["modules: 0 of 1 rule(s) loaded", "sudo-exec: 0 of 1 rule(s) loaded", "time-change: 0 of 3 rule(s) loaded"]);
    expect(auditProblems(rules, "", "/usr/bin/sudo")).toHaveLength(8);
  });

  it("fails when sudo runs a file the sudo rule does not watch (a rule on the link never fires)", () => {
    const rules = auditRules({ image: "debian-12" });
    expect(auditProblems(rules, asLoaded(rules), "/usr/lib/cargo/bin/sudo")).toEqual([
      "sudo runs /usr/lib/cargo/bin/sudo, which keel's sudo-exec rule does not watch (/usr/bin/sudo)",
    ]);
  });
});
