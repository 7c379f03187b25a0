import * as hcloud from "@pulumi/hcloud";
import * as pulumi from "@pulumi/pulumi";
import type { KeelConfig } from "../config";
import { IMAGE_FACTS, type Image } from "../images";
import { hostPaths } from "../plan/layout";

/**
 * What the last `pulumi up` of this stack left on its server, as its stack outputs say (index.ts
 * exports them): the ports sshd, UFW and the Hetzner firewall serve SSH on, and the deploy user
 * every step logs in as. `sshPorts` is absent from stacks last deployed by a keel without
 * keel:sshPortNext; `sshPort` then is the one port.
 */
export interface LastUp {
  readonly sshPort?: unknown;
  readonly sshPorts?: unknown;
  readonly deployUser?: unknown;
  readonly image?: unknown;
  readonly location?: unknown;
  /** The host paths (hostPaths) the last up placed: the live DB among them. */
  readonly paths?: unknown;
}

/**
 * Raised when a change would lock `pulumi up` out of the server or replace it with its data;
 * printed without a stack trace.
 */
export class ConnectionChangeError extends pulumi.RunError {
  constructor(readonly problems: string[]) {
    super(`keel: refused before anything changed (${problems.length} problem${problems.length === 1 ? "" : "s"}):\n` + problems.map((p) => `  - ${p}`).join("\n"));
    this.name = "ConnectionChangeError";
  }
}

function servedPorts(last: LastUp): number[] {
  if (Array.isArray(last.sshPorts) && last.sshPorts.every((p) => typeof p === "number")) return last.sshPorts as number[];
  return typeof last.sshPort === "number" ? [last.sshPort] : [];
}

/**
 * Changes that would lock every later `pulumi up` out of a server that exists. Every step connects
 * with keel:sshPort and keel:deployUser, and nothing orders the Hetzner firewall after the steps
 * (they do not depend on it), so a new port is closed in the firewall while sshd and UFW still
 * serve the old one, and a new deploy user has no login on the host. A stack with no last up (a new
 * stack: the CLI makes it with an empty checkpoint) has nothing to lose.
 */
export function connectionChangeProblems(
  cfg: Pick<KeelConfig, "sshPort" | "sshPortNext" | "deployUser" | "image" | "location" | "appName" | "dbFile" | "pythonVersion">,
  last: LastUp,
): string[] {
  const problems: string[] = [];
  const served = servedPorts(last);
  if (served.length && !served.includes(cfg.sshPort)) {
    const old = served[0];
    problems.push(
      `keel:sshPort: the server serves SSH on ${served.join(" and ")} (the last pulumi up's stack outputs), not on ${cfg.sshPort}: this up would connect on ${cfg.sshPort} before sshd listens there, and close ${served.join(" and ")} in the Hetzner firewall — everyone locked out. ` +
        `fix: move it in two ups: pulumi config set keel:sshPort ${old} && pulumi config set keel:sshPortNext ${cfg.sshPort} && pulumi up (both ports served), then pulumi config set keel:sshPort ${cfg.sshPort} && pulumi config rm keel:sshPortNext && pulumi up (${old} closed); docs/LIFECYCLE.md`,
    );
  }
  if (typeof last.deployUser === "string" && last.deployUser !== cfg.deployUser) {
    problems.push(
      `keel:deployUser: the server's deploy user is ${JSON.stringify(last.deployUser)} (the last pulumi up's stack outputs); every step logs in as keel:deployUser, and keel never renames or adds a login on a live server, so ${JSON.stringify(cfg.deployUser)} would lock every later up out. ` +
        `fix: pulumi config set keel:deployUser ${last.deployUser}; to change it, replace the server (docs/RUNBOOK.md "Replace the server"): once the stack's server is gone at Hetzner the new name is let through; docs/LIFECYCLE.md`,
    );
  }
  // keel:appName and keel:dbFile name the live DB's path (and the unit, its user, its directories):
  // a new name deploys a second engine beside the first, on an empty DB, and leaves the old one.
  const wasDb = last.paths !== null && typeof last.paths === "object" ? (last.paths as { db?: unknown }).db : undefined;
  const db = hostPaths(cfg).db;
  if (typeof wasDb === "string" && wasDb !== db) {
    problems.push(
      `keel:appName / keel:dbFile: the live database is ${wasDb} (the last pulumi up's stack outputs); this config names ${db}, so the engine would start there on an empty database while the old unit and its data stay behind. ` +
        `fix: set keel:appName and keel:dbFile back; keel does not rename a service or move its DB on a live server: replace the server and migrate the DB onto it (docs/RUNBOOK.md "Replace the server")`,
    );
  }
  // Hetzner replaces a server whose image or location changes, and the replacement boots with the
  // old server's user-data (it is in ignoreChanges, and the engine gives a replacement the ignored
  // property's old value: pulumi/pulumi v3.248.0 pkg/resource/deploy/step_generator.go
  // processIgnoreChanges), with an empty disk: the DB is gone.
  for (const key of ["image", "location"] as const) {
    const was = last[key];
    if (typeof was === "string" && was !== cfg[key]) {
      problems.push(
        `keel:${key}: the server was created with ${key} ${JSON.stringify(was)} (the last pulumi up's stack outputs); ${JSON.stringify(cfg[key])} would make Hetzner replace it on this up, with the old server's user-data and an empty disk (the database gone). ` +
          `fix: ${setBack(cfg, key, was)}; to move, replace the server (docs/RUNBOOK.md "Replace the server": a verified snapshot of the DB, then the server destroyed on its own, then up): once the stack's server is gone at Hetzner the new ${key} is let through`,
      );
    }
  }
  return problems;
}

