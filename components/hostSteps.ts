import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { sha256, stableJson } from "../plan/hash";
import { REPO_ROOT } from "../plan/static";
import { parseFileResult } from "../plan/steps";
import type { LocalStep, RemoteStep, SecretName, Step, UploadStep } from "../plan/types";

export interface HostStepsArgs {
  /** The ordered steps of the host plan. */
  readonly steps: Step[];
  /** Address keel connects to. */
  readonly host: pulumi.Input<string>;
  readonly port: number;
  /** The deploy user; its key must be loaded in the operator's ssh-agent (SSH_AUTH_SOCK). */
  readonly user: string;
  /** The pinned host public key (`ssh-ed25519 AAAA…`): a different key aborts the connection. */
  readonly hostKey: pulumi.Input<string>;
  /** Values of the secrets that steps receive on stdin. */
  readonly secrets: Partial<Record<SecretName, pulumi.Input<string>>>;
}

/**
 * Dial attempts for the readiness step. The provider retries with a 100 ms base and 1.5× backoff
 * (pulumi/pulumi-command#194), so 20 attempts cover several minutes of a server still booting;
 * later steps run after readiness passed and keep the provider's default of 10.
 */
const READINESS_DIAL_ERROR_LIMIT = 20;

/**
 * Executor 1 of the host plan: one @pulumi/command resource per step, each depending on the
 * previous one, re-run only when the step's own content hash (or its secret) changes.
 * - remote (the default): a remote.Command over SSH as the deploy user. Every connection pins the
 *   host key. A step that carries a secret receives it on stdin only and runs with logging off;
 *   its trigger is a secret hash, and nothing of it reaches the command text.
 * - local: a local.Command on the operator's machine, in the repository root. Its stdout is its
 *   result, stored in state: a local step prints a path and a sha256, never content.
 * - upload: a remote.CopyToRemote of the file a local step's result names (a FileAsset: state keeps
 *   its path and hash, never its bytes), over the same pinned connection. It copies again only when
 *   that result changes, not when the file changes afterwards.
 */
export class HostSteps extends pulumi.ComponentResource {
  /** The remote commands, in plan order. */
  public readonly commands: command.remote.Command[];

  constructor(name: string, args: HostStepsArgs, opts?: pulumi.ComponentResourceOptions) {
    super("keel:host:Steps", name, {}, opts);
    const commands: command.remote.Command[] = [];
    const results = new Map<string, pulumi.Output<string>>();
    const resultOf = (step: Step, from: string): pulumi.Output<string> => {
      const result = results.get(from);
      if (!result) throw new Error(`keel: step ${step.name} uses the result of ${from}, which is not an earlier local step`);
      return result;
    };
    let previous: pulumi.Resource | undefined;
    for (const [index, step] of args.steps.entries()) {
      const connection = {
        host: args.host,
        port: args.port,
        user: args.user,
        hostKey: args.hostKey,
        perDialTimeout: 15,
        ...(index === 0 ? { dialErrorLimit: READINESS_DIAL_ERROR_LIMIT } : {}),
      };
      const timeout = `${step.timeoutSeconds}s`;
      const resourceOpts = { parent: this, dependsOn: previous ? [previous] : [], customTimeouts: { create: timeout, update: timeout } };
      if (step.kind === "local") {
        const cmd = this.local(`${name}-${step.name}`, step, resourceOpts);
        results.set(step.name, cmd.stdout);
        previous = cmd;
      } else if (step.kind === "upload") {
        previous = this.upload(`${name}-${step.name}`, step, connection, resultOf(step, step.from), resourceOpts);
      } else {
        const cmd = this.remote(`${name}-${step.name}`, step, connection, args, step.stdinFrom === undefined ? undefined : resultOf(step, step.stdinFrom), resourceOpts);
        commands.push(cmd);
        previous = cmd;
      }
    }
    this.commands = commands;
    this.registerOutputs({});
  }

  private remote(
    name: string,
    step: RemoteStep,
    connection: command.types.input.remote.ConnectionArgs,
    args: HostStepsArgs,
    result: pulumi.Output<string> | undefined,
    opts: pulumi.CustomResourceOptions,
  ): command.remote.Command {
    let stdin: pulumi.Input<string> | undefined = result ?? step.stdin;
    const triggers: pulumi.Input<string>[] = [step.hash];
    if (step.secret) {
      const value = args.secrets[step.secret.name];
      if (value === undefined) throw new Error(`keel: step ${step.name} needs the secret ${step.secret.name}, which the program did not provide`);
      const bundle = step.secret.bundle;
      const secretStdin = pulumi.secret(pulumi.output(value).apply((v) => stableJson(bundle(v))));
      stdin = secretStdin;
      triggers.push(secretStdin.apply(sha256));
    }
    return new command.remote.Command(
      name,
      {
        connection,
        create: step.command,
        stdin,
        triggers,
        addPreviousOutputInEnv: false,
        logging: step.secret ? "none" : "stdoutAndStderr",
      },
      { ...opts, additionalSecretOutputs: step.secret ? ["stdin", "stdout", "stderr"] : [] },
    );
  }

  private local(name: string, step: LocalStep, opts: pulumi.CustomResourceOptions): command.local.Command {
    return new command.local.Command(
      name,
      { create: step.command, dir: REPO_ROOT, triggers: [step.hash], addPreviousOutputInEnv: false, logging: "stdoutAndStderr" },
      opts,
    );
  }

  private upload(
    name: string,
    step: UploadStep,
    connection: command.types.input.remote.ConnectionArgs,
    result: pulumi.Output<string>,
    opts: pulumi.CustomResourceOptions,
  ): command.remote.CopyToRemote {
    return new command.remote.CopyToRemote(
      name,
      {
        connection,
        source: result.apply((r) => new pulumi.asset.FileAsset(parseFileResult(r).path)),
        remotePath: step.remotePath,
        triggers: [step.hash, result],
      },
      // The copy follows the local step's result (path and sha256), not later edits of the file.
      { ...opts, ignoreChanges: ["source"] },
    );
  }
}
