import { defineConfig } from "vitest/config";

// Tiers (see DESIGN.md "Testing tiers"): test/unit (Pulumi mocks, pure functions),
// test/host (real tools on this machine: sshd, sqlite3, systemd-analyze, cloud-init schema),
// test/vm (a real Debian VM under qemu). `npm test` runs all of them.
export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
