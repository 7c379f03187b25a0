import * as fs from "node:fs";
import { sha256, stableJson } from "../plan/hash";
import { REPO_ROOT } from "../plan/static";
import { parseFileResult } from "../plan/steps";
import type { SecretName, Step } from "../plan/types";
import { runProcess, type ExecResult } from "./vm/ssh";
import type { VmSession } from "./vm/vm";

/** One step as the local executor ran it. Output of a secret-carrying step is not kept. */
export interface StepRun {
  readonly name: string;
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  readonly seconds: number;
}

/**
 * What the engine mode records per step, in a state file: a hash of every input the step last ran
 * with (as Pulumi keeps a resource's inputs in its state), and a local step's result, which later
 * steps read. Written after every step, so an interrupted run keeps what it did.
 */
export interface StepState {
  readonly version: 1;
  /**
   * In run order. `deleteCommand`: what the step's resource would run when it is deleted
   * (plan/types.ts RemoteStep.deleteCommand), kept as Pulumi keeps the last inputs in its state.
   */
  readonly steps: Record<string, { readonly inputs: string; readonly result?: string; readonly deleteCommand?: string; readonly server?: string | null }>;
}

export interface RunOptions {
  /**
   * Run the plan the way `pulumi up` does (docs/LIFECYCLE.md): only the steps whose inputs differ
   * from what this state file records, in plan order; a failed step is recorded as not run, so the
   * next run runs it again. A step the state has and the plan no longer has is deleted after
   * the plan's steps ran, last run first, as the engine deletes resources the program no longer
   * registers (after the creates and updates, in reverse dependency order): its delete command runs,
   * if it has one, on this VM (the state's connection: a replaced server keeps its address). A step
   * with a delete command that ran on another server is deleted before it runs again
   * (deleteBeforeReplace, components/hostSteps.ts). Without it every step runs (the idempotency proof).
   */
  readonly stateFile?: string;
  /**
   * The server's identity, which the Pulumi executor puts into every step's triggers
   * (components/hostSteps.ts serverId): with a state file, a new server runs every step again.
   */
  readonly serverId?: string;
  /**
   * The guest ports the Hetzner firewall lets in (config.ts sshPorts), applied before any step: the
   * engine updates the firewall as soon as the program registers it, and no step depends on it
   * (components/keel.ts), so a firewall change lands before the steps in the worst case.
   */
  readonly firewall?: readonly number[];
  readonly log?: (line: string) => void;
}

export class StepError extends Error {
  constructor(readonly run: StepRun) {
    super(`keel: step ${run.name} failed (exit ${run.code}):\n${(run.stderr || run.stdout).trim()}`);
    this.name = "StepError";
  }
}

/**
 * Executor 2 of the host plan: runs the steps in order, exactly as the Pulumi executor would — the
 * same command, the same stdin, secrets only on stdin. Remote steps run over SSH (pinned host key,
 * the deploy user); local steps run here, by /bin/sh in the repository root, and their stdout is
 * their result; an upload sends the file a local step's result names over the same SSH connection
 * (base64 on stdin: fine for the DB sizes of tests, not meant for GiBs). By default it runs every
 * step every time, which is also the idempotency proof: a second run on a converged host must
 * change nothing. With `stateFile` it runs only what changed (RunOptions). Stops at the first
 * failed step.
 */