/**
 * The commands that set `key` back to what the server has. keel:pythonVersion must be the image's
 * Python (config.ts), so going back to an image takes its Python back too.
 */
function setBack(cfg: Pick<KeelConfig, "pythonVersion">, key: "image" | "location", was: string): string {
  const python = key === "image" ? IMAGE_FACTS[was as Image]?.python : undefined;
  return `pulumi config set keel:${key} ${was}` + (python && python !== cfg.pythonVersion ? ` && pulumi config set keel:pythonVersion ${python}` : "");
}

/**
 * A server of an older keel's stack (its last up recorded no image or location): what Hetzner says
 * the live server was created with, against the config. Hetzner's server list gives the image's
 * name for a named (official) image and the location's name
 * (hetznercloud/terraform-provider-hcloud internal/server/resource.go getServerAttributes, which
 * pulumi-hcloud bridges as getServers' `image` and `location`: @pulumi/hcloud 1.41.0
 * types/output.d.ts GetServersServer); a server whose image has no name (a snapshot), or is gone,
 * is not compared. A server is this stack's when it carries this project's label or, made before
 * keel labelled the project (every server of a stack whose outputs lack image and location),
 * this appName's `service` label: appName cannot have changed since (the guard compares it with the
 * last up's `paths`).
 */
export function liveServerProblems(
  cfg: Pick<KeelConfig, "image" | "location" | "appName" | "pythonVersion">,
  servers: ReadonlyArray<{ name: string; image?: string; location?: string; labels: Record<string, string> }>,
  project: string,
): string[] {
  const problems: string[] = [];
  const ours = (s: { labels: Record<string, string> }) => (s.labels.project === undefined ? s.labels.service === cfg.appName : s.labels.project === project);
  for (const server of servers.filter(ours)) {
    for (const key of ["image", "location"] as const) {
      const was = server[key];
      if (typeof was === "string" && was !== "" && !/^[0-9]+$/.test(was) && was !== cfg[key]) {
        problems.push(
          `keel:${key}: the stack's server ${server.name} runs ${key} ${JSON.stringify(was)} at Hetzner (its last pulumi up, by an older keel, recorded none); ${JSON.stringify(cfg[key])} would make Hetzner replace it on this up, with the old server's user-data and an empty disk (the database gone). ` +
            `fix: ${setBack(cfg, key, was)}; to move, replace the server (docs/RUNBOOK.md "Replace the server")`,
        );
      }
    }
  }
  return problems;
}

/**
 * Hetzner's label selector for the stack's server (components/keel.ts labels it so): the labels no
 * config change moves, so a new keel:appName still finds the server named by the old one.
 */
export function serverSelector(labels: Record<string, string>): string {
  return Object.entries(labels)
    .map(([k, v]) => `${k}=${v}`)
    .join(",");
}

/**
 * Resolves once the stack config may reach the server; fails the program (so the engine changes
 * nothing that waits on it) with ConnectionChangeError otherwise. Reads the last up's outputs
 * through a StackReference to this very stack: the engine's builtin provider reads them from the
 * backend's latest checkpoint (pulumi/pulumi v3.248.0 pkg/resource/deploy/builtins.go
 * readStackReference, pkg/backend/backend.go GetStackOutputs; a new stack's checkpoint is empty:
 * pkg/backend/diy/backend.go CreateStack, pkg/backend/diy/state.go getSnapshotStackOutputs), and the
 * root stack's outputs change only when the program ends, so during this up they are the last
 * up's. Read steps run in previews too (pkg/resource/deploy/step.go ReadStep.Apply), so
 * `pulumi preview` refuses the same change. Only when they differ does it ask Hetzner whether the stack's server still exists (after
 * `pulumi destroy --target` of the server, the outputs still name the old values), or when the last
 * up was an older keel's, which exported no image and location: then the live server's are compared.
 */
export function connectionGuard(
  name: string,
  cfg: KeelConfig,
  labels: Record<string, string>,
  opts: pulumi.CustomResourceOptions,
): pulumi.Output<true> {
  // The DIY backend's organization is always "organization", and its legacy layout parses a
  // reference with tokens.ParseStackName, which refuses a "/"; both of its layouts take the bare
  // stack name, the project-scoped one inferring the current project (pulumi/pulumi v3.248.0
  // pkg/backend/diy/store.go ParseReference). The Cloud backend takes org/project/stack.
  const org = pulumi.getOrganization();
  const self = org === "organization" ? pulumi.getStack() : `${org}/${pulumi.getProject()}/${pulumi.getStack()}`;
  const lastUp = new pulumi.StackReference(name, { name: self }, opts);
  const names = ["sshPort", "sshPorts", "deployUser", "image", "location", "paths"] as const;
  return pulumi.all(names.map((n) => lastUp.getOutput(n))).apply(async (values) => {
    const last: LastUp = Object.fromEntries(names.map((n, i) => [n, values[i]]));
    const problems = connectionChangeProblems(cfg, last);
    // A stack last deployed by a keel that did not export image and location: Hetzner says what
    // its server was created with (a new stack has no last up, and nothing to lose).
    const olderKeel = Object.values(last).some((v) => v !== undefined) && (typeof last.image !== "string" || typeof last.location !== "string");
    if (!problems.length && !olderKeel) return true as const;
    const { servers } = await hcloud.getServers({ withSelector: serverSelector(labels) }, { parent: opts.parent });
    if (!servers.length) return true as const;
    const all = [...problems, ...(olderKeel ? liveServerProblems(cfg, servers, pulumi.getProject()) : [])];
    if (all.length) throw new ConnectionChangeError(all);
    return true as const;
  });
}
