import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { renderPlan } from "../../scripts/dev/render";

describe("npm run render", () => {
  const out = mkdtempSync(join(tmpdir(), "keel-render-"));
  afterAll(() => rmSync(out, { recursive: true, force: true }));

  it("writes the cloud-config, every placed file with its metadata, and every step, secrets redacted", () => {
    const plan = renderPlan("prod", out);
    const cloudConfig = readFileSync(join(out, "cloud-config.yaml"), "utf8");
    expect(cloudConfig.startsWith("#cloud-config\n")).toBe(true);
    const rows = readFileSync(join(out, "files.tsv"), "utf8").trim().split("\n");
    expect(rows[0]).toBe("path\towner\tgroup\tmode\tsha256");
    expect(rows).toContain(rows.find((r) => r.startsWith("/home/deploy/.ssh/authorized_keys\tdeploy\tdeploy\t0600\t")));
    expect(rows.length - 1).toBe(new Set(plan.files.map((f) => f.path)).size);
    for (const f of plan.files) expect(readFileSync(join(out, "files", f.path), "utf8")).toBe(f.content);
    const steps = readdirSync(join(out, "steps")).filter((n) => n.endsWith(".sh"));
    expect(steps.length).toBe(plan.steps.length);
    const secrets = readFileSync(join(out, "steps", readdirSync(join(out, "steps")).find((n) => n.endsWith("-secrets.stdin"))!), "utf8");
    expect(secrets).toContain("<redacted> secret envFile");
    expect(existsSync(join(out, "steps", "01-ready.sh"))).toBe(true);
  });

  it("renders the same bytes twice (diffable between commits)", () => {
    const again = mkdtempSync(join(tmpdir(), "keel-render-"));
    try {
      renderPlan("prod", again);
      expect(readFileSync(join(again, "cloud-config.yaml"), "utf8")).toBe(readFileSync(join(out, "cloud-config.yaml"), "utf8"));
      expect(readFileSync(join(again, "files.tsv"), "utf8")).toBe(readFileSync(join(out, "files.tsv"), "utf8"));
    } finally {
      rmSync(again, { recursive: true, force: true });
    }
  });
});
