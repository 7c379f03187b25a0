import { defineConfig } from "vitest/config";

// Tiers (see DESIGN.md "Testing tiers"): test/unit (Pulumi mocks, pure functions),
// test/host (real tools on this machine: sshd, sqlite3, systemd-analyze, cloud-init schema),
// test/vm (a real Debian VM under qemu). `npm test` runs all of them.
export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Real tools (pip, sshd, sqlite3 on 1 GiB files) on a 2-core machine: generous, never a benchmark.
    testTimeout: 120_000,
    hookTimeout: 60_000,
  },
});
