import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { sha256, stableJson } from "../plan/hash";
import type { SecretName, Step } from "../plan/types";

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
 * Executor 1 of the host plan: one @pulumi/command remote.Command per step, each depending on the
 * previous one, re-run only when the step's own content hash (or its secret) changes. Every
 * connection pins the host key. A step that carries a secret receives it on stdin only and runs
 * with logging off; its trigger is a secret hash, and nothing of it reaches the command text.
 */
export class HostSteps extends pulumi.ComponentResource {
  /** The remote commands, in plan order. */
  public readonly commands: command.remote.Command[];

  constructor(name: string, args: HostStepsArgs, opts?: pulumi.ComponentResourceOptions) {
    super("keel:host:Steps", name, {}, opts);
    const commands: command.remote.Command[] = [];
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
      let stdin: pulumi.Input<string> | undefined = step.stdin;
      const triggers: pulumi.Input<string>[] = [step.hash];
      if (step.secret) {
        const value = args.secrets[step.secret.name];
        if (value === undefined) throw new Error(`keel: step ${step.name} needs the secret ${step.secret.name}, which the program did not provide`);
        const bundle = step.secret.bundle;
        const secretStdin = pulumi.secret(pulumi.output(value).apply((v) => stableJson(bundle(v))));
        stdin = secretStdin;
        triggers.push(secretStdin.apply(sha256));
      }
      const timeout = `${step.timeoutSeconds}s`;
      const cmd = new command.remote.Command(
        `${name}-${step.name}`,
        {
          connection,
          create: step.command,
          stdin,
          triggers,
          addPreviousOutputInEnv: false,
          logging: step.secret ? "none" : "stdoutAndStderr",
        },
        {
          parent: this,
          dependsOn: previous ? [previous] : [],
          customTimeouts: { create: timeout, update: timeout },
          additionalSecretOutputs: step.secret ? ["stdin", "stdout", "stderr"] : [],
        },
      );
      commands.push(cmd);
      previous = cmd;
    }
    this.commands = commands;
    this.registerOutputs({});
  }
}
