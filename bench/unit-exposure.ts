// Sandbox benchmark (issues 3, 4, 5): renders the systemd units keel installs for a stack and prints
// the overall exposure `systemd-analyze security --offline=true` gives each, the way the host tests
// measure them (test/host/engine-unit.test.ts, db-wiring, health). Asserts nothing; the live figures
// on a VM come from the VM tests (test/vm/engine.test.ts, database, health print theirs).
//
// Usage: npx ts-node --transpile-only bench/unit-exposure.ts [prod|staging ...]   (default: both)
// Exit: 0 figures printed; 1 systemd-analyze failed to rate a unit.
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseConfig } from "../config";
import { backupServiceName, renderBackupService } from "../plan/database";
import { renderUnit } from "../plan/engine";
import { HEALTH_SERVICE, renderHealthService } from "../plan/health";
import { hostPaths } from "../plan/layout";
import { stackConfig } from "../test/support/stack";

function exposure(file: string): string {
  const r = spawnSync("systemd-analyze", ["security", "--offline=true", "--threshold=100", file], { encoding: "utf8" });
  const m = /Overall exposure level for \S+: (\d+\.\d+ \S+)/.exec(r.stdout + r.stderr);
  if (!m) throw new Error(`systemd-analyze security could not rate ${file}:\n${r.stdout}${r.stderr}`);
  return m[1];
}

function main(): void {
  const stacks = process.argv.slice(2).length ? process.argv.slice(2) : ["prod", "staging"];
  const dir = mkdtempSync(join(tmpdir(), "keel-exposure-"));
  try {
    for (const stack of stacks) {
      const { raw, secretKeys } = stackConfig(stack);
      const cfg = parseConfig(raw, (k) => secretKeys.includes(k));
      const units: Record<string, string> = {
        [hostPaths(cfg).unit]: renderUnit(cfg),
        [backupServiceName(cfg)]: renderBackupService(cfg),
        [HEALTH_SERVICE]: renderHealthService(cfg),
      };
      console.log(`== ${stack}: systemd-analyze security --offline=true (lower is better; keel's ceiling for the engine is 1.5)`);
      for (const [name, content] of Object.entries(units)) {
        const file = join(dir, `${stack}-${name}`);
        writeFileSync(file, content);
        console.log(`${name.padEnd(24)} ${exposure(file)}`);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

try {
  main();
} catch (err) {
  console.error(`bench/unit-exposure: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
}
