import { stableJson } from "../plan/hash";
import type { SecretName, Step } from "../plan/types";
import type { Vm } from "./vm/vm";

/** One step as the local executor ran it. Output of a secret-carrying step is not kept. */
export interface StepRun {
  readonly name: string;
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  readonly seconds: number;
}

export class StepError extends Error {
  constructor(readonly run: StepRun) {
    super(`keel: step ${run.name} failed (exit ${run.code}):\n${(run.stderr || run.stdout).trim()}`);
    this.name = "StepError";
  }
}

/**
 * Executor 2 of the host plan: runs every step in order over SSH (pinned host key, the deploy
 * user), exactly as the Pulumi executor would — the same command, the same stdin, secrets only on
 * stdin. Unlike Pulumi it runs every step every time, which is also the idempotency proof: a second
 * run on a converged host must change nothing. Stops at the first failed step.
 */
export async function runSteps(
  vm: Vm,
  steps: readonly Step[],
  secrets: Partial<Record<SecretName, string>>,
  log: (line: string) => void = () => undefined,
): Promise<StepRun[]> {
  const runs: StepRun[] = [];
  for (const step of steps) {
    let stdin = step.stdin;
    if (step.secret) {
      const value = secrets[step.secret.name];
      if (value === undefined) throw new Error(`keel: step ${step.name} needs the secret ${step.secret.name}, which the caller did not provide`);
      stdin = stableJson(step.secret.bundle(value));
    }
    const started = Date.now();
    const result = await vm.exec(step.command, { stdin, timeoutMs: step.timeoutSeconds * 1000 });
    const quiet = step.secret !== undefined; // like logging: "none" in the Pulumi executor
    const run: StepRun = {
      name: step.name,
      code: result.code,
      stdout: quiet ? "" : result.stdout,
      stderr: quiet ? (result.code === 0 ? "" : "(output of a secret-carrying step is not shown)") : result.stderr,
      seconds: (Date.now() - started) / 1000,
    };
    runs.push(run);
    log(`${run.code === 0 ? "ok  " : "FAIL"} ${step.name} (${run.seconds.toFixed(1)} s)${quiet || !run.stdout.trim() ? "" : ": " + run.stdout.trim().split("\n").slice(-1)[0]}`);
    if (run.code !== 0) throw new StepError(run);
  }
  return runs;
}
