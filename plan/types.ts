/**
 * The host plan is plain data: everything keel puts on the host, produced by pure functions of the
 * validated config. Two executors run it: the Pulumi components (one @pulumi/command resource per
 * step) and the local VM runner (the same steps over ssh).
 */

/** A file keel places on the host. `content` is the exact bytes (UTF-8). */
export interface HostFile {
  /** Absolute path on the host. */
  readonly path: string;
  readonly owner: string;
  readonly group: string;
  /** Octal mode as a string, e.g. "0644". */
  readonly mode: string;
  readonly content: string;
}

/** Names of the secrets a step may receive on stdin; each executor knows how to produce them. */
export type SecretName = "envFile" | "deployKey" | "alertWebhook";

/** A directory keel ensures (created if missing; owner and mode enforced). */
export interface HostDir {
  readonly path: string;
  readonly owner: string;
  readonly group: string;
  readonly mode: string;
  /**
   * Hand over the regular files directly in this directory (not deeper) that belong to this user:
   * each becomes the directory's owner and group with fileMode (keel-place: opened without following
   * links, single-link regular files only, fchown/fchmod on the descriptor). A directory keel takes
   * from one user for another (the backup tree, from the engine's user to <app>-backup).
   */
  readonly adoptFilesFrom?: { readonly user: string; readonly fileMode: string };
}

/** A system user keel ensures exists (no login shell, no password). */
export interface SystemUser {
  readonly name: string;
  readonly home: string;
}

/**
 * What keel-place receives on stdin: files to place atomically, an optional check that must pass
 * after placing (otherwise every file is rolled back), and commands run only when a file changed.
 * See scripts/host/keel-place.
 */
/**
 * A file keel does not write but whose permissions it bounds (keel-place `modes`): when it exists
 * and is a single-link regular file of `owner`, every permission bit not in `mode` is cleared.
 */
export interface HostFileMode {
  readonly path: string;
  readonly owner: string;
  /** The most it may allow, e.g. "0640". */
  readonly mode: string;
}

export interface Bundle {
  readonly users?: SystemUser[];
  readonly dirs?: HostDir[];
  readonly modes?: HostFileMode[];
  /** Lock every password that works (keel-place: `usermod --lock`), so no account has one. */
  readonly lockPasswords?: boolean;
  readonly files: HostFile[];
  /** argv run after placing; a non-zero exit rolls the files back and fails the step. */
  readonly check?: string[];
  /** argv lists run, in order, only when at least one file changed. */
  readonly onChange?: string[][];
}

interface StepCommon {
  /** Unique, kebab-case; the Pulumi resource is named `${component}-${name}`. */
  readonly name: string;
  /** One line for the operator: what the step does. */
  readonly description: string;
  /** Seconds before the executor gives up on the step. */
  readonly timeoutSeconds: number;
  /** sha256 over the step's own inputs (command, stdin, secret file metadata). */
  readonly hash: string;
}

/**
 * One ordered step run on the host over SSH as the deploy user (the default kind). Steps are
 * idempotent and re-run only when `hash` changes.
 */
export interface RemoteStep extends StepCommon {
  readonly kind?: "remote";
  /** Shell command run as the deploy user over SSH. Never holds a secret. */
  readonly command: string;
  /**
   * sha256 over what the step's run depends on beyond its command and stdin: the bytes of the
   * tools it runs (toolStep). Part of `hash`; the Pulumi executor makes it a trigger (a new tool
   * replaces the step), while a changed command or stdin updates it (components/hostSteps.ts).
   */
  readonly unseenHash: string;
  /** Non-secret standard input (a script or a bundle). */
  readonly stdin?: string;
  /** For a keel-place step: the bundle its stdin carries, as data (the plan's file list reads it). */
  readonly bundle?: Bundle;
  /**
   * A secret sent on stdin instead of `stdin`: the executor builds `secretBundle(secretValue)` and
   * the step runs with logging off. The command text and its output never contain the secret.
   */
  readonly secret?: { readonly name: SecretName; readonly bundle: (value: string) => Bundle };
  /**
   * Instead of `stdin`: the result (standard output) of the earlier local step of this name, known
   * only when that step has run. Non-secret by construction: a local step prints a path and a hash.
   */
  readonly stdinFrom?: string;
  /**
   * Run as the deploy user when the step leaves the plan (a config that no longer needs it) or its
   * server is replaced: @pulumi/command's `delete`, run with the state's last inputs (pulumi-command
   * v1.2.1 provider/pkg/provider/remote/commandController.go Delete). Only a step that starts
   * something the rest of the plan does not know about has one (keel:https's Caddy).
   */
  readonly deleteCommand?: string;
}

/**
 * A step run on the operator's machine, where `pulumi up` runs: `command` by /bin/sh in the
 * repository root. Its standard output is its result, which later steps may use (`stdinFrom`,
 * `UploadStep.from`); its messages go to stderr. It never sees a secret.
 */
export interface LocalStep extends StepCommon {
  readonly kind: "local";
  readonly command: string;
  readonly stdin?: never;
  readonly bundle?: never;
  readonly secret?: never;
  readonly stdinFrom?: never;
}

/**
 * A step that copies one file from the operator's machine to the host, as the deploy user over the
 * same pinned SSH connection: the file named in the result of the local step `from` (see
 * `parseFileResult`), to `remotePath`. The file's bytes travel only over that connection: they are
 * never in a command, a stdin or the executor's state.
 */
export interface UploadStep extends StepCommon {
  readonly kind: "upload";
  /** The earlier local step whose result names the file (`<sha256>  <absolute path>`). */
  readonly from: string;
  /** Absolute path on the host, in a directory the deploy user owns. */
  readonly remotePath: string;
  readonly command?: never;
  readonly stdin?: never;
  readonly bundle?: never;
  readonly secret?: never;
  readonly stdinFrom?: never;
}

/** One ordered step of the host plan. Each re-runs only when its `hash` changes. */
export type Step = RemoteStep | LocalStep | UploadStep;

export interface HostPlan {
  /** Every file the steps place, in step order (secret files excluded: they travel only on a secret step's stdin). */
  readonly files: HostFile[];
  /** The converge steps, in order. */
  readonly steps: Step[];
}
