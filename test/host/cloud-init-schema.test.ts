import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IMAGES, parseConfig, type KeelConfig } from "../../config";
import { REPO_ROOT } from "../../plan/static";
import { hardeningFiles, HARDENING_PATHS } from "../../cloud-init/hardening";
import { renderCloudConfig, type HostKeyPair } from "../../cloud-init/userData";

// The rendered user-data against Debian's own cloud-init (`cloud-init schema`), and the files it
// writes against the tools that will read them on the host (nft, systemd, shellcheck).

const ADMIN_KEYS = [
  "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINqq0Bv8sC7o5PLFDEsS8SQAds+XBFfF5FEvGdrrefNn admin1@example",
  "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOcBI0mC9MGwYXOO5rE3Cf0j8sx+6JbpeR0+mJzhHtJj admin2@example",
];

function config(image: string): KeelConfig {
  return parseConfig({
    "keel:image": image,
    "keel:sshPort": "2222",
    "keel:adminKeys": JSON.stringify(ADMIN_KEYS),
    "keel:allowedSshCidrs": JSON.stringify(["203.0.113.7/32", "2001:db8::/48"]),
    "keel:repoUrl": "git@github.com:example/engine.git",
    "keel:repoRef": "0123456789abcdef0123456789abcdef01234567",
    "keel:pythonVersion": "3.12",
    "keel:startCommand": "python -m engine",
  });
}

let dir: string;
let hostKey: HostKeyPair;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "keel-cloud-init-"));
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "keel-test-host", "-f", join(dir, "host")]);
  hostKey = { privateKey: readFileSync(join(dir, "host"), "utf8"), publicKey: readFileSync(join(dir, "host.pub"), "utf8") };
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

function schema(file: string): { status: number | null; output: string } {
  const r = spawnSync("cloud-init", ["schema", "--config-file", file], { encoding: "utf8", timeout: 60_000 });
  return { status: r.status, output: r.stdout + r.stderr };
}

describe("cloud-init schema (Debian's cloud-init)", () => {
  for (const image of IMAGES) {
    it(`accepts the user-data for ${image}, without deprecation notes`, () => {
      const file = join(dir, `user-data-${image}.yaml`);
      writeFileSync(file, renderCloudConfig(config(image), hostKey));
      const { status, output } = schema(file);
      expect(output).toContain(`Valid cloud-config: ${file}`);
      expect(output).not.toMatch(/deprecat/i);
      expect(status).toBe(0);
    });
  }

  it("rejects a broken cloud-config (the check can fail)", () => {
    const file = join(dir, "broken.yaml");
    writeFileSync(file, renderCloudConfig(config("debian-12"), hostKey).replace("ssh_pwauth: false", "ssh_pwauth: [no]"));
    const { status, output } = schema(file);
    expect(output).toMatch(/ssh_pwauth/);
    expect(status).not.toBe(0);
  });
});

describe("the files the first boot writes, checked by the tools that read them", () => {
  const files = hardeningFiles(config("debian-12"));
  const content = (path: string) => files.find((f) => f.path === path)!.content;

  it("the metadata guard's nftables rules parse (nft -c)", () => {
    const file = join(dir, "metadata-guard.nft");
    writeFileSync(file, content(HARDENING_PATHS.metadataGuardRules));
    const r = spawnSync("nft", ["-c", "-f", file], { encoding: "utf8", timeout: 30_000 });
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
  });

  it("the metadata guard's unit passes systemd-analyze verify", () => {
    const file = join(dir, "keel-metadata-guard.service");
    writeFileSync(file, content(HARDENING_PATHS.metadataGuardUnit));
    const r = spawnSync("systemd-analyze", ["verify", file], { encoding: "utf8", timeout: 30_000 });
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
  });

  it("the scripts are shellcheck clean", () => {
    for (const script of ["ufw-apply.sh", "check-free-disk.sh"]) {
      const r = spawnSync("shellcheck", [join(REPO_ROOT, "cloud-init", "files", script)], { encoding: "utf8", timeout: 30_000 });
      expect(r.stdout).toBe("");
      expect(r.status).toBe(0);
    }
  });

  it("the free-disk check passes with enough space and fails loudly, naming the key, without", () => {
    const script = join(REPO_ROOT, "cloud-init", "files", "check-free-disk.sh");
    const ok = spawnSync("bash", [script, dir, "0.001"], { encoding: "utf8", timeout: 30_000 });
    expect(ok.status).toBe(0);
    const short = spawnSync("bash", [script, dir, "1000000"], { encoding: "utf8", timeout: 30_000 });
    expect(short.status).toBe(1);
    expect(short.stderr).toMatch(/keel:minFreeDiskGiB needs 1000000 GiB for the database, backups and logs/);
  });
});
