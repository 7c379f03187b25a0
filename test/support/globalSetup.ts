// Once per vitest run, in its main process: removes the run's shared directory at the end
// (vitest.config.mts, KEEL_TEST_RUN_DIR: the test keys and the first-boot snapshots, ~1 GiB each),
// and, at the start, those of earlier runs whose vitest process is gone (a killed run).
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestProject } from "vitest/node";

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export default function setup(project: TestProject): () => void {
  for (const name of fs.readdirSync(tmpdir())) {
    const pid = Number(/^keel-test-run-(\d+)$/.exec(name)?.[1]);
    if (pid && pid !== process.pid && !isAlive(pid)) fs.rmSync(join(tmpdir(), name), { recursive: true, force: true });
  }
  const runDir = project.config.env.KEEL_TEST_RUN_DIR;
  return () => {
    if (runDir && !process.env.KEEL_KEEP_TEST_RUN) fs.rmSync(runDir, { recursive: true, force: true });
  };
}
