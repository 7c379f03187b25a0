// The Pulumi CLI's own check of stack config against Pulumi.yaml's declarations, which runs before
// the program and which Pulumi's mock runtime never sees (test/support/pulumiCliConfig.ts states
// the rules, from pulumi/pulumi v3.248.0). A real operator's first `pulumi preview` must get past it.
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { configSchema } from "../../config";
import { cliConfigError, requiredDeclarations } from "../support/pulumiCliConfig";
import { REPO } from "../support/stack";

const PROJECT = join(REPO, "Pulumi.yaml");
const STACKS = readdirSync(REPO).filter((f) => /^Pulumi\.[^.]+\.yaml$/.test(f));
const tmp = mkdtempSync(join(tmpdir(), "keel-cli-config-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function file(name: string, text: string): string {
  writeFileSync(join(tmp, name), text);
  return join(tmp, name);
}

describe("the Pulumi CLI's config check, on the repository's stacks", () => {
  it("has stack files to check", () => {
    expect(STACKS).toEqual(expect.arrayContaining(["Pulumi.prod.yaml", "Pulumi.staging.yaml"]));
  });

  for (const stackFile of STACKS) {
    const stack = stackFile.split(".")[1];
    it(`lets ${stackFile} through: every declaration without a default is set, every typed value has its type`, () => {
      expect(cliConfigError(PROJECT, join(REPO, stackFile), stack)).toBeUndefined();
    });
  }

  it("declares without a default only keys that config.ts requires too (an optional key must not be declared)", () => {
    for (const key of requiredDeclarations(PROJECT)) {
      const schema = configSchema.shape[key as keyof typeof configSchema.shape] as z.ZodType | undefined;
      expect(schema, `Pulumi.yaml declares ${key}, which config.ts does not know`).toBeDefined();
      expect(schema instanceof z.ZodOptional || schema instanceof z.ZodDefault, `Pulumi.yaml requires ${key}, which config.ts does not`).toBe(false);
    }
  });
});

describe("the rule itself", () => {
  const project = file(
    "Pulumi.yaml",
    "name: keel\nruntime: nodejs\nconfig:\n  repoRef:\n    type: string\n  dbFile:\n    type: string\n  migrateFrom:\n    type: string\n  migrateFallbackDir:\n    type: string\n  sshPort:\n    type: integer\n    default: 22\n  hcloud:token:\n    value: x\n",
  );

  it("stops a stack that leaves declarations without a default unset, naming them all as declared, sorted", () => {
    // What every preview, up and destroy of keel's stacks printed before the three were undeclared.
    const stack = file("Pulumi.prod.yaml", "config:\n  keel:repoRef: 3f9c2a1d\n");
    expect(cliConfigError(project, stack, "prod")).toBe("validating stack config: Stack 'prod' is missing configuration values 'dbFile', 'migrateFallbackDir' and 'migrateFrom'");
    const one = file("Pulumi.one.yaml", "config:\n  keel:repoRef: x\n  keel:dbFile: a.db\n  keel:migrateFrom: /x\n");
    expect(cliConfigError(project, one, "one")).toBe("validating stack config: Stack 'one' is missing configuration value 'migrateFallbackDir'");
  });

  it("checks the declared type of a value the stack sets; a default or another namespace is never required", () => {
    const bad = file("Pulumi.bad.yaml", "config:\n  keel:repoRef: x\n  keel:dbFile: a\n  keel:migrateFrom: b\n  keel:migrateFallbackDir: c\n  keel:sshPort: twenty-two\n");
    expect(cliConfigError(project, bad, "bad")).toBe("validating stack config: Stack 'bad' with configuration key 'sshPort' must be of type 'integer'");
    const good = file("Pulumi.good.yaml", "config:\n  keel:repoRef: x\n  keel:dbFile: a\n  keel:migrateFrom: b\n  keel:migrateFallbackDir: c\n  keel:sshPort: 2222\n");
    expect(cliConfigError(project, good, "good")).toBeUndefined();
  });
});
