import { execFile, execFileSync, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseConfig, type KeelConfig } from "../../config";
import { keyPair } from "../../local/localStack";
import { authorizedKeysFile } from "../../plan/hostPlan";
import { REPO_ROOT } from "../../plan/static";
import { HARDENING_PATHS, hardeningFiles, sshdDropIn } from "../../plan/hardening";
import { freePort, startSshd, type TestSshd } from "../support/net";

// A real sshd on 127.0.0.1, configured by the rendered drop-in, probed with the real ssh client and
// ssh-audit. Needs root (sshd, useradd). The drop-in bytes are the production ones except for two
// paths the test must move into its temp dir: HostKey (a throwaway key, not /etc/ssh's) and Banner.
// Port and AllowUsers come from the config itself (keel:sshPort = a free port, keel:deployUser =
// a temporary user created here and removed afterwards).

const suffix = randomBytes(3).toString("hex");
const DEPLOY = `keel-t${suffix}`;
const OTHER = `keel-o${suffix}`;

let dir: string;
let port: number;
let cfg: KeelConfig;
let sshd: TestSshd | undefined;



function keygen(name: string): string {
  return keyPair(dir, name).publicKey;
}

function addUser(name: string, keysFile: string): void {
  execFileSync("useradd", ["--create-home", "--shell", "/bin/bash", name]);
  const ssh = `/home/${name}/.ssh`;
  mkdirSync(ssh, { mode: 0o700 });
  writeFileSync(join(ssh, "authorized_keys"), keysFile, { mode: 0o600 });
  const { uid, gid } = JSON.parse(execFileSync("python3", ["-c", `import pwd,json; p=pwd.getpwnam("${name}"); print(json.dumps({"uid": p.pw_uid, "gid": p.pw_gid}))`], { encoding: "utf8" }));
  chownSync(ssh, uid, gid);
  chownSync(join(ssh, "authorized_keys"), uid, gid);
}

interface Result {
  status: number | null;
  stdout: string;
  stderr: string;
}

function ssh(user: string, key: string, options: string[] = [], command = "echo keel-ok"): Promise<Result> {
  const args = [
    ...["-F", "/dev/null", "-p", String(port), "-i", join(dir, key)],
    ...["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"],
    // The host key is pinned: no trust on first use, here or anywhere.
    ...["-o", `UserKnownHostsFile=${join(dir, "known_hosts")}`, "-o", "StrictHostKeyChecking=yes"],
    ...options,
    `${user}@127.0.0.1`,
    command,
  ];
  return new Promise((resolve) => {
    execFile("ssh", args, { timeout: 20_000, encoding: "utf8" }, (error, stdout, stderr) => {
      resolve({ status: error ? ((error as { code?: number }).code ?? null) : 0, stdout, stderr });
    });
  });
}

beforeAll(async () => {
  if (process.getuid?.() !== 0) throw new Error("test/host/sshd.test.ts needs root: it starts sshd and creates temporary users");
  dir = mkdtempSync(join(tmpdir(), "keel-sshd-"));
  chmodSync(dir, 0o755);
  const hostPub = keygen("host");
  const admin = keygen("admin");
  const retired = keygen("retired");
  port = await freePort();
  cfg = parseConfig({
    "keel:image": "debian-12",
    "keel:sshPort": String(port),
    "keel:deployUser": DEPLOY,
    "keel:adminKeys": JSON.stringify([admin]),
    "keel:retiredKeys": JSON.stringify([retired]),
    "keel:allowedSshCidrs": JSON.stringify(["127.0.0.1/32"]),
    "keel:repoUrl": "git@github.com:example/engine.git",
    "keel:repoRef": "0123456789abcdef0123456789abcdef01234567",
    "keel:pythonVersion": "3.11",
    "keel:startCommand": "python -m engine",
  });

  const production = sshdDropIn(cfg);
  const dropIn = production
    .replace(/^HostKey \/etc\/ssh\/ssh_host_ed25519_key$/m, `HostKey ${join(dir, "host")}`)
    .replace(/^Banner \/etc\/ssh\/keel-banner$/m, `Banner ${join(dir, "banner")}`);
  expect(dropIn.split("\n").filter((l, i) => l !== production.split("\n")[i])).toHaveLength(2);
  writeFileSync(join(dir, "00-keel.conf"), dropIn);
  writeFileSync(join(dir, "banner"), hardeningFiles(cfg).find((f) => f.path === HARDENING_PATHS.sshBanner)!.content);
  // The rest of a Debian sshd_config that matters here: the drop-in directory comes first, PAM on.
  writeFileSync(join(dir, "sshd_config"), [`Include ${join(dir, "00-keel.conf")}`, "ListenAddress 127.0.0.1", `PidFile ${join(dir, "sshd.pid")}`, "UsePAM yes", ""].join("\n"));
  writeFileSync(join(dir, "known_hosts"), `[127.0.0.1]:${port} ${hostPub}\n`);

  // The deploy user gets keel's authorized_keys; the other user the same admin key, so that only
  // AllowUsers can be what refuses it.
  const keys = authorizedKeysFile(cfg).content;
  addUser(DEPLOY, keys);
  addUser(OTHER, keys);

  mkdirSync("/run/sshd", { recursive: true, mode: 0o755 }); // ssh.service's RuntimeDirectory
  const check = spawnSync("/usr/sbin/sshd", ["-t", "-f", join(dir, "sshd_config")], { encoding: "utf8", timeout: 30_000 });
  if (check.status !== 0) throw new Error(`sshd -t rejected the rendered drop-in:\n${check.stderr}`);

  sshd = await startSshd(join(dir, "sshd_config"), port);
});

