// keel's backup names carry their time as 20261122T031700Z. The host tools turn it into seconds by
// arithmetic, not through date(1), whose accepted input forms differ between GNU coreutils and
// the Rust coreutils Ubuntu 26.04 ships (docs/CONFIG.md "Images"). Checked here against GNU date.
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { REPO } from "../support/stack";

/** A shell function's text, from its `name() {` line to the first `}` line. */
function shellFunction(file: string, name: string): string {
  const text = readFileSync(join(REPO, "scripts", file), "utf8");
  const m = text.match(new RegExp(`^${name}\\(\\) \\{\\n[\\s\\S]*?\\n\\}$`, "m"));
  if (!m) throw new Error(`scripts/${file} has no function ${name}`);
  return m[0];
}

const LIB = shellFunction("db-lib.sh", "keel_stamp_epoch");
const HEALTH = shellFunction("keel-health.sh", "stamp_epoch");

/** Runs `fn` on each stamp in one bash, printing one result (or "fail") per line. */
function convert(fn: string, name: string, stamps: string[]): string[] {
  const r = spawnSync("bash", ["-c", `${fn}\nwhile read -r t; do ${name} "$t" || echo fail; done`], { input: stamps.join("\n") + "\n", encoding: "utf8" });
  expect(r.stderr).toBe("");
  return r.stdout.trim().split("\n");
}

/** What GNU date makes of the same stamps. */
function gnuDate(stamps: string[]): string[] {
  const iso = stamps.map((t) => `${t.slice(0, 4)}-${t.slice(4, 6)}-${t.slice(6, 8)}T${t.slice(9, 11)}:${t.slice(11, 13)}:${t.slice(13, 15)}Z`);
  const r = spawnSync("date", ["-u", "-f", "-", "+%s"], { input: iso.join("\n") + "\n", encoding: "utf8" });
  expect(r.status).toBe(0);
  return r.stdout.trim().split("\n");
}

describe("a backup name's time in seconds, without date(1)", () => {
  it("is the same function in db-lib.sh and keel-health.sh", () => {
    expect(HEALTH.replace(/^stamp_epoch/, "keel_stamp_epoch")).toBe(LIB);
  });

  it("agrees with GNU date over leap days, century years and 4,000 random seconds from 1970 to 2199", () => {
    const fixed = ["19700101T000000Z", "20000229T235959Z", "20240229T120000Z", "21000228T235959Z", "21000301T000000Z", "20261231T235959Z", "20270101T000000Z"];
    let seed = 20261205;
    const random = Array.from({ length: 4000 }, () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return new Date(Math.floor((seed / 2 ** 31) * 7258118400) * 1000).toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
    });
    const stamps = [...fixed, ...random];
    expect(convert(LIB, "keel_stamp_epoch", stamps)).toEqual(gnuDate(stamps));
  });

  it("refuses what is not a stamp", () => {
    const bad = ["2026-11-22T03:17:00Z", "20261122T031700", "x", "20261122T0317000Z", "20261322T031700Z", "20261100T031700Z", "20261122T241700Z", "20261122T036000Z", "00001122T031700Z"];
    expect(convert(LIB, "keel_stamp_epoch", bad)).toEqual(bad.map(() => "fail"));
  });
});
