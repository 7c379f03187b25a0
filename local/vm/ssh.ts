import { spawn } from "node:child_process";
import * as fs from "node:fs";

/** Who logs in: a user and the private key file that user's authorized_keys accepts. */
export interface SshLogin {
  readonly user: string;
  readonly identityFile: string;
}

export interface ExecResult {
  /** The remote command's exit status; 255 when ssh itself failed; 124 on timeout. */
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  readonly timedOut: boolean;
}

const PUBLIC_KEY = /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(?:256|384|521)|sk-[a-z0-9@.-]+) [A-Za-z0-9+/]+=*(?: .*)?$/;

/** "TYPE BASE64" from a public key line (comment dropped), or an error naming what was found. */
export function parsePublicKey(line: string): string {
  const trimmed = line.trim();
  if (!PUBLIC_KEY.test(trimmed)) {
    throw new Error(`expected an OpenSSH public key line ("ssh-ed25519 AAAA..."), got "${trimmed.slice(0, 40)}"`);
  }
  const [type, blob] = trimmed.split(/\s+/);
  return `${type} ${blob}`;
}

/** A known_hosts line pinning `publicKey` for 127.0.0.1 on `port`. */
export function knownHostsLine(port: number, publicKey: string): string {
  return `[127.0.0.1]:${port} ${parsePublicKey(publicKey)}\n`;
}

/**
 * ssh options for a connection that trusts exactly the pinned key in `knownHostsFile`: no
 * trust on first use, no user config, no key but `identityFile`, never a password prompt.
 */
export function sshArgs(opts: { port: number; login: SshLogin; knownHostsFile: string }): string[] {
  return [
    "-F", "/dev/null",
    "-p", String(opts.port),
    "-i", opts.login.identityFile,
    "-o", `UserKnownHostsFile=${opts.knownHostsFile}`,
    "-o", "GlobalKnownHostsFile=/dev/null",
    "-o", "StrictHostKeyChecking=yes",
    "-o", "UpdateHostKeys=no",
    "-o", "BatchMode=yes",
    "-o", "IdentitiesOnly=yes",
    "-o", "ConnectTimeout=15",
    "-o", "ServerAliveInterval=15",
    "-o", "ServerAliveCountMax=8",
    "-o", "LogLevel=ERROR",
    `${opts.login.user}@127.0.0.1`,
  ];
}

/** Runs `command` through the system ssh client. Never throws for a remote failure. */
export function runSsh(args: string[], command: string, stdin: string | undefined, timeoutMs: number): Promise<ExecResult> {
  return runProcess("ssh", [...args, "--", command], { stdin, timeoutMs });
}

/**
 * Runs a program to its end, or kills it (SIGKILL) after `timeoutMs` and reports exit 124 with
 * timedOut. Rejects only when the program cannot start; its own failure is in the result.
 */
export function runProcess(program: string, argv: string[], opts: { stdin?: string; timeoutMs: number; cwd?: string }): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(program, argv, { cwd: opts.cwd, stdio: [opts.stdin === undefined ? "ignore" : "pipe", "pipe", "pipe"] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, opts.timeoutMs);
    child.stdout?.on("data", (c: Buffer) => out.push(c));
    child.stderr?.on("data", (c: Buffer) => err.push(c));
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(new Error(`${program} could not start: ${e.message}`));
    });
    let settled = false;
    const settle = (code: number | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({
        code: timedOut ? 124 : code ?? 255,
        stdout: Buffer.concat(out).toString(),
        stderr: Buffer.concat(err).toString(),
        timedOut,
      });
    };
    child.on("close", settle);
    // A client killed at the timeout may leave its stdout and stderr open in another process: a
    // multiplexed ssh client hands its descriptors to the master connection (local/vm/mux.ts),
    // which keeps them until the remote command ends. Its exit is the end here.
    child.on("exit", () => {
      if (!timedOut) return;
      child.stdout?.destroy();
      child.stderr?.destroy();
      settle(null);
    });
    if (opts.stdin !== undefined) {
      // A guest that drops the connection early closes the pipe; the exit code tells the story.
      child.stdin?.on("error", () => undefined);
      child.stdin?.end(opts.stdin);
    }
  });
}

/** True when ssh refused the server because its host key is not the pinned one. */
export function isHostKeyFailure(result: ExecResult): boolean {
  return result.code === 255 && /Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED/.test(result.stderr);
}

export function writePrivateFile(file: string, content: string): void {
  fs.writeFileSync(file, content, { mode: 0o600 });
}
