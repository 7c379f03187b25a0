import * as pulumi from "@pulumi/pulumi";
import { installMocks, promiseOf, runInStack, type Registered } from "./mocks";
import { stackConfig } from "./stack";

export interface ProgramRun {
  readonly resources: Registered[];
  /** The program's stack outputs (the exports of index.ts). */
  readonly outputs: Record<string, unknown>;
  byType(type: string): Registered[];
  one(type: string): Registered;
}

/**
 * Runs index.ts for a checked-in stack under Pulumi's mock runtime and waits until every resource
 * registration has settled. `secretOverrides` are set as with `pulumi config set --secret`. Call once
 * per test file: the Pulumi runtime is process-global.
 */
export async function runProgram(stack: string, overrides: Record<string, string> = {}, secretOverrides: Record<string, string> = {}): Promise<ProgramRun> {
  const { raw, secretKeys } = stackConfig(stack);
  await installMocks(stack, { ...raw, ...overrides, ...secretOverrides }, [...secretKeys, ...Object.keys(secretOverrides)]);
  const { outputs, registered: resources } = await runInStack(async () => ({ ...((await import("../../index")) as Record<string, unknown>) }));
  // Settle: wait for every output and every resource's URN.
  await Promise.all(Object.values(outputs).map((o) => (pulumi.Output.isInstance(o) ? promiseOf(o) : o)));
  await Promise.all(resources.map((r) => promiseOf(r.resource.urn)));
  return {
    resources,
    outputs,
    byType: (type) => resources.filter((r) => r.type === type),
    one(type) {
      const found = resources.filter((r) => r.type === type);
      if (found.length !== 1) throw new Error(`expected one ${type}, found ${found.length}`);
      return found[0];
    },
  };
}

/** Resolves an input property that may be an Output (or nested Outputs). */
export async function resolved<T = unknown>(value: unknown): Promise<T> {
  return promiseOf(pulumi.output(value as pulumi.Input<T>)) as Promise<T>;
}

/** The provider-assigned ID of a custom resource. */
export function idOf(r: Registered): Promise<string> {
  return promiseOf((r.resource as pulumi.CustomResource).id);
}

export async function isSecret(value: unknown): Promise<boolean> {
  return pulumi.Output.isInstance(value) ? pulumi.isSecret(value as pulumi.Output<unknown>) : false;
}
