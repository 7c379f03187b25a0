// A clone of the repository is all a maintainer has: every reference in it resolves inside it.
// Seed 000 citations ("seed 000 §N") name a section of docs/REQUIREMENTS.md; a doc's name followed
// by a heading in double quotes names a heading that doc has; nothing points at documents outside
// the repository.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { REPO } from "../support/stack";

/** The repository's text files, walked from its root (a clone or a copy without .git alike). */
function walk(dir: string, rel = ""): string[] {
  return readdirSync(join(dir, rel), { withFileTypes: true }).flatMap((e) => {
    const path = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) return [".git", "node_modules", ".keel", "bin", "out", "fixtures", "__pycache__"].includes(e.name) ? [] : walk(dir, path);
    return e.isFile() && !/\.(json|png|whl|gz|db|lock)$/.test(e.name) && e.name !== "package-lock.json" ? [path] : [];
  });
}
const files = walk(REPO);
/** Each file's text, with comment markers at line starts folded into spaces, so a wrapped reference reads whole. */
const texts = new Map(files.map((f) => [f, readFileSync(join(REPO, f), "utf8").replace(/\n\s*(?:\/\/|#|\*|--)?\s*/g, " ")]));

const headings = new Map(
  readdirSync(join(REPO, "docs"))
    .filter((f) => f.endsWith(".md"))
    .map((f) => [f, headingsOf(readFileSync(join(REPO, "docs", f), "utf8"))]),
);

/** A page's headings, leaving out `#` lines inside fenced code blocks (shell comments). */
function headingsOf(text: string): string[] {
  let fenced = false;
  return text.split("\n").flatMap((l) => {
    if (l.startsWith("```")) fenced = !fenced;
    return !fenced && /^#+ /.test(l) ? [l.replace(/^#+ /, "").trim()] : [];
  });
}

/** A quoted heading names `heading` itself, or it with its qualifier (": …", " (…)") left off. */
const names = (heading: string, quoted: string) => heading === quoted || heading.startsWith(`${quoted}: `) || heading.startsWith(`${quoted} (`);

describe("references inside the repository", () => {
  it("cites seed 000 by sections docs/REQUIREMENTS.md has", () => {
    const sections = new Set(headings.get("REQUIREMENTS.md")!.map((h) => /^§(\d+) /.exec(h)?.[1]).filter(Boolean));
    expect([...sections].map(Number).sort((a, b) => a - b)).toEqual([...Array(13).keys()].map((i) => i + 1));
    const cited: string[] = [];
    for (const [file, text] of texts) {
      for (const m of text.matchAll(/seed 000 §(\d+)/g)) {
        cited.push(m[1]);
        expect(sections.has(m[1]), `${file}: seed 000 §${m[1]}`).toBe(true);
      }
    }
    expect(cited.length).toBeGreaterThan(20);
  });

  it("cites no source document the repository does not hold", () => {
    for (const [file, text] of texts) {
      expect(text, file).not.toMatch(/seed 00[1-9]|\.\.\/shared\b|seeds\//);
    }
  });

  it("names only headings that exist when it quotes a section of a doc", () => {
    let checked = 0;
    for (const [file, text] of texts) {
      for (const m of text.matchAll(/\b([A-Z]+\.md) "([^"]+)"/g)) {
        const [, doc, heading] = m;
        const known = headings.get(doc);
        if (!known) continue;
        checked++;
        expect(known.some((h) => names(h, heading)), `${file}: ${doc} "${heading}"`).toBe(true);
      }
    }
    expect(checked).toBeGreaterThan(50);
  });
});
