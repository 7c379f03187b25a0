// One source per contract: the files `npm run gen` writes are what their sources render, so a new
// config key is one edit to config.ts (its type, default and description) and one row in
// configDocs.ts, then `npm run gen` (scripts/dev/generated.ts).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parse as parseYaml } from "yaml";
import { describe, expect, it } from "vitest";
import { configSchema } from "../../config";
import { CONFIG_DOC } from "../../configDocs";
import { declaredKeys, renderComplianceDoc, renderConfigDoc, renderHealthSchema, renderHealthScript, renderHostConfReader, renderPulumiYaml, renderRunbookDoc } from "../../scripts/dev/generated";
import { HEALTH_CHECKS } from "../../plan/healthChecks";
import { REPO } from "../support/stack";
import { TAILORING_FILE } from "../../compliance/decisions";
import { renderTailoring } from "../../compliance/tailoring";

const read = (file: string) => readFileSync(join(REPO, file), "utf8");
const STALE = "is stale: run `npm run gen` and commit the result";

describe("generated files", () => {
  it("Pulumi.yaml is config.ts's schema, rendered", () => {
    expect(read("Pulumi.yaml"), `Pulumi.yaml ${STALE}`).toBe(renderPulumiYaml());
  });

  it("declares the scalar keys that are required or have a default, and no other", () => {
    const declared = Object.keys((parseYaml(read("Pulumi.yaml")) as { config: Record<string, unknown> }).config);
    expect(declared).toEqual(declaredKeys());
    expect(declared).toEqual(expect.arrayContaining(["repoRef", "pythonVersion", "sshPort", "minFreeDiskGiB"]));
    for (const optional of ["dbFile", "migrateFrom", "sshPortNext", "gitKnownHosts", "adminKeys", "settings", "secretEnvNames"]) expect(declared).not.toContain(optional);
  });

  it("docs/CONFIG.md's tables are configDocs.ts's rows, with the schema's defaults", () => {
    expect(read("docs/CONFIG.md"), `docs/CONFIG.md ${STALE}`).toBe(renderConfigDoc(read("docs/CONFIG.md")));
  });

  it("documents every key the operator sets, once, and no key the schema does not know", () => {
    const documented = CONFIG_DOC.flatMap((s) => s.rows.map((r) => r.key));
    // secretEnv and alertWebhookUrl are read as secrets; config.ts derives secretEnvNames and alertWebhook from them.
    const settable = [...Object.keys(configSchema.shape).filter((k) => !["secretEnvNames", "alertWebhook"].includes(k)), "secretEnv", "alertWebhookUrl"];
    expect([...documented].sort()).toEqual([...settable].sort());
    expect(new Set(documented).size).toBe(documented.length);
  });

  it("keel-host-conf knows host.conf's keys and kinds as plan/hostConf.ts declares them", () => {
    const file = "scripts/host/keel-host-conf";
    expect(read(file), `${file} ${STALE}`).toBe(renderHostConfReader(read(file)));
  });

  it("keel-health's checks, docs/RUNBOOK.md's table and details, and the report's schema are plan/healthChecks.ts's", () => {
    for (const [file, render] of [
      ["scripts/host/keel-health", renderHealthScript],
      ["docs/RUNBOOK.md", renderRunbookDoc],
      ["docs/health-report.schema.json", () => renderHealthSchema()],
    ] as const) {
      expect(read(file), `${file} ${STALE}`).toBe(render(read(file)));
    }
    const names = HEALTH_CHECKS.map((c) => c.name);
    expect(new Set(names).size).toBe(names.length);
    expect(Object.keys((JSON.parse(read("docs/health-report.schema.json")) as { properties: { checks: { properties: object } } }).properties.checks.properties)).toEqual(names);
  });

  it("the compliance tailoring file and docs/COMPLIANCE.md's table are compliance/decisions.ts's, rendered", () => {
    expect(read(TAILORING_FILE), `${TAILORING_FILE} ${STALE}`).toBe(renderTailoring());
    expect(read("docs/COMPLIANCE.md"), `docs/COMPLIANCE.md ${STALE}`).toBe(renderComplianceDoc(read("docs/COMPLIANCE.md")));
  });
});
