// The compliance tailoring file (issue 14): rendered from one list of decisions, each deselected rule
// with its reason beside it, for both ANSSI BP-028 levels keel reports on. Whether oscap takes the
// file is measured by `npm run bench:compliance`, which evaluates the tailored profiles with it.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { PROFILE_LEVELS, PROFILES, RULE_PREFIX, SSG_PACKAGE, tailoredProfileId } from "../../compliance/content";
import { DECISIONS, type Decision } from "../../compliance/decisions";
import { checkDecisions, renderTailoring, xmlText } from "../../compliance/tailoring";
import { parseConfig } from "../../config";
import { buildHostPlan } from "../../plan/hostPlan";
import { SECURITY_GRACE_HOURS } from "../../plan/health";
import { hostPaths } from "../../plan/layout";
import { COMPLIANCE_TAILORING, TOOLS, toolPath } from "../../plan/tools";
import { REPO, stackConfig } from "../support/stack";

const REASON = "A reason long enough for an auditor to read why keel does not apply it.";

describe("the tailoring file", () => {
  const file = renderTailoring();

  it("has one tailored profile per level, extending the published one", () => {
    const profiles = [...file.matchAll(/<xccdf:Profile id="([^"]+)" extends="([^"]+)">/g)].map((m) => [m[1], m[2]]);
    expect(profiles).toEqual(PROFILE_LEVELS.map((l) => [tailoredProfileId(l), PROFILES[l]]));
  });

  it("deselects every decided rule in each profile, with its kind and reason as the select's remark", () => {
    for (const profile of file.split("<xccdf:Profile ").slice(1)) {
      const selects = [...profile.matchAll(/<xccdf:select idref="([^"]+)" selected="false">\n\s*<xccdf:remark>([^<]+)<\/xccdf:remark>/g)];
      expect(selects.map((m) => m[1]).sort()).toEqual(DECISIONS.map((d) => `${RULE_PREFIX}${d.rule}`).sort());
      for (const [, idref, remark] of selects) {
        const d = DECISIONS.find((x) => `${RULE_PREFIX}${x.rule}` === idref)!;
        expect(remark).toBe(xmlText(`${d.kind}: ${d.reason}`));
      }
      expect(profile).not.toMatch(/selected="true"/);
    }
  });

  it("escapes a reason's markup", () => {
    const out = renderTailoring([{ rule: "some_rule", kind: "met otherwise", reason: `${REASON} <a> & "b"` }]);
    expect(out).toContain("&lt;a&gt; &amp; &quot;b&quot;");
    expect(out).not.toContain("<a>");
  });
});

describe("the decisions", () => {
  const refuse = (decisions: Decision[]) => () => checkDecisions(decisions);

  it("are accepted as they stand", () => {
    expect(() => checkDecisions(DECISIONS)).not.toThrow();
  });

  it("refuse a rule named by its long id, a rule decided twice, and a reason too short to tell why", () => {
    expect(refuse([{ rule: `${RULE_PREFIX}x`, kind: "cannot apply", reason: REASON }])).toThrow(/compliance\/decisions\.ts: "xccdf_org\.ssgproject\.content_rule_x" is not a rule's short id/);
    expect(refuse([{ rule: "x", kind: "cannot apply", reason: REASON }, { rule: "x", kind: "would harm", reason: REASON }])).toThrow(/x is decided twice/);
    expect(refuse([{ rule: "x", kind: "cannot apply", reason: "because" }])).toThrow(/x's reason is too short/);
  });
});

describe("the decisions' reasons state keel's figures", () => {
  it("security_patches_up_to_date names the health report's grace period", () => {
    expect(DECISIONS.find((d) => d.rule === "security_patches_up_to_date")?.reason).toContain(`pending for ${SECURITY_GRACE_HOURS} hours`);
  });
});

describe("keel-compliance, the live host's scan (scripts/host/keel-compliance)", () => {
  // The tool is Python and runs on the host on its own: these keep its constants equal to the
  // TypeScript source of what keel was measured with and where the tools step places the file.
  const script = readFileSync(join(REPO, TOOLS.compliance), "utf8");
  const constant = (name: string) => new RegExp(`^${name} = (.+)$`, "m").exec(script)?.[1];

  it("takes the pinned content package and evaluates the tailored profiles the tailoring file declares", () => {
    expect([constant("SSG_NAME"), constant("SSG_VERSION"), constant("SSG_URL"), constant("SSG_SHA256"), constant("SSG_DATA_STREAM")]).toEqual(
      [SSG_PACKAGE.name, SSG_PACKAGE.version, SSG_PACKAGE.url, SSG_PACKAGE.sha256, SSG_PACKAGE.dataStream].map((v) => JSON.stringify(v)),
    );
    expect(constant("RULE_PREFIX")).toBe(JSON.stringify(RULE_PREFIX));
    // The runbook's copy: the operator's machine downloads only what this keel pins.
    const runbook = readFileSync(join(REPO, "scripts", "runbook", "compliance.sh"), "utf8");
    expect(/^SSG="(.+)"$/m.exec(runbook)?.[1]).toBe(`${SSG_PACKAGE.name} ${SSG_PACKAGE.version} ${SSG_PACKAGE.url} ${SSG_PACKAGE.sha256}`);
    expect(constant("LEVELS")).toBe(`(${PROFILE_LEVELS.map((l) => JSON.stringify(l)).join(", ")})`);
    for (const level of PROFILE_LEVELS) expect(JSON.parse(constant("PROFILE")!).replace("{level}", level)).toBe(tailoredProfileId(level));
  });

  it("reads the tailoring file where the tools step places it", () => {
    expect(constant("TAILORING")).toBe(JSON.stringify(COMPLIANCE_TAILORING));
    const { raw, secretKeys } = stackConfig("prod");
    const cfg = parseConfig(raw, (k) => secretKeys.includes(k));
    expect(constant("STATE_DIR")).toBe(JSON.stringify(`${hostPaths(cfg).keelState}/compliance`));
    expect(constant("MANIFEST")).toBe(JSON.stringify(`${hostPaths(cfg).keelState}/manifest.json`));
    const tools = buildHostPlan(cfg).steps.find((s) => s.name === "tools")!;
    expect(tools.bundle?.files.find((f) => f.path === COMPLIANCE_TAILORING)).toEqual({ path: COMPLIANCE_TAILORING, owner: "root", group: "root", mode: "0644", content: renderTailoring() });
    expect(tools.bundle?.files.map((f) => f.path)).toContain(toolPath("compliance"));
  });
});
