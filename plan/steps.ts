import { sha256, stableJson } from "./hash";
import { readStatic } from "./static";
import { TOOLS, toolPath, type Tool } from "./tools";
import type { Bundle, LocalStep, RemoteStep, SecretName, UploadStep } from "./types";

const KEEL_PLACE = toolPath("place");

interface StepSpec {
  readonly name: string;
  readonly description: string;
  readonly command: string;
  readonly stdin?: string;
  readonly bundle?: Bundle;
  readonly secret?: RemoteStep["secret"];
  readonly stdinFrom?: string;
  readonly timeoutSeconds?: number;
  /** Other inputs the step depends on (e.g. the bytes of the tool it runs): part of the hash only. */
  readonly dependsOnContent?: string[];
  readonly deleteCommand?: string;
}

/** Builds a step and its content hash: the step re-runs exactly when one of these inputs changes. */
export function step(spec: StepSpec): RemoteStep {
  checkName(spec.name);
  if (spec.stdinFrom !== undefined && (spec.stdin !== undefined || spec.secret)) throw new Error(`step ${spec.name}: stdinFrom excludes stdin and secret`);
  const { dependsOnContent, ...rest } = spec;
  const secretShape = spec.secret && { name: spec.secret.name, bundle: spec.secret.bundle("<secret>") };
  const dependsOn = (dependsOnContent ?? []).map(sha256);
  return {
    ...rest,
    timeoutSeconds: spec.timeoutSeconds ?? 300,
    unseenHash: sha256(stableJson({ dependsOn })),
    hash: sha256(
      stableJson({
        command: spec.command,
        stdin: spec.stdin ?? null,
        secret: secretShape ?? null,
        dependsOn,
        // Only when set, so the hashes of every other step stay what they were.
        ...(spec.stdinFrom === undefined ? {} : { stdinFrom: spec.stdinFrom }),
        ...(spec.deleteCommand === undefined ? {} : { deleteCommand: spec.deleteCommand }),
      }),
    ),
  };
}

function checkName(name: string): void {
  if (!/^[a-z][a-z0-9-]*$/.test(name)) throw new Error(`step name ${JSON.stringify(name)} must be kebab-case`);
}

/** A step that converges files (and their users and directories) through keel-place. */
export function placeStep(name: string, description: string, bundle: Bundle): RemoteStep {
  return step({ name, description, command: `sudo ${KEEL_PLACE}`, stdin: stableJson(bundle), bundle });
}

/** A step that places a secret file: the secret travels only on stdin, inside the bundle. */
export function secretPlaceStep(name: string, description: string, secret: SecretName, bundle: (value: string) => Bundle, timeoutSeconds?: number): RemoteStep {
  return step({ name, description, command: `sudo ${KEEL_PLACE}`, secret: { name: secret, bundle }, timeoutSeconds });
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
export function scriptStep(name: string, description: string, script: string, args: string[], timeoutSeconds?: number): RemoteStep {
  checkArgs(name, args);
  return step({ name, description, command: ["bash", "-s", "--", ...args].join(" "), stdin: readStatic(script), timeoutSeconds });
}

/**
 * A step that runs an installed keel tool as root (`sudo keel-<tool>`; the deploy user's sudo is
 * limited to keel's tools). The tool's own bytes are part of the hash, so a changed script re-runs
 * the step.
 */
export function toolStep(
  name: string,
  description: string,
  tool: Tool,
  args: string[],
  opts: { stdin?: string; stdinFrom?: string; timeoutSeconds?: number; alsoTools?: Tool[] } = {},
): RemoteStep {
  checkArgs(name, args);
  return step({
    name,
    description,
    command: ["sudo", toolPath(tool), ...args].join(" "),
    stdin: opts.stdin,
    stdinFrom: opts.stdinFrom,
    // alsoTools: the other tools this one runs (e.g. its library), whose bytes matter as much.
    dependsOnContent: [tool, ...(opts.alsoTools ?? [])].map((t) => readStatic(TOOLS[t])),
    timeoutSeconds: opts.timeoutSeconds,
  });
}

/** A shell word for /bin/sh: as it is when safe, else single-quoted. */
export function shellWord(arg: string): string {
  return /^[A-Za-z0-9_./:=@+,-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

/**
 * A step run on the operator's machine: one of keel's scripts (a path relative to the repository
 * root) with its arguments, quoted for /bin/sh (operator paths may hold spaces). The bytes of the
 * script and of `alsoScripts` (what it runs) are part of the hash.
 */
export function localStep(name: string, description: string, script: string, args: string[], opts: { alsoScripts?: string[]; timeoutSeconds?: number } = {}): LocalStep {
  checkName(name);
  const command = ["bash", script, ...args].map(shellWord).join(" ");
  const dependsOn = [script, ...(opts.alsoScripts ?? [])].map((f) => sha256(readStatic(f)));
  return {
    kind: "local",
    name,
    description,
    command,
    timeoutSeconds: opts.timeoutSeconds ?? 300,
    hash: sha256(stableJson({ kind: "local", command, dependsOn })),
  };
}

/** A step that copies the file named in the result of the local step `from` to `remotePath` on the host. */
export function uploadStep(name: string, description: string, from: string, remotePath: string, timeoutSeconds = 300): UploadStep {
  checkName(name);
  checkArgs(name, [remotePath]);
  if (!remotePath.startsWith("/")) throw new Error(`step ${name}: the remote path ${JSON.stringify(remotePath)} must be absolute`);
  return { kind: "upload", name, description, from, remotePath, timeoutSeconds, hash: sha256(stableJson({ kind: "upload", from, remotePath })) };
}

/**
 * Reads the result of a local step that names a file: its last line, `<sha256>  <absolute path>`
 * (the format of sha256sum). Both executors read it the same way.
 */
export function parseFileResult(stdout: string): { sha256: string; path: string } {
  const last = stdout.trimEnd().split("\n").pop() ?? "";
  const m = /^([0-9a-f]{64}) {2}(\/.*)$/.exec(last);
  if (!m) throw new Error(`expected a local step's result "<sha256>  <absolute path>", found ${JSON.stringify(last.slice(0, 200))}`);
  return { sha256: m[1], path: m[2] };
}

/** Seconds the readiness step waits for cloud-init's first boot (TCG VMs take ~65 s, Hetzner ~60 s). */
export const READY_TIMEOUT_SECONDS = 900;

/** The first step: SSH answers with the pinned host key and cloud-init finished without errors. */
export function readinessStep(): RemoteStep {
  return scriptStep("ready", "wait for SSH and for cloud-init to finish the first boot without errors", "scripts/steps/wait-ready.sh", [String(READY_TIMEOUT_SECONDS)], READY_TIMEOUT_SECONDS + 60);
}
