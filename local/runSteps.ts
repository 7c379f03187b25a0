import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { stableJson } from "../plan/hash";
import { REPO_ROOT } from "../plan/static";
import { parseFileResult } from "../plan/steps";
import type { SecretName, Step } from "../plan/types";
import type { ExecResult } from "./vm/ssh";
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
 * Executor 2 of the host plan: runs every step in order, exactly as the Pulumi executor would — the
 * same command, the same stdin, secrets only on stdin. Remote steps run over SSH (pinned host key,
 * the deploy user); local steps run here, by /bin/sh in the repository root, and their stdout is
 * their result; an upload sends the file a local step's result names over the same SSH connection
 * (base64 on stdin: fine for the DB sizes of tests, not meant for GiBs). Unlike Pulumi it runs
 * every step every time, which is also the idempotency proof: a second run on a converged host
 * must change nothing. Stops at the first failed step.
 */
export async function runSteps(
  vm: Vm,
  steps: readonly Step[],
  secrets: Partial<Record<SecretName, string>>,
  log: (line: string) => void = () => undefined,
): Promise<StepRun[]> {
  const runs: StepRun[] = [];
  const results = new Map<string, string>();
  const resultOf = (step: Step, from: string): string => {
    const result = results.get(from);
    if (result === undefined) throw new Error(`keel: step ${step.name} uses the result of ${from}, which is not an earlier local step`);
    return result;
  };
  for (const step of steps) {
    const started = Date.now();
    const timeoutMs = step.timeoutSeconds * 1000;
    let result: ExecResult;
    if (step.kind === "local") {
      result = await runLocal(step.command, timeoutMs);
      if (result.code === 0) results.set(step.name, result.stdout);
    } else if (step.kind === "upload") {
      const { path } = parseFileResult(resultOf(step, step.from));
      const tmp = `${step.remotePath}.partial`;
      result = await vm.exec(`umask 077 && base64 -d > ${tmp} && mv -f ${tmp} ${step.remotePath}`, { stdin: readFileSync(path).toString("base64"), timeoutMs });
    } else {
      let stdin = step.stdinFrom === undefined ? step.stdin : resultOf(step, step.stdinFrom);
      if (step.secret) {
        const value = secrets[step.secret.name];
        if (value === undefined) throw new Error(`keel: step ${step.name} needs the secret ${step.secret.name}, which the caller did not provide`);
        stdin = stableJson(step.secret.bundle(value));
      }
      result = await vm.exec(step.command, { stdin, timeoutMs });
    }
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

/** A local step: /bin/sh -c COMMAND in the repository root, as local.Command runs it. */
function runLocal(command: string, timeoutMs: number): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawn("/bin/sh", ["-c", command], { cwd: REPO_ROOT, stdio: ["ignore", "pipe", "pipe"] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, timeoutMs);
    child.stdout.on("data", (c: Buffer) => out.push(c));
    child.stderr.on("data", (c: Buffer) => err.push(c));
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(new Error(`/bin/sh could not start: ${e.message}`));
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code: timedOut ? 124 : code ?? 255, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString(), timedOut });
    });
  });
}
