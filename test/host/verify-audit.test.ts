// keel verify's audit check (scripts/host/keel-verify audit_problems), run by this machine's
// python3 on keel's rendered audit rules and on what `auditctl -l` prints of them: auditctl stops at
// the first rule the kernel refuses (so every rule after it is missing), another file's rules with
// keel's keys must not stand in for keel's, and an audit path rule on a link never fires (Ubuntu
// 26.04's /usr/bin/sudo links to sudo-rs).
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { auditRules } from "../../plan/hardening";
import { TOOLS } from "../../plan/tools";
import { REPO } from "../support/stack";

/** audit_problems(planned, loaded, sudo_exe), from the script itself. */
function auditProblems(planned: string, loaded: string, sudoExe: string): string[] {
  const program = `
import importlib.machinery, importlib.util, json, sys
# keel-verify has no .py suffix (it is named as installed), so its loader is given explicitly.
spec = importlib.util.spec_from_loader("keel_verify", importlib.machinery.SourceFileLoader("keel_verify", ${JSON.stringify(join(REPO, TOOLS.verify))}))
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
a = json.load(sys.stdin)
print(json.dumps(m.audit_problems(a["planned"], a["loaded"], a["sudo"])))`;
  const r = spawnSync("python3", ["-I", "-B", "-c", program], { input: JSON.stringify({ planned, loaded, sudo: sudoExe }), encoding: "utf8" });
  expect(r.stderr).toBe("");
  return JSON.parse(r.stdout) as string[];
}

/** `auditctl -l` on a Debian 12 VM after keel's first boot (audit 3.0.9; 2026-12-05). */
const DEBIAN_12_LOADED = `-w /etc/passwd -p wa -k identity
-w /etc/group -p wa -k identity
-w /etc/shadow -p wa -k identity
-w /etc/gshadow -p wa -k identity
-w /etc/sudoers -p wa -k sudoers
-w /etc/sudoers.d -p wa -k sudoers
-w /etc/ssh -p wa -k sshd
-w /usr/local/sbin -p wa -k keel
-w /usr/local/lib/keel -p wa -k keel
-w /etc/keel -p wa -k keel
-w /etc/systemd/system -p wa -k units
-a always,exit -S all -F path=/usr/bin/sudo -F perm=x -F auid>=1000 -F auid!=-1 -F key=sudo-exec
-a always,exit -F arch=b64 -S init_module,delete_module,finit_module -F key=modules
-a always,exit -F arch=b64 -S settimeofday -F key=time-change
-a always,exit -F arch=b64 -S clock_settime -F a0=0x0 -F key=time-change
-w /etc/localtime -p wa -k time-change
`;

/** The same listing for another image's rules: auditctl's forms (-F key=, auid -1, -S all, system calls in number order). */
function asLoaded(rules: string): string {
  return rules
    .split("\n")
    .filter((l) => l.startsWith("-w ") || l.startsWith("-a "))
    .map((l) =>
      l.startsWith("-w ")
        ? l
        : l
            .replace(/ -k (\S+)$/, " -F key=$1")
            .replace("auid!=unset", "auid!=-1")
            .replace("-a always,exit -F path=", "-a always,exit -S all -F path=")
            .replace("init_module,finit_module,delete_module", "init_module,delete_module,finit_module"),
    )
    .join("\n");
}

describe("keel verify's audit check", () => {
  it("passes on what a Debian 12 host's auditctl -l lists after keel's first boot", () => {
    expect(auditProblems(auditRules({ image: "debian-12" }), DEBIAN_12_LOADED, "/usr/bin/sudo")).toEqual([]);
    expect(asLoaded(auditRules({ image: "debian-12" }))).toBe(DEBIAN_12_LOADED.trim());
  });

  it("passes on ubuntu-26.04's rules loaded, sudo running sudo-rs's executable", () => {
    const rules = auditRules({ image: "ubuntu-26.04" });
    expect(auditProblems(rules, asLoaded(rules), "/usr/lib/cargo/bin/sudo")).toEqual([]);
  });

  it("names each rule lost after one the kernel refused", () => {
    const rules = auditRules({ image: "debian-12" });
    const loaded = DEBIAN_12_LOADED.split("\n");
    const cut = loaded.findIndex((l) => l.includes("key=time-change"));
    expect(auditProblems(rules, loaded.slice(0, cut).join("\n"), "/usr/bin/sudo")).toEqual([
      "not loaded: -a always,exit -F arch=b64 -S settimeofday -k time-change",
      "not loaded: -a always,exit -F arch=b64 -S clock_settime -F a0=0x0 -k time-change",
      "not loaded: -w /etc/localtime -p wa -k time-change",
    ]);
    expect(auditProblems(rules, "", "/usr/bin/sudo")).toHaveLength(16);
  });

  it("does not let another file's rules with keel's keys stand in for keel's", () => {
    // A copy of auditd's 30-stig.rules loaded first: its clock_settime rule is keel's (so the kernel
    // refuses keel's as a duplicate and augenrules stops there), its other time-change rules are not.
    const loaded = DEBIAN_12_LOADED.replace("-w /etc/localtime -p wa -k time-change\n", "")
      + "-a always,exit -F arch=b64 -S adjtimex,settimeofday -F key=time-change\n-w /etc/localtime -p wa -k time-changes\n";
    expect(auditProblems(auditRules({ image: "debian-12" }), loaded, "/usr/bin/sudo")).toEqual(["not loaded: -w /etc/localtime -p wa -k time-change"]);
  });

  it("fails when sudo runs a file the sudo rule does not watch (a rule on the link never fires)", () => {
    expect(auditProblems(auditRules({ image: "debian-12" }), DEBIAN_12_LOADED, "/usr/lib/cargo/bin/sudo")).toEqual([
      "sudo runs /usr/lib/cargo/bin/sudo, which keel's sudo-exec rule does not watch (/usr/bin/sudo)",
    ]);
  });
});
