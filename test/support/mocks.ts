import { createHash } from "node:crypto";
import * as pulumi from "@pulumi/pulumi";

/** A resource as the program registered it: inputs as the engine sees them, and its options. */
export interface Registered {
  readonly type: string;
  readonly name: string;
  readonly inputs: Record<string, unknown>;
  readonly opts: pulumi.CustomResourceOptions & pulumi.ComponentResourceOptions;
  readonly resource: pulumi.Resource;
}

// Test stand-ins for keys the tls provider would generate. Split so no private-key marker is in git.
const PEM = ["-----BEGIN", "OPENSSH PRIVATE KEY-----"].join(" ");
export const FAKE_PRIVATE_KEY = (role: string) => `${PEM}\n${Buffer.from(`fake ${role} private key`).toString("base64")}\n-----END OPENSSH PRIVATE KEY-----\n`;
export const FAKE_HOST_PUBLIC = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeHostKeyForTestsOnly00000000000000000000";
export const FAKE_DEPLOY_PUBLIC = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeDeployKeyForTestsOnly000000000000000000";
export const FAKE_HCLOUD_PUBLIC = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeHcloudKeyForTestsOnly000000000000000000";
const FAKE_PUBLIC = { host: FAKE_HOST_PUBLIC, deploy: FAKE_DEPLOY_PUBLIC, hcloud: FAKE_HCLOUD_PUBLIC } as const;

let nextId = 1000;

/**
 * What each local.Command prints, by resource name: a test sets the result its local step would
 * print on the operator's machine (the mock runs nothing).
 */
export const localCommandResults = new Map<string, string>();

/**
 * The backend's side of the stack, as a test sets it: the last up's stack outputs (what a
 * StackReference to the stack reads; a new stack's are empty) and, when a test expects keel to ask,
 * the servers Hetzner lists for the stack's labels (undefined: an invoke of getServers fails the test).
 */
export const backend: {
  lastUp: Record<string, unknown>;
  hetznerServers?: Array<{ id: number; name: string; image?: string; location?: string; labels: Record<string, string> }>;
  invokes: Array<{ token: string; args: Record<string, unknown> }>;
  /** Types in the order the engine was asked to register them (after their inputs resolved). */
  engineSaw: string[];
  /** When set, the StackReference's read waits for it (to see what registers before the check). */
  holdLastUp?: Promise<void>;
} = { lastUp: {}, hetznerServers: undefined, invokes: [], engineSaw: [] };

/** Outputs a provider would compute, for the resource types keel creates. */
function providerState(type: string, name: string, inputs: Record<string, unknown>): Record<string, unknown> {
  switch (type) {
    case "tls:index/privateKey:PrivateKey": {
      const role = name.endsWith("-host") ? "host" : name.endsWith("-hcloud") ? "hcloud" : "deploy";
      return { privateKeyOpenssh: FAKE_PRIVATE_KEY(role), publicKeyOpenssh: FAKE_PUBLIC[role] + "\n" };
    }
    case "random:index/randomId:RandomId": {
      // A real RandomId's hex is 2 digits per byte; a fixed value per name keeps the mock deterministic.
      const hex = createHash("sha256").update(name).digest("hex").slice(0, 2 * Number(inputs.byteLength));
      return { hex, b64Std: Buffer.from(hex, "hex").toString("base64") };
    }
    case "hcloud:index/primaryIp:PrimaryIp":
      return { ipAddress: inputs.type === "ipv4" ? "198.51.100.7" : "2001:db8:4f8::/64" };
    case "hcloud:index/server:Server":
      return { ipv6Address: "2001:db8:4f8::1", status: "running" };
    case "command:local:Command":
      return { stdout: localCommandResults.get(name) ?? "", stderr: "" };
    case "pulumi:pulumi:StackReference":
      return { outputs: { ...backend.lastUp }, secretOutputNames: [] };
    default:
      return {};
  }
}

/**
 * Installs Pulumi's mock runtime with the given config. Invokes are not mocked, except Hetzner's
 * server list when a test sets backend.hetznerServers: any other invoke fails the test.
 */
export async function installMocks(stack: string, config: Record<string, string>, secretKeys: string[], organization = "organization"): Promise<void> {
  pulumi.runtime.setAllConfig(config, secretKeys);
  await pulumi.runtime.setMocks(
    {
      async newResource(args) {
        backend.engineSaw.push(args.type);
        if (args.type === "pulumi:pulumi:StackReference" && backend.holdLastUp) await backend.holdLastUp;
        const id = args.custom === false ? undefined : String(nextId++);
        return { id, state: { ...args.inputs, ...providerState(args.type, args.name, args.inputs) } };
      },
      call(args) {
        backend.invokes.push({ token: args.token, args: args.inputs });
        if (args.token === "hcloud:index/getServers:getServers" && backend.hetznerServers) {
          // Hetzner's label selector, k=v terms joined by commas: a server matches all of them.
          const terms = String(args.inputs.withSelector ?? "").split(",").filter(Boolean).map((t) => t.split("="));
          return { id: "servers", servers: backend.hetznerServers.filter((s) => terms.every(([k, v]) => s.labels[k] === v)) };
        }
        throw new Error(`keel made an unmocked invoke: ${args.token}`);
      },
    },
    "keel",
    stack,
    false,
    // What the CLI passes for a DIY backend (pulumi/pulumi v3.248.0 pkg/backend/diy: "organization"),
    // unless a test plays the Cloud backend, which passes the stack's organization.
    organization,
  );
}

/**
 * Runs a program the way the Pulumi runtime does (inside the root stack resource), recording every
 * resource it registers with its inputs and options. Returns the stack outputs and the resources.
 */
export async function runInStack(program: () => Promise<Record<string, unknown>>): Promise<{ outputs: Record<string, unknown>; registered: Registered[] }> {
  const registered: Registered[] = [];
  let exports: Record<string, unknown> = {};
  await pulumi.runtime.runInPulumiStack(async () => {
    pulumi.runtime.registerStackTransformation((args) => {
      registered.push({ type: args.type, name: args.name, inputs: args.props, opts: args.opts, resource: args.resource });
      return undefined;
    });
    exports = await program();
    return exports;
  });
  return { outputs: exports, registered };
}

/** The value of an Output (or plain value), awaited. */
export function promiseOf<T>(value: pulumi.Input<T>): Promise<T> {
  return new Promise((resolve) => pulumi.output(value).apply((v) => resolve(v as T)));
}