afterAll(async () => {
  await sshd?.stop();
  for (const user of [DEPLOY, OTHER]) spawnSync("userdel", ["--remove", user], { timeout: 30_000 });
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("sshd with keel's drop-in (OpenSSH on this machine)", () => {
  it("passes sshd -t", () => {
    const r = spawnSync("/usr/sbin/sshd", ["-t", "-f", join(dir, "sshd_config")], { encoding: "utf8", timeout: 30_000 });
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
  });

  it("lets the deploy user in with an admin key, after the banner", async () => {
    const r = await ssh(DEPLOY, "admin");
    expect(r.stdout).toBe("keel-ok\n");
    expect(r.stderr).toContain(readFileSync(join(REPO_ROOT, "cloud-init", "files", "banner.txt"), "utf8").trim());
    expect(r.status).toBe(0);
  });

  it("offers no password or keyboard-interactive login", async () => {
    const r = await ssh(DEPLOY, "admin", ["-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password,keyboard-interactive"]);
    expect(r.stderr).toContain("Permission denied (publickey).");
    expect(r.status).toBe(255);
  });

  it("refuses root, even before looking at keys", async () => {
    const r = await ssh("root", "admin");
    expect(r.status).toBe(255);
    expect(r.stderr).toContain("Permission denied (publickey).");
    expect(sshd!.log()).toContain("User root from 127.0.0.1 not allowed because not listed in AllowUsers");
  });

  it("refuses any other user, even one holding an admin key", async () => {
    const r = await ssh(OTHER, "admin");
    expect(r.status).toBe(255);
    expect(sshd!.log()).toContain(`User ${OTHER} from 127.0.0.1 not allowed because not listed in AllowUsers`);
  });

  it("refuses a retired key", async () => {
    const r = await ssh(DEPLOY, "retired");
    expect(r.stderr).toContain("Permission denied (publickey).");
    expect(r.status).toBe(255);
  });

  it("logs the fingerprint of the key that logged in (LogLevel VERBOSE)", () => {
    expect(sshd!.log()).toMatch(new RegExp(`Accepted publickey for ${DEPLOY} from 127\\.0\\.0\\.1 port \\d+ ssh2: ED25519 SHA256:`));
  });

  it("negotiates post-quantum key exchange with OpenSSH clients", async () => {
    const r = await ssh(DEPLOY, "admin", ["-v"]);
    expect(r.status).toBe(0);
    expect(r.stderr).toContain("kex: algorithm: sntrup761x25519-sha512@openssh.com");
    expect(r.stderr).toContain("kex: host key algorithm: ssh-ed25519");
  });

  it("accepts what the Go client in @pulumi/command offers at least (curve25519-sha256, AES-GCM, ssh-ed25519)", async () => {
    const go = ["-o", "KexAlgorithms=curve25519-sha256", "-o", "Ciphers=aes128-gcm@openssh.com", "-o", "HostKeyAlgorithms=ssh-ed25519"];
    const r = await ssh(DEPLOY, "admin", go);
    expect(r.stdout).toBe("keel-ok\n");
    expect(r.status).toBe(0);
  });

  it("refuses legacy algorithms", async () => {
    const dh = await ssh(DEPLOY, "admin", ["-o", "KexAlgorithms=diffie-hellman-group14-sha256"]);
    expect(dh.stderr).toContain("no matching key exchange method found");
    const ctr = await ssh(DEPLOY, "admin", ["-o", "Ciphers=aes256-ctr"]);
    expect(ctr.stderr).toContain("no matching cipher found");
    const ecdsa = await ssh(DEPLOY, "admin", ["-o", "HostKeyAlgorithms=ecdsa-sha2-nistp256"]);
    expect(ecdsa.stderr).toContain("no matching host key type found");
  });

  it("lets a burst of 10 parallel logins through (what pulumi up does)", async () => {
    const results = await Promise.all(Array.from({ length: 10 }, () => ssh(DEPLOY, "admin")));
    expect(results.map((r) => r.status)).toEqual(Array(10).fill(0));
  });

  it("passes ssh-audit with no failure, and every warning is explained in docs/HARDENING.md", () => {
    const r = spawnSync("ssh-audit", ["-n", "-p", String(port), "127.0.0.1"], { encoding: "utf8", timeout: 60_000 });
    // ssh-audit 2.5.0 exit codes: 0 good, 2 warnings, 3 failures.
    expect([0, 2]).toContain(r.status);
    expect(r.stdout).not.toContain("[fail]");
    const warned = [...r.stdout.matchAll(/^\((\w+)\) (\S+)\s+-- \[warn\] (.*)$/gm)].map((m) => m[2]);
    const doc = readFileSync(join(REPO_ROOT, "docs", "HARDENING.md"), "utf8");
    for (const algorithm of warned) expect(doc).toContain(`\`${algorithm}\``);
    expect(warned.sort()).toEqual(["kex-strict-s-v00@openssh.com", "sntrup761x25519-sha512@openssh.com"]);
  });
});
