// `npm run gen`: writes the generated files (scripts/dev/generated.ts) and says which changed.
import * as fs from "node:fs";
import * as path from "node:path";
import { renderTailoring } from "../../compliance/tailoring";
import { TAILORING_FILE } from "../../compliance/decisions";
import { renderComplianceDoc, renderConfigDoc, renderHealthSchema, renderHealthScript, renderHostConfReader, renderPulumiYaml, renderRunbookDoc } from "./generated";

const REPO = path.join(__dirname, "..", "..");
const files: [string, (current: string) => string][] = [
  ["Pulumi.yaml", () => renderPulumiYaml()],
  ["docs/CONFIG.md", renderConfigDoc],
  ["scripts/host/keel-host-conf", renderHostConfReader],
  ["scripts/host/keel-health", renderHealthScript],
  ["docs/RUNBOOK.md", renderRunbookDoc],
  ["docs/health-report.schema.json", () => renderHealthSchema()],
  [TAILORING_FILE, () => renderTailoring()],
  ["docs/COMPLIANCE.md", renderComplianceDoc],
];
for (const [file, render] of files) {
  const full = path.join(REPO, file);
  const current = fs.existsSync(full) ? fs.readFileSync(full, "utf8") : "";
  const next = render(current);
  if (next === current) {
    console.log(`${file}: up to date`);
  } else {
    fs.writeFileSync(full, next);
    console.log(`${file}: written`);
  }
}
