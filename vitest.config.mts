import { tmpdir } from "node:os";
import { join } from "node:path";
import { BaseSequencer, type TestSpecification } from "vitest/node";
import { defineConfig } from "vitest/config";

/**
 * The VM files, longest first: with two VMs at a time the long ones must not start last. Those
 * that first boot a VM of their own (Debian 13) or the run's Debian 12 test host (the first of the
 * others) start together; the rest resume from the run's snapshot of that first boot. The engine
 * file deploys the whole plan for the health file too (deployedTestHost), so health comes later.
 */
const VM_ORDER = ["hardening-trixie", "hardening", "engine", "database", "demo", "health", "vm-runner"];

class VmFirst extends BaseSequencer {
  async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    const rank = (f: TestSpecification) => {
      const m = /test\/vm\/([a-z0-9-]+)\.test\.ts$/.exec(f.moduleId);
      const i = m ? VM_ORDER.indexOf(m[1]) : -1;
      return i < 0 ? VM_ORDER.length : i;
    };
    return sorted.map((f, i) => ({ f, i })).sort((a, b) => rank(a.f) - rank(b.f) || a.i - b.i).map(({ f }) => f);
  }
}

// Tiers (see DESIGN.md "Testing tiers"): test/unit (Pulumi mocks, pure functions),
// test/host (real tools on this machine: sshd, sqlite3, systemd-analyze, cloud-init schema),
// test/vm (a real Debian VM under qemu). `npm test` runs all of them (scripts/dev/test.js).
export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Real tools (pip, sshd, sqlite3 on 1 GiB files) on a 2-core machine: generous, never a benchmark.
    testTimeout: 120_000,
    hookTimeout: 60_000,
    env: {
      // One directory per run, shared by its test files (its keys, its first-boot snapshots:
      // test/vm/support/keelVm.ts); test/support/globalSetup.ts removes it at the end.
      KEEL_TEST_RUN_DIR: process.env.KEEL_TEST_RUN_DIR ?? join(tmpdir(), `keel-test-run-${process.pid}`),
      // VMs that run side by side do better with one vCPU each under TCG (docs/VM.md).
      KEEL_VM_CPUS: process.env.KEEL_VM_CPUS ?? "1",
    },
    globalSetup: ["test/support/globalSetup.ts"],
    sequence: { sequencer: VmFirst },
  },
});
