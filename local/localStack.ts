/**
 * A keel stack on a local VM instead of Hetzner: the same user-data, the same steps, run by the VM
 * runner. Shared by the local demo (`npm run demo`) and the VM tests. Keys that Pulumi would
 * generate (tls.PrivateKey) are generated here with ssh-keygen, in a work directory.
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { renderCloudConfig } from "../cloud-init/userData";
import { parseConfig, type KeelConfig } from "../config";
import { REPO_ROOT } from "../plan/static";
import type { Release } from "./vm/image";
import type { VmSession } from "./vm/vm";

/** Where the VM's user-mode network presents the host: every connection to the guest comes from here. */
export const QEMU_HOST_CIDR = "10.0.2.2/32";

/** The sample engine keel deploys when no repository of your own is given (a tiny stdlib-only service). */
export const SAMPLE_ENGINE = path.join(REPO_ROOT, "test", "fixtures", "engine");

/** Where the engine's repository lives on the VM (the local stand-in for the git host). */
export const VM_REPO_PATH = "/home/deploy/engine.git";

export interface KeyPair {
  /** The private key file (0600, no passphrase), for `ssh -i`. */
  readonly file: string;
  readonly privateKey: string;
  /** "ssh-ed25519 AAAA… name@keel-local" */
  readonly publicKey: string;
}

/** An ED25519 key pair in `dir/name` (reused if it exists, so a demo keeps its keys). */
export function keyPair(dir: string, name: string): KeyPair {
  const file = path.join(dir, name);
  if (!fs.existsSync(file)) execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", `${name}@keel-local`, "-f", file]);
  return { file, privateKey: fs.readFileSync(file, "utf8"), publicKey: fs.readFileSync(`${file}.pub`, "utf8").trim() };
}

/** git in `dir`, with a fixed identity and dates, so the same tree makes the same commit on any machine. */
export function git(dir: string, ...args: string[]): string {
  const env = { ...process.env, GIT_AUTHOR_DATE: "2026-01-01T00:00:00Z", GIT_COMMITTER_DATE: "2026-01-01T00:00:00Z" };
  return execFileSync("git", ["-C", dir, "-c", "user.name=keel", "-c", "user.email=keel@localhost", ...args], { encoding: "utf8", env }).trim();
}

/** Makes `source` a one-commit git repository in `dir/engine` and bundles it; returns the commit and the bundle. */
export function engineRepository(source: string, dir: string): { commit: string; bundle: string } {
  const repo = path.join(dir, "engine");
  fs.rmSync(repo, { recursive: true, force: true });
  fs.cpSync(source, repo, { recursive: true });
  git(repo, "init", "-q", "-b", "main");
  git(repo, "add", "-A");
  git(repo, "commit", "-q", "-m", "engine");
  const bundle = path.join(dir, "engine.bundle");
  git(repo, "bundle", "create", "-q", bundle, "main");
  return { commit: git(repo, "rev-parse", "HEAD"), bundle };
}

/** The stack config of a local VM: Debian's image and Python, SSH from the qemu host only. */
export function localConfig(opts: { release: Release; adminKey: string; repoRef: string; overrides?: Record<string, string>; secretEnv: Record<string, string> }): KeelConfig {
  const raw: Record<string, string> = {
    "keel:image": opts.release === "trixie" ? "debian-13" : "debian-12",
    "keel:pythonVersion": opts.release === "trixie" ? "3.13" : "3.11",
    "keel:adminKeys": JSON.stringify([opts.adminKey]),
    "keel:allowedSshCidrs": JSON.stringify([QEMU_HOST_CIDR]),
    "keel:repoUrl": `file://${VM_REPO_PATH}`,
    "keel:repoRef": opts.repoRef,
    "keel:startCommand": "python -m engine",
    "keel:settings": JSON.stringify({ heartbeatSeconds: 5, session: { mode: "paper" } }),
    "keel:secretEnv": JSON.stringify(opts.secretEnv),
    "keel:minFreeDiskGiB": "1",
    "keel:protect": "false",
    ...opts.overrides,
  };
  return parseConfig(raw, (k) => k === "keel:secretEnv");
}

/** The user-data Hetzner would get, with the host key generated locally. */
export function localUserData(cfg: KeelConfig, hostKey: KeyPair): string {
  return renderCloudConfig(cfg, { privateKey: hostKey.privateKey, publicKey: hostKey.publicKey });
}

/**
 * Puts the engine's repository on the VM as a bare repository at VM_REPO_PATH (replacing an older
 * one). With umask 027: the stand-in git host lives in the deploy user's home, whose files keel
 * keeps out of other users' reach (ANSSI's accounts_users_home_files_permissions), and a real git
 * host is not on the server at all.
 */
export async function pushEngineRepository(vm: VmSession, bundle: string): Promise<void> {
  const r = await vm.exec(`umask 027 && base64 -d > /tmp/engine.bundle && rm -rf ${VM_REPO_PATH} && git clone -q --bare /tmp/engine.bundle ${VM_REPO_PATH} && rm /tmp/engine.bundle`, {
    stdin: fs.readFileSync(bundle).toString("base64"),
    timeoutMs: 5 * 60_000,
  });
  if (r.code !== 0) throw new Error(`pushing the engine repository to the VM failed (exit ${r.code}): ${r.stderr.trim()}`);
}
