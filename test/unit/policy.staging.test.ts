import { beforeAll, describe, expect, it } from "vitest";
import { SERVER, keelPolicies } from "../../policy/policies";
import { allViolations, plainResource, type PlainResource } from "../../policy/testing";
import { runProgram } from "../support/program";

// keel's real staging program under Pulumi mocks: disposable, so unprotected, and still compliant.
describe("the policy pack on keel's staging stack", () => {
  let resources: PlainResource[];
  const policies = keelPolicies();
  beforeAll(async () => {
    const run = await runProgram("staging");
    resources = await Promise.all(run.resources.map(plainResource));
  });

  it("passes every policy as keel builds it, unprotected and on a custom SSH port", async () => {
    const server = resources.find((r) => r.type === SERVER)!;
    expect(server.opts.protect).toBe(false);
    expect(server.props.backups).toBe(false);
    expect(await allViolations(policies, resources)).toEqual([]);
  });

  it("would fail as a prod stack: the prod rule reads the stack from the URN", async () => {
    const server = resources.find((r) => r.type === SERVER)!;
    const asProd = resources.map((r) => (r.type === SERVER ? { ...r, urn: r.urn.replace("urn:pulumi:staging::", "urn:pulumi:prod::") } : r));
    expect(await allViolations(policies, asProd)).toEqual([
      expect.stringContaining(
        `hcloud-prod-server-protected: ${server.name}: production server: Pulumi protect is off; deleteProtection is off at Hetzner; rebuildProtection is off at Hetzner; Hetzner backups are off`,
      ),
    ]);
  });
});
