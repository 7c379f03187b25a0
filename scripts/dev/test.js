#!/usr/bin/env node
// @ts-check
/**
 * Every test tier, as `npm test` runs them after the set-up: the type check, the unit and host
 * tiers (one vitest run) and the VM tier side by side from the start, because the VM tier's first
 * boots are the longest path and the other tiers fit beside them. The VM tier's output streams as
 * it comes; the others' is printed whole when they end. At the end: each tier's wall time and
 * each test file's, slowest first (also in .keel/test-timings.json), then the exit status: 0 when
 * every tier passed.
 *
 *   node scripts/dev/test.js            (npm test runs it; npm run test:unit|host|vm run one tier)
 */
"use strict";
const { spawn } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");

const REPO = path.join(__dirname, "..", "..");
const OUT = path.join(REPO, ".keel");
const VITEST = path.join(REPO, "node_modules", ".bin", "vitest");
const REPORTER = path.join(__dirname, "file-times-reporter.mjs");

/**
 * @typedef {{ name: string, command: string[], stream: boolean, report?: string }} Tier
 * @typedef {{ file: string, seconds: number, passed: boolean }} FileTime
 * @typedef {{ name: string, code: number, seconds: number, files: FileTime[] }} TierResult
 */

/** @type {Tier[]} */
const TIERS = [
  { name: "typecheck", command: [path.join(REPO, "node_modules", ".bin", "tsc"), "--noEmit"], stream: false },
  { name: "unit+host", command: [VITEST, "run", "test/unit", "test/host"], stream: false, report: "vitest-unit-host.json" },
  // Two VM files at a time on the 2-core machine: TCG is CPU-bound, and four at a time took longer
  // (43 min against 39) and starved guests past sshd's LoginGraceTime (docs/VM.md "vCPUs").
  { name: "vm", command: [VITEST, "run", "test/vm", "--maxWorkers=2"], stream: true, report: "vitest-vm.json" },
];

/**
 * Per-file wall times, as scripts/dev/file-times-reporter.mjs wrote them.
 * @param {string} file
 * @returns {FileTime[]}
 */
function fileTimes(file) {
  try {
    /** @type {FileTime[]} */
    const files = JSON.parse(fs.readFileSync(file, "utf8"));
    return files.map((f) => ({ ...f, file: path.relative(REPO, f.file) }));
  } catch {
    return [];
  }
}

/**
 * @param {Tier} tier
 * @returns {Promise<TierResult>}
 */
function run(tier) {
  const started = Date.now();
  const report = tier.report ? path.join(OUT, tier.report) : undefined;
  const times = report ? report.replace(/\.json$/, ".times.json") : undefined;
  const args = tier.command.slice(1).concat(report ? ["--reporter=default", "--reporter=json", `--outputFile.json=${report}`, `--reporter=${REPORTER}`] : []);
  const child = spawn(tier.command[0], args, {
    cwd: REPO,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, FORCE_COLOR: process.stdout.isTTY ? "1" : "0", ...(times ? { KEEL_FILE_TIMES: times } : {}) },
  });
  /** @type {Buffer[]} */
  const output = [];
  const take = (/** @type {Buffer} */ chunk) => (tier.stream ? process.stdout.write(chunk) : output.push(chunk));
  child.stdout.on("data", take);
  child.stderr.on("data", take);
  return new Promise((resolve) => {
    child.on("close", (code, signal) => {
      const seconds = (Date.now() - started) / 1000;
      if (!tier.stream) process.stdout.write(`\n===== ${tier.name} (${seconds.toFixed(0)} s) =====\n${Buffer.concat(output).toString()}`);
      process.stdout.write(`\n===== ${tier.name}: ${code === 0 ? "passed" : `FAILED (${signal ?? `exit ${code}`})`} in ${seconds.toFixed(0)} s =====\n`);
      resolve({ name: tier.name, code: code ?? 1, seconds, files: times ? fileTimes(times) : [] });
    });
  });
}

/**
 * The timings table printed at the end.
 * @param {TierResult[]} results
 * @param {number} totalSeconds
 */
function summary(results, totalSeconds) {
  const lines = [`npm test: ${(totalSeconds / 60).toFixed(1)} min wall (${totalSeconds.toFixed(0)} s); the tiers ran side by side`];
  for (const r of results) lines.push(`  ${r.name.padEnd(10)} ${r.seconds.toFixed(0).padStart(5)} s  ${r.code === 0 ? "passed" : "FAILED"}`);
  const files = results.flatMap((r) => r.files.map((f) => ({ ...f, tier: r.name }))).sort((a, b) => b.seconds - a.seconds);
  lines.push("  test files, slowest first:");
  for (const f of files) lines.push(`    ${f.seconds.toFixed(0).padStart(5)} s  ${f.passed ? "" : "FAILED "}${f.file}`);
  return lines.join("\n");
}

async function main() {
  fs.mkdirSync(OUT, { recursive: true });
  const started = Date.now();
  const results = await Promise.all(TIERS.map(run));
  const total = (Date.now() - started) / 1000;
  const text = summary(results, total);
  process.stdout.write(`\n${text}\n`);
  fs.writeFileSync(path.join(OUT, "test-timings.json"), `${JSON.stringify({ totalSeconds: total, tiers: results }, null, 2)}\n`);
  return results.every((r) => r.code === 0) ? 0 : 1;
}

main().then((code) => process.exit(code));
