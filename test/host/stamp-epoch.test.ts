// keel's backup names carry their time as 20261122T031700Z. The host tools turn it into seconds by
// arithmetic, not through date(1), whose accepted input forms differ between GNU coreutils and
// the Rust coreutils Ubuntu 26.04 ships (docs/CONFIG.md "Images"). keel-db-lib's keel_stamp_epoch
// (bash) and keel-health's stamp_epoch (Python) are checked here against GNU date.
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { TOOLS } from "../../plan/tools";
import { REPO } from "../support/stack";

/** A shell function's text, from its `name() {` line to the first `}` line. */
function shellFunction(file: string, name: string): string {
  const text = readFileSync(join(REPO, "scripts", "host", file), "utf8");
  const m = text.match(new RegExp(`^${name}\\(\\) \\{\\n[\\s\\S]*?\\n\\}$`, "m"));
  if (!m) throw new Error(`scripts/host/${file} has no function ${name}`);
  return m[0];
}

const LIB = shellFunction("keel-db-lib", "keel_stamp_epoch");

/** Runs `fn` on each stamp in one bash, printing one result (or "fail") per line. */
function convert(fn: string, name: string, stamps: string[]): string[] {
  const r = spawnSync("bash", ["-c", `${fn}\nwhile read -r t; do ${name} "$t" || echo fail; done`], { input: stamps.join("\n") + "\n", encoding: "utf8" });
  expect(r.stderr).toBe("");
  return r.stdout.trim().split("\n");
}

/**
 * keel-health's stamp_epoch on each stamp, printing one result (or "fail" for None) per line. The
 * script has no .py suffix: loaded by its path, its main not run; -I -B: no __pycache__ beside it.
 */
function convertHealth(stamps: string[]): string[] {
  const load = [
    "import importlib.machinery, importlib.util, sys",
    'loader = importlib.machinery.SourceFileLoader("keel_health", sys.argv[1])',
    'spec = importlib.util.spec_from_loader("keel_health", loader)',
    "health = importlib.util.module_from_spec(spec)",
    "loader.exec_module(health)",
    "for t in sys.stdin.read().splitlines():",
    "    at = health.stamp_epoch(t)",
    '    print("fail" if at is None else at)',
  ].join("\n");
  const r = spawnSync("python3", ["-I", "-B", "-c", load, join(REPO, TOOLS.health)], { input: stamps.join("\n") + "\n", encoding: "utf8" });
  expect(r.stderr).toBe("");
  expect(r.status).toBe(0);
  return r.stdout.trim().split("\n");
}

/** What GNU date makes of the same stamps. */
function gnuDate(stamps: string[]): string[] {
  const iso = stamps.map((t) => `${t.slice(0, 4)}-${t.slice(4, 6)}-${t.slice(6, 8)}T${t.slice(9, 11)}:${t.slice(11, 13)}:${t.slice(13, 15)}Z`);
  const r = spawnSync("date", ["-u", "-f", "-", "+%s"], { input: iso.join("\n") + "\n", encoding: "utf8" });
  expect(r.status).toBe(0);
  return r.stdout.trim().split("\n");
}

// Leap days, century years and 4,000 random seconds from 1970 to 2199; and what is not a stamp.
const FIXED = ["19700101T000000Z", "20000229T235959Z", "20240229T120000Z", "21000228T235959Z", "21000301T000000Z", "20261231T235959Z", "20270101T000000Z"];
let seed = 20261205;
const RANDOM = Array.from({ length: 4000 }, () => {
  seed = (seed * 1103515245 + 12345) % 2 ** 31;
  return new Date(Math.floor((seed / 2 ** 31) * 7258118400) * 1000).toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
});
const STAMPS = [...FIXED, ...RANDOM];
const BAD = ["2026-11-22T03:17:00Z", "20261122T031700", "x", "20261122T0317000Z", "20261322T031700Z", "20261100T031700Z", "20261122T241700Z", "20261122T036000Z", "00001122T031700Z"];

const ALL = [...STAMPS, ...BAD];
/** Each converter's results for ALL, made once for the three tests. */
let bash: string[];
let python: string[];
beforeAll(() => {
  bash = convert(LIB, "keel_stamp_epoch", ALL);
  python = convertHealth(ALL);
});
const stamps = (results: string[]) => results.slice(0, STAMPS.length);
const bad = (results: string[]) => results.slice(STAMPS.length);

describe("a backup name's time in seconds, without date(1)", () => {
  it("is the same function in keel-db-lib (bash) and keel-health (Python): the same seconds, the same refusals", () => {
    expect(python).toEqual(bash);
  });

  it("agrees with GNU date over leap days, century years and 4,000 random seconds from 1970 to 2199", () => {
    const date = gnuDate(STAMPS);
    expect(stamps(bash)).toEqual(date);
    expect(stamps(python)).toEqual(date);
  });

  it("refuses what is not a stamp", () => {
    expect(bad(bash)).toEqual(BAD.map(() => "fail"));
    expect(bad(python)).toEqual(BAD.map(() => "fail"));
  });
});
