import { spawnSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseConfig, type KeelConfig } from "../../config";
import { IMAGES } from "../../images";
import { keyPair } from "../../local/localStack";
import { REPO_ROOT } from "../../plan/static";
import { hardeningFiles, HARDENING_PATHS, sudoersKeel, ufwSshConf } from "../../plan/hardening";
import { renderCloudConfig, type HostKeyPair } from "../../cloud-init/userData";
import { imagePython } from "../support/stack";

// The rendered user-data against Debian's own cloud-init (`cloud-init schema`), and the files it
// writes against the tools that will read them on the host (nft, systemd, shellcheck).

const ADMIN_KEYS = [
  "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINqq0Bv8sC7o5PLFDEsS8SQAds+XBFfF5FEvGdrrefNn admin1@example",
  "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOcBI0mC9MGwYXOO5rE3Cf0j8sx+6JbpeR0+mJzhHtJj admin2@example",
];

function raw(image: string): Record<string, string> {
  return {
    "keel:image": image,
    "keel:sshPort": "2222",
    "keel:adminKeys": JSON.stringify(ADMIN_KEYS),
    "keel:allowedSshCidrs": JSON.stringify(["203.0.113.7/32", "2001:db8::/48"]),
    "keel:repoUrl": "git@github.com:example/engine.git",
    "keel:repoRef": "0123456789abcdef0123456789abcdef01234567",
    "keel:pythonVersion": imagePython({ "keel:image": image }),
    "keel:startCommand": "python -m engine",
  };
}

function config(image: string): KeelConfig {
  return parseConfig(raw(image));
}

