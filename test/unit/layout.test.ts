// The layout says what runs where (docs/DESIGN.md "Repository layout"): scripts/host/ holds exactly
// the tools keel installs, each under its installed name; the TypeScript folders import each other
// one way only.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { TOOL_NAMES, TOOLS } from "../../plan/tools";
import { REPO } from "../support/stack";

describe("scripts/host", () => {
  it("holds exactly keel's host tools, each named as installed, executable, with an interpreter line", () => {
    const files = readdirSync(join(REPO, "scripts", "host")).filter((f) => f !== "__pycache__").sort();
    expect(files).toEqual(TOOL_NAMES.map((t) => `keel-${t}`).sort());
    // keel-db-lib is the library the DB tools source (installed 0755 like the rest, never run alone).
    expect(readFileSync(join(REPO, TOOLS["db-lib"]), "utf8")).toMatch(/^# shellcheck shell=bash\n/);
    for (const t of TOOL_NAMES.filter((n) => n !== "db-lib")) {
      const path = join(REPO, TOOLS[t]);
      expect(statSync(path).mode & 0o111, TOOLS[t]).not.toBe(0);
      expect(readFileSync(path, "utf8"), TOOLS[t]).toMatch(/^#!(\/bin\/bash|\/usr\/bin\/env bash|\/usr\/bin\/python3 -I|\/usr\/bin\/env python3)\n/);
    }
  });
});

/** The program's own TypeScript files outside the tests, by folder ("." for the root). */
function programFiles(dir = REPO): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return ["node_modules", ".git", "test", "fixtures", ".keel", "out", "bin"].includes(e.name) ? [] : programFiles(path);
    return e.name.endsWith(".ts") ? [path] : [];
  });
}

/** A file's folder, or for a file at the root (index.ts, config.ts) the file itself. */
const folderOf = (file: string) => relative(REPO, file).split("/")[0].replace(/\.ts$/, "");

describe("the folders' imports", () => {
  it("form no cycle: no folder imports a folder that imports it", () => {
    const edges = new Map<string, Set<string>>();
    for (const file of programFiles()) {
      const from = folderOf(file);
      for (const m of readFileSync(file, "utf8").matchAll(/^(?:import|export)[^;]*? from "(\.[^"]+)"/gm)) {
        const to = folderOf(resolve(dirname(file), m[1]) + ".ts");
        if (to !== from) (edges.get(from) ?? edges.set(from, new Set()).get(from)!).add(to);
      }
    }
    const cycles: string[] = [];
    const reach = (start: string, at: string, path: string[]): void => {
      for (const next of edges.get(at) ?? []) {
        if (next === start) cycles.push([...path, next].join(" -> "));
        else if (!path.includes(next)) reach(start, next, [...path, next]);
      }
    };
    for (const folder of edges.keys()) reach(folder, folder, [folder]);
    expect(cycles).toEqual([]);
    // The two folders the layout is about.
    expect([...(edges.get("plan") ?? [])]).not.toContain("cloud-init");
    expect([...(edges.get("cloud-init") ?? [])]).toContain("plan");
  });
});
