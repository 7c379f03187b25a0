import { spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseConfig, type KeelConfig } from "../../config";
import { fail2banJail } from "../../plan/hardening";

// keel's sshd jail checked by Debian's fail2ban: the configuration test, the resolved jail, and its
// filter against the lines sshd (OpenSSH < 9.8) and sshd-session (9.8+) write to the journal.
// fail2ban, python3-systemd (backend = systemd) and nftables (the ban action) come from the set-up
// (scripts/dev/debian-packages.txt).

const CIDRS = ["203.0.113.7/32", "2001:db8::/48"];
let dir: string;
let etc: string;
let cfg: KeelConfig;
let jail: string;

beforeAll(() => {
  cfg = parseConfig({
    "keel:sshPort": "2222",
    "keel:adminKeys": JSON.stringify(["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINqq0Bv8sC7o5PLFDEsS8SQAds+XBFfF5FEvGdrrefNn admin1@example"]),
    "keel:allowedSshCidrs": JSON.stringify(CIDRS),
    "keel:repoUrl": "git@github.com:example/engine.git",
    "keel:repoRef": "0123456789abcdef0123456789abcdef01234567",
    "keel:pythonVersion": "3.12",
    "keel:startCommand": "python -m engine",
  });
  jail = fail2banJail(cfg);
  dir = mkdtempSync(join(tmpdir(), "keel-fail2ban-"));
  etc = join(dir, "fail2ban");
  cpSync("/etc/fail2ban", etc, { recursive: true });
  writeFileSync(join(etc, "jail.d", "keel.local"), jail);
}, 660_000);

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function client(...args: string[]) {
  return spawnSync("fail2ban-client", ["-c", etc, ...args], { encoding: "utf8", timeout: 60_000 });
}

describe("keel's fail2ban jail (Debian's fail2ban)", () => {
  it("passes fail2ban-client --test", () => {
    const r = client("--test");
    expect(r.stdout + r.stderr).toContain("OK: configuration test is successful");
    expect(r.status).toBe(0);
  });

  it("resolves to an sshd jail on the journal, on keel:sshPort, banning with nftables, incrementally, never the admins", () => {
    const dump = client("-d").stdout;
    expect(dump).toContain("['add', 'sshd', 'systemd']");
    expect(dump).toContain("['set', 'sshd', 'addjournalmatch', '_SYSTEMD_UNIT=ssh.service', '+', '_SYSTEMD_UNIT=sshd.service', '+', '_COMM=sshd', '+', '_COMM=sshd-session']");
    expect(dump).toContain(`['set', 'sshd', 'addignoreip', '127.0.0.1/8', '::1', ${CIDRS.map((c) => `'${c}'`).join(", ")}]`);
    expect(dump).toContain("['set', 'sshd', 'addaction', 'nftables-multiport']");
    expect(dump).toContain("['port', '2222']");
    expect(dump).toContain("['set', 'sshd', 'bantime.increment', True]");
    expect(dump).toContain("['set', 'sshd', 'maxretry', 5]");
    expect(dump).not.toMatch(/'start', '(?!sshd')/);
  });

  it("counts the failures a key-only sshd logs, from sshd and from OpenSSH 9.8+'s sshd-session", () => {
    const filter = jail.match(/^filter = (.*)$/m)![1];
    const failures = [
      "Invalid user admin from 198.51.100.7 port 40022",
      "User root from 198.51.100.7 not allowed because not listed in AllowUsers",
      "Connection closed by authenticating user deploy 198.51.100.7 port 40022 [preauth]",
      "Unable to negotiate with 198.51.100.7 port 40022: no matching key exchange method found. Their offer: diffie-hellman-group1-sha1 [preauth]",
    ];
    const lines = ["sshd", "sshd-session"].flatMap((daemon) => failures.map((msg) => `Nov 22 01:30:53 keel ${daemon}[4242]: ${msg}`));
    const log = join(dir, "auth.log");
    writeFileSync(log, [...lines, "Nov 22 01:30:54 keel sshd[4240]: Server listening on 0.0.0.0 port 2222.", ""].join("\n"));
    const r = spawnSync("fail2ban-regex", ["--config", etc, log, filter], { encoding: "utf8", timeout: 60_000 });
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/Lines: 9 lines, 0 ignored, 8 matched, 1 missed/);
  });
});
