// The compliance tailoring file (issue 14): rendered from one list of decisions, each deselected rule
// with its reason beside it, for both ANSSI BP-028 levels keel reports on. Whether oscap takes the
// file is measured by `npm run bench:compliance`, which evaluates the tailored profiles with it.
import { describe, expect, it } from "vitest";
import { PROFILE_LEVELS, PROFILES, RULE_PREFIX, tailoredProfileId } from "../../compliance/content";
import { DECISIONS, type Decision } from "../../compliance/decisions";
import { checkDecisions, renderTailoring, xmlText } from "../../compliance/tailoring";

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