export async function runSteps(
  vm: VmSession,
  steps: readonly Step[],
  secrets: Partial<Record<SecretName, string>>,
  opts: RunOptions | ((line: string) => void) = {},
): Promise<StepRun[]> {
  const { stateFile, serverId, firewall, log = () => undefined } = typeof opts === "function" ? { log: opts } : opts;
  if (firewall) await vm.setFirewall(firewall);
  const state: StepState = stateFile ? readState(stateFile) : { version: 1, steps: {} };
  const runs: StepRun[] = [];
  const results = new Map<string, string>(Object.entries(state.steps).flatMap(([name, s]) => (s.result === undefined ? [] : [[name, s.result]])));
  const resultOf = (step: Step, from: string): string => {
    const result = results.get(from);
    if (result === undefined) throw new Error(`keel: step ${step.name} uses the result of ${from}, which is not an earlier local step`);
    return result;
  };
  const connection = connectionOf(vm);
  const save = () => {
    if (!stateFile) return;
    fs.writeFileSync(`${stateFile}.tmp`, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
    fs.renameSync(`${stateFile}.tmp`, stateFile);
  };
  for (const step of steps) {
    const stdin = step.kind === "local" || step.kind === "upload" ? undefined : stdinOf(step, secrets, resultOf);
    const inputs = stepInputs(step, stdin, connection, serverId, step.kind === "upload" ? resultOf(step, step.from) : null);
    if (stateFile && state.steps[step.name]?.inputs === inputs) continue;
    // A new server replaces every remote step (its id is a trigger): one with a delete command is
    // replaced delete-first (components/hostSteps.ts), its delete run over the same address, which
    // reaches the new server.
    const before = state.steps[step.name];
    if (stateFile && before?.deleteCommand !== undefined && (before.server ?? null) !== (serverId ?? null)) {
      runs.push(await runDelete(vm, step.name, before.deleteCommand, log));
    }

    const started = Date.now();
    const timeoutMs = step.timeoutSeconds * 1000;
    let result: ExecResult;
    if (step.kind === "local") {
      result = await runLocal(step.command, timeoutMs);
      if (result.code === 0) results.set(step.name, result.stdout);
    } else if (step.kind === "upload") {
      const { path } = parseFileResult(resultOf(step, step.from));
      const tmp = `${step.remotePath}.partial`;
      result = await vm.exec(`umask 077 && base64 -d > ${tmp} && mv -f ${tmp} ${step.remotePath}`, { stdin: fs.readFileSync(path).toString("base64"), timeoutMs });
    } else {
      result = await vm.exec(step.command, { stdin, timeoutMs });
    }
    // A secret-carrying step runs with logging "none" in the Pulumi executor: nothing of it is shown
    // while it succeeds. When it fails the provider puts its whole output into the error it returns,
    // logging or not (pulumi-command v1.2.1 provider/pkg/provider/remote/commandOutputs.go,
    // `running %q:\n<stdout and stderr>`), so the run keeps it here too: what a failed step prints
    // is what the operator's terminal, the CI log and the state get, and tests check it holds no secret.
    const quiet = step.secret !== undefined && result.code === 0;
    const run: StepRun = {
      name: step.name,
      code: result.code,
      stdout: quiet ? "" : result.stdout,
      stderr: quiet ? "" : result.stderr,
      seconds: (Date.now() - started) / 1000,
    };
    runs.push(run);
    log(`${run.code === 0 ? "ok  " : "FAIL"} ${step.name} (${run.seconds.toFixed(1)} s)${quiet || !run.stdout.trim() ? "" : ": " + run.stdout.trim().split("\n").slice(-1)[0]}`);
    if (run.code !== 0) {
      // Pulumi keeps no record of a failed create: the next up runs the step again.
      delete state.steps[step.name];
      save();
      throw new StepError(run);
    }
    state.steps[step.name] = step.kind === "local" ? { inputs, result: result.stdout } : recorded(step, inputs, serverId);
    save();
  }
  if (stateFile) {
    const planned = new Set(steps.map((s) => s.name));
    for (const name of Object.keys(state.steps).filter((n) => !planned.has(n)).reverse()) {
      const gone = state.steps[name];
      if (gone.deleteCommand !== undefined) runs.push(await runDelete(vm, name, gone.deleteCommand, log));
      delete state.steps[name];
      save();
    }
  }
  return runs;
}

/** A step's delete command, on the host the state's connection reaches; a failure stops the run (the resource stays in the state). */
async function runDelete(vm: VmSession, name: string, command: string, log: (line: string) => void): Promise<StepRun> {
  const started = Date.now();
  const result = await vm.exec(command, { timeoutMs: 300_000 });
  const run: StepRun = { name: `${name} (delete)`, code: result.code, stdout: result.stdout, stderr: result.stderr, seconds: (Date.now() - started) / 1000 };
  log(`${run.code === 0 ? "ok  " : "FAIL"} delete ${name} (${run.seconds.toFixed(1)} s)${run.stdout.trim() ? ": " + run.stdout.trim().split("\n").slice(-1)[0] : ""}`);
  if (run.code !== 0) throw new StepError(run);
  return run;
}

/** What every remote step's connection is, as components/hostSteps.ts gives it to the provider. */
function connectionOf(vm: VmSession): string {
  return stableJson({ user: vm.loginUser, port: vm.sshGuestPort, hostKey: vm.hostKey });
}

/** A hash of every input a step runs with, as the state records it. */
function stepInputs(step: Step, stdin: string | undefined, connection: string, serverId: string | undefined, from: string | null): string {
  return sha256(
    stableJson({
      hash: step.hash,
      stdin: stdin === undefined ? null : sha256(stdin),
      connection: step.kind === "local" ? null : connection,
      server: step.kind === "local" ? null : (serverId ?? null),
      from,
    }),
  );
}

/** What the state keeps of a remote or upload step that ran. */
function recorded(step: Step, inputs: string, serverId: string | undefined): StepState["steps"][string] {
  return step.kind !== "local" && step.kind !== "upload" && step.deleteCommand !== undefined ? { inputs, deleteCommand: step.deleteCommand, server: serverId ?? null } : { inputs };
}

/**
 * A state file that records `steps` as run on this VM with these secrets, for a VM whose plan was
 * deployed without one (the VM tier's deployed test host): the next runSteps with it runs only what
 * a `pulumi up` of a changed config would. Remote and upload steps only (a local step's result is
 * not known here).
 */
export function seedState(stateFile: string, vm: VmSession, steps: readonly Step[], secrets: Partial<Record<SecretName, string>>, serverId?: string): void {
  const connection = connectionOf(vm);
  const state: StepState = { version: 1, steps: {} };
  for (const step of steps) {
    if (step.kind === "local" || step.kind === "upload") throw new Error(`seedState: step ${step.name} is a ${step.kind} step, whose result is not known here`);
    const stdin = stdinOf(step, secrets, () => {
      throw new Error(`seedState: step ${step.name} reads a local step's result`);
    });
    const inputs = stepInputs(step, stdin, connection, serverId, null);
    state.steps[step.name] = recorded(step, inputs, serverId);
  }
  fs.writeFileSync(stateFile, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
}

/** A remote step's standard input: its own, an earlier local step's result, or its secret bundle. */
function stdinOf(step: Step & { kind?: "remote" }, secrets: Partial<Record<SecretName, string>>, resultOf: (step: Step, from: string) => string): string | undefined {
  if (step.secret) {
    const value = secrets[step.secret.name];
    if (value === undefined) throw new Error(`keel: step ${step.name} needs the secret ${step.secret.name}, which the caller did not provide`);
    return stableJson(step.secret.bundle(value));
  }
  return step.stdinFrom === undefined ? step.stdin : resultOf(step, step.stdinFrom);
}

function readState(file: string): StepState {
  if (!fs.existsSync(file)) return { version: 1, steps: {} };
  const state = JSON.parse(fs.readFileSync(file, "utf8")) as StepState;
  if (state.version !== 1 || typeof state.steps !== "object") throw new Error(`${file}: not a keel step state file (version 1)`);
  return state;
}

/** A local step: /bin/sh -c COMMAND in the repository root, as local.Command runs it. */
function runLocal(command: string, timeoutMs: number): Promise<ExecResult> {
  return runProcess("/bin/sh", ["-c", command], { cwd: REPO_ROOT, timeoutMs });
}
