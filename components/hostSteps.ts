import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { sha256, stableJson } from "../plan/hash";
import type { LocalStep, RemoteStep, SecretName, Step, UploadStep } from "../plan/types";

export interface HostStepsArgs {
  /** The ordered steps of the host plan. */
  readonly steps: Step[];
  /** Address keel connects to. */
  readonly host: pulumi.Input<string>;
  /**
   * The Hetzner server's id, a trigger of every step that runs on the server: a new server (an
   * image change, `pulumi up --replace`) gets every step again, in plan order, readiness first.
   */
  readonly serverId: pulumi.Input<string>;
  readonly port: number;
  /** The deploy user; its key must be loaded in the operator's ssh-agent (SSH_AUTH_SOCK). */
  readonly user: string;
  /** The pinned host public key (`ssh-ed25519 AAAA…`): a different key aborts the connection. */
  readonly hostKey: pulumi.Input<string>;
  /** Values of the secrets that steps receive on stdin. */
  readonly secrets: Partial<Record<SecretName, pulumi.Input<string>>>;
  /** Resources a step (by name) waits for besides the step before it, e.g. the deploy key's registration. */
  readonly waitFor?: Readonly<Record<string, readonly pulumi.Resource[]>>;
}

/**
 * Dial attempts for the readiness step: unlimited (-1), so it waits for sshd for as long as its
 * customTimeouts allow (plan/steps.ts READY_TIMEOUT_SECONDS + 60). Source, pulumi-command v1.2.1:
 * provider/pkg/provider/remote/connection.go `dialWithRetry` retries until the dial error limit
 * (-1 = unlimited, `reachedDialingErrorLimit`) or until the request's context ends;
 * pulumi-go-provider v1.3.0 middleware/cancel/cancel.go gives Create and Update a context with the
 * resource's custom timeout. A limit of 20 with the provider's backoff (100 ms x1.5, capped at 5 s)
 * gave up after about a minute, before a server that upgrades packages at first boot listens.
 * Later steps run after readiness passed and keep the provider's default of 10, so a wrong host key
 * fails them in seconds rather than at their timeout.
 */
const READINESS_DIAL_ERROR_LIMIT = -1;

/** Characters of a step's stdin above which a preview shows no diff of it (hideDiffs). */
const HIDE_STDIN_DIFF_ABOVE = 4096;