let dir: string;
let hostKey: HostKeyPair;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "keel-cloud-init-"));
  hostKey = keyPair(dir, "host");
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

  it("keel's sudoers file parses with the real visudo, alone and as sudo reads it with Debian's /etc/sudoers", () => {
    const dir = mkdtempSync(join(tmpdir(), "keel-sudoers-"));
    try {
      const file = join(dir, "99-keel");
      writeFileSync(file, sudoersKeel(config("debian-12")), { mode: 0o440 });
      const alone = spawnSync("visudo", ["-c", "-q", "-f", file], { encoding: "utf8", timeout: 30_000 });
      expect(alone.status, alone.stderr + alone.stdout).toBe(0);
      // The main file with the drop-in directory holding keel's file, as on the host.
      const main = join(dir, "sudoers");
      mkdirSync(join(dir, "sudoers.d"));
      writeFileSync(join(dir, "sudoers.d", "99-keel"), sudoersKeel(config("debian-12")), { mode: 0o440 });
      writeFileSync(main, readFileSync("/etc/sudoers", "utf8").replace(/^@includedir \/etc\/sudoers\.d$/m, `@includedir ${join(dir, "sudoers.d")}`), { mode: 0o440 });
      const whole = spawnSync("visudo", ["-c", "-f", main], { encoding: "utf8", timeout: 30_000 });
      expect(whole.status, whole.stderr + whole.stdout).toBe(0);
      expect(whole.stdout).toContain(`${join(dir, "sudoers.d", "99-keel")}: parsed OK`);
      // The check can fail: a Defaults word sudo does not know.
      writeFileSync(file, sudoersKeel(config("debian-12")) + "Defaults keel_no_such_option\n", { mode: 0o440 });
      expect(spawnSync("visudo", ["-c", "-q", "-f", file], { encoding: "utf8", timeout: 30_000 }).status).not.toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("the scripts are shellcheck clean", () => {
    for (const script of ["ufw-apply.sh", "check-free-disk.sh", "profile-keel.sh"]) {
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

  it("ufw-apply converges real UFW: only SSH from the allowed sources, hand-added rules removed, idempotent, port moves through two", () => {
    // Real ufw and iptables, inside a private network namespace (the rules never touch this
    // machine's firewall) and a private mount namespace (copies of /etc/ufw and /lib/ufw).
    cpSync("/etc/ufw", join(dir, "etc-ufw"), { recursive: true });
    cpSync("/lib/ufw", join(dir, "lib-ufw"), { recursive: true });
    const conf = (image: string, port: string, cidrs: string[], next?: string) =>
      ufwSshConf(parseConfig({ ...raw(image), "keel:sshPort": port, "keel:allowedSshCidrs": JSON.stringify(cidrs), ...(next ? { "keel:sshPortNext": next } : {}) }));
    writeFileSync(join(dir, "ufw-1.conf"), conf("debian-12", "2222", ["203.0.113.7/32", "2001:DB8:0::/48", "198.51.100.0/24"]));
    writeFileSync(join(dir, "ufw-2.conf"), conf("debian-12", "2222", ["198.51.100.0/24"], "2200"));
    writeFileSync(join(dir, "ufw-3.conf"), conf("debian-12", "2200", ["198.51.100.0/24"]));
    writeFileSync(join(dir, "ufw-bad.conf"), "port 22\nport 2200\nport 2222\nallow 198.51.100.0/24\n");
    const apply = join(REPO_ROOT, "cloud-init", "files", "ufw-apply.sh");
    const script = [
      "set -e",
      `mount --bind ${join(dir, "etc-ufw")} /etc/ufw`,
      `mount --bind ${join(dir, "lib-ufw")} /lib/ufw`,
      "ufw allow 80/tcp >/dev/null",
      `bash ${apply} ${join(dir, "ufw-1.conf")} 2>/dev/null`,
      "echo '== first'; ufw show added",
      `bash ${apply} ${join(dir, "ufw-1.conf")} 2>/dev/null`,
      "echo '== again'; ufw show added",
      "echo '== status'; ufw status verbose",
      `bash ${apply} ${join(dir, "ufw-2.conf")} 2>/dev/null`,
      "echo '== both'; ufw show added",
      `bash ${apply} ${join(dir, "ufw-3.conf")} 2>/dev/null`,
      "echo '== moved'; ufw show added",
      `bash ${apply} ${join(dir, "ufw-bad.conf")} 2>&1 && echo '== three ports accepted' || echo "== three ports refused: $?"`,
      "echo '== after'; ufw show added",
    ].join("\n");
    const r = spawnSync("unshare", ["--net", "--mount", "--propagation", "private", "bash", "-c", script], { encoding: "utf8", timeout: 120_000 });
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    const section = (name: string) => r.stdout.split(`== ${name}\n`)[1].split("\n== ")[0];
    const wanted = [
      "ufw allow from 203.0.113.7 to any port 2222 proto tcp comment 'keel-ssh'",
      "ufw allow from 198.51.100.0/24 to any port 2222 proto tcp comment 'keel-ssh'",
      "ufw allow from 2001:db8::/48 to any port 2222 proto tcp comment 'keel-ssh'",
    ];
    const rules = (text: string) => text.split("\n").filter((l) => l.startsWith("ufw ")).sort();
    expect(rules(section("first"))).toEqual([...wanted].sort());
    expect(rules(section("again"))).toEqual([...wanted].sort());
    expect(section("status")).toContain("Status: active");
    // Routed shows "disabled" in a namespace without forwarding; ufw-apply sets it to deny.
    expect(section("status")).toContain("Default: deny (incoming), allow (outgoing)");
    // keel:sshPortNext: both ports from the same sources, then the old one closed.
    expect(rules(section("both"))).toEqual([
      "ufw allow from 198.51.100.0/24 to any port 2200 proto tcp comment 'keel-ssh'",
      "ufw allow from 198.51.100.0/24 to any port 2222 proto tcp comment 'keel-ssh'",
    ]);
    expect(rules(section("moved"))).toEqual(["ufw allow from 198.51.100.0/24 to any port 2200 proto tcp comment 'keel-ssh'"]);
    expect(r.stdout).toMatch(/3 'port' lines; SSH is served on one port, two while it moves\n== three ports refused: 2/);
    expect(rules(section("after"))).toEqual(rules(section("moved")));
  }, 180_000);
});
