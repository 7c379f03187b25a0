import { sha256, stableJson } from "./hash";
import { readStatic } from "./static";
import { TOOLS, toolPath, type Tool } from "./tools";
import type { Bundle, SecretName, Step } from "./types";

const KEEL_PLACE = toolPath("place");

interface StepSpec {
  readonly name: string;
  readonly description: string;
  readonly command: string;
  readonly stdin?: string;
  readonly bundle?: Bundle;
  readonly secret?: Step["secret"];
  readonly timeoutSeconds?: number;
  /** Other inputs the step depends on (e.g. the bytes of the tool it runs): part of the hash only. */
  readonly dependsOnContent?: string[];
}

/** Builds a step and its content hash: the step re-runs exactly when one of these inputs changes. */
export function step(spec: StepSpec): Step {
  if (!/^[a-z][a-z0-9-]*$/.test(spec.name)) throw new Error(`step name ${JSON.stringify(spec.name)} must be kebab-case`);
  const { dependsOnContent, ...rest } = spec;
  const secretShape = spec.secret && { name: spec.secret.name, bundle: spec.secret.bundle("<secret>") };
  return {
    ...rest,
    timeoutSeconds: spec.timeoutSeconds ?? 300,
    hash: sha256(
      stableJson({ command: spec.command, stdin: spec.stdin ?? null, secret: secretShape ?? null, dependsOn: (dependsOnContent ?? []).map(sha256) }),
    ),
  };
}

/** A step that converges files (and their users and directories) through keel-place. */
export function placeStep(name: string, description: string, bundle: Bundle): Step {
  return step({ name, description, command: `sudo ${KEEL_PLACE}`, stdin: stableJson(bundle), bundle });
}

/** A step that places a secret file: the secret travels only on stdin, inside the bundle. */
export function secretPlaceStep(name: string, description: string, secret: SecretName, bundle: (value: string) => Bundle): Step {
  return step({ name, description, command: `sudo ${KEEL_PLACE}`, secret: { name: secret, bundle } });
}

function checkArgs(name: string, args: string[]): void {
  for (const a of args) {
    if (!/^[A-Za-z0-9_./:=@+,-]+$/.test(a)) throw new Error(`step ${name}: argument ${JSON.stringify(a)} would need shell quoting; keel refuses such arguments`);
  }
}

/**
 * A step that runs one of keel's scripts as the deploy user, sent on stdin so nothing needs to be
 * on the host first (the readiness gate runs before keel's tools are converged).
 */
export function scriptStep(name: string, description: string, script: string, args: string[], timeoutSeconds?: number): Step {
  checkArgs(name, args);
  return step({ name, description, command: ["bash", "-s", "--", ...args].join(" "), stdin: readStatic(script), timeoutSeconds });
}

/**
 * A step that runs an installed keel tool as root (`sudo keel-<tool>`; the deploy user's sudo is
 * limited to keel's tools). The tool's own bytes are part of the hash, so a changed script re-runs
 * the step.
 */
export function toolStep(name: string, description: string, tool: Tool, args: string[], opts: { stdin?: string; timeoutSeconds?: number } = {}): Step {
  checkArgs(name, args);
  return step({
    name,
    description,
    command: ["sudo", toolPath(tool), ...args].join(" "),
    stdin: opts.stdin,
    dependsOnContent: [readStatic(TOOLS[tool])],
    timeoutSeconds: opts.timeoutSeconds,
  });
}

/** Seconds the readiness step waits for cloud-init's first boot (TCG VMs take ~65 s, Hetzner ~60 s). */
export const READY_TIMEOUT_SECONDS = 900;

/** The first step: SSH answers with the pinned host key and cloud-init finished without errors. */
export function readinessStep(): Step {
  return scriptStep("ready", "wait for SSH and for cloud-init to finish the first boot without errors", "scripts/wait-ready.sh", [String(READY_TIMEOUT_SECONDS)], READY_TIMEOUT_SECONDS + 60);
}