/**
 * Executor 1 of the host plan: one @pulumi/command resource per step, each depending on the
 * previous one, run again exactly when one of the step's inputs (step.hash), its secret or the
 * server changes. A change of `triggers` replaces the resource, which runs `create`: pulumi-command
 * v1.2.1 marks `triggers` replaceOnChanges (provider/pkg/provider/common/inputs.go), its Node SDK
 * turns that into the resource option `replaceOnChanges: ["triggers[*]"]` (@pulumi/command
 * remote/command.js), and the engine makes a replace of any diff under it (pulumi v3.248.0
 * pkg/resource/deploy/step_generator.go applyReplaceOnChanges). A change of any other input is an
 * update (pulumi-go-provider v1.3.0 infer/resource.go Diff: a resource with an Update is replaced
 * only for its replaceOnChanges properties), which runs `update`, else `create`
 * (provider/pkg/provider/remote/commandController.go and local/commandController.go, Update).
 * - remote (the default): a remote.Command over SSH as the deploy user. Every connection pins the
 *   host key. Its command and stdin are plain inputs, so a changed setting previews as `~` update
 *   and runs the step again; its triggers are what the engine cannot see in them: the bytes of the
 *   tools it runs (step.unseenHash), the server's id (a new server re-runs every step, which the
 *   component's `dependsOn` alone would not: children do not inherit it) and, for a step that
 *   carries a secret, the secret's hash. Such a step receives the secret on stdin only and runs with
 *   logging off; nothing of it reaches the command text.
 * - local: a local.Command on the operator's machine, in the project root (the repository's). Its stdout is its
 *   result, stored in state: a local step prints a path and a sha256, never content.
 * - upload: a local.Command that copies the file a local step's result names to the host over the
 *   same pinned connection (scripts/steps/upload-file.sh). It copies again only when that result (or the
 *   server) changes, never reads the file otherwise.
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
    for (const stepName of Object.keys(args.waitFor ?? {})) {
      if (!args.steps.some((s) => s.name === stepName)) throw new Error(`keel: waitFor names the step ${stepName}, which the plan does not have`);
    }
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
      const dependsOn = [...(previous ? [previous] : []), ...(args.waitFor?.[step.name] ?? [])];
      const resourceOpts = { parent: this, dependsOn, customTimeouts: { create: timeout, update: timeout, delete: timeout } };
      if (step.kind === "local") {
        const cmd = this.local(`${name}-${step.name}`, step, resourceOpts);
        results.set(step.name, cmd.stdout);
        previous = cmd;
      } else if (step.kind === "upload") {
        previous = this.upload(`${name}-${step.name}`, step, args, resultOf(step, step.from), resourceOpts);
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
    const triggers: pulumi.Input<string>[] = [step.unseenHash, args.serverId];
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
        ...(step.deleteCommand === undefined ? {} : { delete: step.deleteCommand }),
        stdin,
        triggers,
        addPreviousOutputInEnv: false,
        logging: step.secret ? "none" : "stdoutAndStderr",
      },
      {
        ...opts,
        // A step with a delete command is replaced delete-first. The engine's default creates the
        // replacement, then deletes the old resource after every create and update (pulumi v3.248.0
        // pkg/resource/deploy/step_generator.go: the delete of a create-before-delete replacement
        // "is generated later", with the deletes of removed resources), and the provider runs the
        // old state's `delete` over the old state's connection (pulumi-command v1.2.1
        // provider/pkg/provider/remote/commandController.go Delete: `props := req.State`). A new
        // server keeps the primary IPs and the pinned host key (components/server.ts), so that old
        // connection reaches the new server: `keel-https off` would run there after `apply`. Delete
        // first, the new server gets off, then apply. Only this resource: the steps after it depend
        // on it through dependsOn alone, not through a property, so the engine replaces none of them
        // for it (step_generator.go calculateDependentReplacements).
        ...(step.deleteCommand === undefined ? {} : { deleteBeforeReplace: true }),
        additionalSecretOutputs: step.secret ? ["stdin", "stdout", "stderr"] : [],
        // A big stdin (the tools step's bundle of keel's scripts, ~126 KB) would fill the diff of
        // every preview that changes it, and pulumi/actions cuts a PR comment at 64,000 characters:
        // the preview says `stdin (hidden)` instead. Display only (pulumi v3.248.0
        // pkg/backend/display/object_diff.go applies hideDiffs to an update's or replace's diff,
        // printHiddenPaths; a create still prints every input, once).
        ...(typeof step.stdin === "string" && step.stdin.length > HIDE_STDIN_DIFF_ABOVE ? { hideDiffs: ["stdin"] } : {}),
      },
    );
  }

  private local(name: string, step: LocalStep, opts: pulumi.CustomResourceOptions): command.local.Command {
    return new command.local.Command(
      name,
      // No `dir` (an input kept in state: an absolute path would differ on every machine): the
      // provider runs in its working directory, which the engine sets to the project root
      // (pulumi v3.248.0 pkg/engine/project.go getPwdMain; pulumi-command v1.2.1
      // provider/pkg/provider/local/commandOutputs.go), and keel's scripts are relative to it.
      { create: step.command, triggers: [step.hash], addPreviousOutputInEnv: false, logging: "stdoutAndStderr" },
      opts,
    );
  }

  private upload(
    name: string,
    step: UploadStep,
    args: HostStepsArgs,
    result: pulumi.Output<string>,
    opts: pulumi.CustomResourceOptions,
  ): command.local.Command {
    // Not a CopyToRemote of a FileAsset: the engine reads and hashes an asset's file whenever the
    // resource is registered (pulumi v3.248.0 pkg/resource/deploy/source_eval.go, resmon
    // RegisterResource unmarshals with ComputeAssetHashes), every later preview and up included
    // (ignoreChanges only applies after that), so a source DB moved after its migration, or any
    // other machine (CI), would fail them all. scripts/steps/upload-file.sh copies over the same pinned connection (the operator's ssh-agent,
    // the host key), checks the file still has the sha256 its local step proved, and verifies it on
    // the host; state keeps the command, the result line and the output, never a path to read again.
    return new command.local.Command(
      name,
      {
        create: pulumi.interpolate`bash scripts/steps/upload-file.sh ${args.host} ${args.port} ${args.user} ${step.remotePath}`,
        stdin: result,
        environment: { KEEL_HOST_KEY: args.hostKey },
        triggers: [step.hash, result, args.serverId],
        addPreviousOutputInEnv: false,
        logging: "stdoutAndStderr",
      },
      opts,
    );
  }

}
