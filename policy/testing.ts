/**
 * Runs a policy the way the engine would, without the engine: builds the args @pulumi/policy hands a
 * validation (props behind the same unknown-checking proxy, so reading a value that is unknown during
 * preview throws just as it would there) and collects the violations. Used by the unit tests.
 */
import { unknownCheckingProxy } from "@pulumi/policy";
import * as pulumi from "@pulumi/pulumi";
import type {
  PolicyResource,
  PolicyResourceOptions,
  ResourceValidationArgs,
  ResourceValidationPolicy,
  StackValidationArgs,
  StackValidationPolicy,
} from "@pulumi/policy";

/** A resource as a policy sees it: plain inputs, its options, its URN. */
export interface PlainResource {
  type: string;
  name: string;
  urn: string;
  props: Record<string, unknown>;
  opts: { protect?: boolean; ignoreChanges?: string[]; additionalSecretOutputs?: string[] };
}

/** Thrown by `notApplicable`, as @pulumi/policy does, so a test can tell "skipped" from "passed". */
export class NotApplicable extends Error {}

function options(r: PlainResource): PolicyResourceOptions {
  return {
    protect: r.opts.protect === true,
    ignoreChanges: r.opts.ignoreChanges ?? [],
    aliases: [],
    customTimeouts: { createSeconds: 0, updateSeconds: 0, deleteSeconds: 0 },
    additionalSecretOutputs: r.opts.additionalSecretOutputs ?? [],
  };
}

/** What @pulumi/policy's isType compares: the resource class's type token. */
function isType(r: PlainResource, cls: unknown): boolean {
  return (cls as { __pulumiType?: string }).__pulumiType === r.type;
}

const notApplicable = (reason?: string): never => {
  throw new NotApplicable(reason);
};

export function resourceArgs(r: PlainResource): ResourceValidationArgs {
  const props = unknownCheckingProxy(r.props) as Record<string, unknown>;
  return {
    type: r.type,
    name: r.name,
    urn: r.urn,
    props,
    opts: options(r),
    stackTags: new Map(),
    isType: (cls) => isType(r, cls),
    asType: (cls) => (isType(r, cls) ? props : undefined) as never,
    getConfig: <T extends object>() => ({}) as T,
    notApplicable,
  };
}

export function stackArgs(resources: PlainResource[]): StackValidationArgs {
  const policyResources: PolicyResource[] = resources.map((r) => ({
    type: r.type,
    name: r.name,
    urn: r.urn,
    props: unknownCheckingProxy(r.props) as Record<string, unknown>,
    opts: options(r),
    dependencies: [],
    propertyDependencies: {},
    isType: (cls) => isType(r, cls),
    asType: () => undefined,
  }));
  return { resources: policyResources, stackTags: new Map(), getConfig: <T extends object>() => ({}) as T, notApplicable };
}

/** A resource registered by a Pulumi program (e.g. under mocks), as a policy would see it. */
export async function plainResource(r: {
  type: string;
  name: string;
  inputs: Record<string, unknown>;
  opts: { protect?: boolean; ignoreChanges?: string[]; additionalSecretOutputs?: string[] };
  resource: pulumi.Resource;
}): Promise<PlainResource> {
  const [inputs, urn] = await Promise.all([settle(r.inputs), settle(r.resource.urn)]);
  return {
    type: r.type,
    name: r.name,
    urn,
    // The engine hands a policy plain values: secrets unwrapped, undefined properties dropped.
    props: JSON.parse(JSON.stringify(inputs)) as Record<string, unknown>,
    opts: { protect: r.opts.protect, ignoreChanges: r.opts.ignoreChanges, additionalSecretOutputs: r.opts.additionalSecretOutputs },
  };
}

function settle<T>(value: pulumi.Input<T>): Promise<T> {
  return new Promise((resolve) => pulumi.output(value).apply((v) => resolve(v as T)));
}

/** The violations a resource policy reports for one resource. */
export async function resourceViolations(policy: ResourceValidationPolicy, r: PlainResource): Promise<string[]> {
  const found: string[] = [];
  for (const validate of [policy.validateResource ?? []].flat()) await validate(resourceArgs(r), (m) => found.push(m));
  return found;
}

/** The violations a stack policy reports for a stack of resources. */
export async function stackViolations(policy: StackValidationPolicy, resources: PlainResource[]): Promise<string[]> {
  const found: string[] = [];
  await policy.validateStack(stackArgs(resources), (m) => found.push(m));
  return found;
}

/** Every violation of every policy, as "policy-name: message". */
export async function allViolations(policies: Array<ResourceValidationPolicy | StackValidationPolicy>, resources: PlainResource[]): Promise<string[]> {
  const found: string[] = [];
  for (const policy of policies) {
    if ("validateStack" in policy) {
      found.push(...(await stackViolations(policy, resources)).map((m) => `${policy.name}: ${m}`));
    } else {
      for (const r of resources) found.push(...(await resourceViolations(policy, r)).map((m) => `${policy.name}: ${r.name}: ${m}`));
    }
  }
  return found;
}
