import { describe, expect, it } from "vitest";
import { parseConfig, type KeelConfig } from "../../config";
import type { Bundle } from "../../plan/types";
import { imagePython } from "../support/stack";
import { HARDENING_PATHS, fail2banExemptCidrs, hardeningFiles, hardeningSteps, hardeningUnits, kernelPortList, kexAlgorithms, sshdReload, fail2banJailUp, sysctlConf } from "../../plan/hardening";

function config(overrides: Record<string, string> = {}): KeelConfig {
  return parseConfig({
    "keel:adminKeys": JSON.stringify(["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINqq0Bv8sC7o5PLFDEsS8SQAds+XBFfF5FEvGdrrefNn admin1@example"]),
    "keel:allowedSshCidrs": JSON.stringify(["203.0.113.7/32", "2001:db8::/48"]),
    "keel:repoUrl": "git@github.com:example/engine.git",
    "keel:repoRef": "0123456789abcdef0123456789abcdef01234567",
    "keel:pythonVersion": imagePython(overrides),
    "keel:startCommand": "python -m engine",
    ...overrides,
  });
}

const bundleOf = (cfg: KeelConfig, name: string): Bundle => JSON.parse(hardeningSteps(cfg).find((s) => s.name === `harden-${name}`)!.stdin!);

describe("hardeningSteps (pulumi up re-converges the first boot's hardening)", () => {
  it("runs one keel-place step per unit, with unique kebab-case names", () => {
    const steps = hardeningSteps(config());
    expect(steps.map((s) => s.name)).toEqual(hardeningUnits(config()).map((u) => `harden-${u.name}`));
    expect(new Set(steps.map((s) => s.name)).size).toBe(steps.length);
    for (const step of steps) expect(step.command).toBe("sudo /usr/local/sbin/keel-place");
  });

  it("places exactly the files the first boot writes", () => {
    const cfg = config();
    const placed = hardeningSteps(cfg).flatMap((s) => (JSON.parse(s.stdin!) as Bundle).files);
    expect(placed).toEqual(hardeningFiles(cfg));
    expect(new Set(placed.map((f) => f.path)).size).toBe(placed.length);
  });

  it("rolls back an sshd drop-in that fails sshd -t, and reloads sshd only when it changed", () => {
    const sshd = bundleOf(config(), "sshd");
    expect(sshd.files.map((f) => f.path)).toEqual([HARDENING_PATHS.sshdDropIn]);
    expect(sshd.check).toEqual(["sshd", "-t"]);
    expect(sshd.onChange).toEqual([sshdReload(config())]);
    expect(sshd.onChange![0].join(" ")).toContain("systemctl reload-or-restart ssh.service");
  });

  it("keeps sshd_config at 0600 at most without writing it, alongside the drop-in", () => {
    expect(bundleOf(config(), "sshd").modes).toEqual([{ path: HARDENING_PATHS.sshdConfig, owner: "root", mode: "0600" }]);
  });

  it("locks every password that works and checks the whole sudoers configuration before keeping keel's file", () => {
    const root = bundleOf(config({ "keel:deployUser": "ops" }), "root-access");
    expect(root.lockPasswords).toBe(true);
    expect(root.check).toEqual(["visudo", "-c"]);
    expect(root.files).toEqual([expect.objectContaining({ path: HARDENING_PATHS.sudoers, owner: "root", group: "root", mode: "0440" })]);
    // sudo and sudo-rs skip a sudoers.d file whose name has a dot.
    expect(HARDENING_PATHS.sudoers.split("/").pop()).not.toContain(".");
    expect(root.files[0].content.trimEnd().split("\n").at(-1)).toBe("ops ALL=(root) NOPASSWD:EXEC: /usr/local/sbin/keel-*");
  });

  it("reserves the SSH port(s) from outgoing connections, written as the kernel prints the list", () => {
    expect(kernelPortList([22])).toBe("22");
    expect(kernelPortList([2223, 22, 2222, 22])).toBe("22,2222-2223");
    expect(kernelPortList([61000, 61002, 61001, 65535])).toBe("61000-61002,65535");
    const reserved = (overrides: Record<string, string>) => sysctlConf(config(overrides)).match(/^net\.ipv4\.ip_local_reserved_ports = (.*)$/m)?.[1];
    expect(reserved({})).toBe("22");
    expect(reserved({ "keel:sshPort": "2222", "keel:sshPortNext": "61000" })).toBe("2222,61000");
    expect(sysctlConf(config())).toMatch(/^net\.ipv4\.ip_local_port_range = 32768 65535$/m);
  });

  it("tests the fail2ban jail before keeping it, and re-applies UFW when the allowed sources change", () => {
    expect(bundleOf(config(), "fail2ban").check).toEqual(["fail2ban-client", "--test"]);
    expect(bundleOf(config(), "fail2ban").onChange).toEqual([["systemctl", "reload-or-restart", "fail2ban.service"], fail2banJailUp()]);
    expect(bundleOf(config(), "firewall").onChange).toEqual([[HARDENING_PATHS.ufwApply, HARDENING_PATHS.ufwConf]]);
    expect(bundleOf(config(), "metadata-guard").check).toEqual(["nft", "-c", "-f", HARDENING_PATHS.metadataGuardRules]);
  });

  it("re-runs a step only when its own inputs change", () => {
    const before = hardeningSteps(config());
    const after = hardeningSteps(config({ "keel:allowedSshCidrs": JSON.stringify(["198.51.100.0/24"]) }));
    const changed = after.filter((s, i) => s.hash !== before[i].hash).map((s) => s.name);
    expect(changed.sort()).toEqual(["harden-fail2ban", "harden-firewall"]);
    const debian13 = hardeningSteps(config({ "keel:image": "debian-13" }));
    // From Ubuntu 24.04: the KEX list (OpenSSH 10.0) and squashfs, which Ubuntu's snaps need.
    expect(debian13.filter((s, i) => s.hash !== before[i].hash).map((s) => s.name)).toEqual(["harden-modules", "harden-sshd"]);
  });

  it("keeps every file root-owned, scripts executable and nothing world-writable", () => {
    for (const f of hardeningFiles(config())) {
      expect([f.owner, f.group]).toEqual(["root", "root"]);
      // Scripts executable; audit rules root-only like the package's own; sudoers read-only, as
      // visudo wants it; the rest world-readable.
      const mode = f.path.startsWith("/usr/local/lib/keel/") ? "0755" : f.path.startsWith("/etc/audit/") ? "0640" : f.path.startsWith("/etc/sudoers.d/") ? "0440" : "0644";
      expect(f.mode, f.path).toBe(mode);
    }
  });
});

describe("kexAlgorithms", () => {
  it("lists post-quantum hybrids first and only from the OpenSSH version that has them", () => {
    expect(kexAlgorithms("debian-12")[0]).toBe("sntrup761x25519-sha512@openssh.com");
    expect(kexAlgorithms("ubuntu-24.04")).not.toContain("mlkem768x25519-sha256");
    expect(kexAlgorithms("debian-13")[0]).toBe("mlkem768x25519-sha256");
    for (const image of ["debian-12", "ubuntu-24.04", "debian-13"] as const) expect(kexAlgorithms(image)).toContain("curve25519-sha256");
  });
});

describe("fail2ban exemptions", () => {
  it("exempts narrow admin networks but never an allow-list broad enough to hold attackers", () => {
    expect(fail2banExemptCidrs({ allowedSshCidrs: ["0.0.0.0/0", "::/0", "10.0.0.0/8", "172.16.0.0/16", "203.0.113.7/32", "2001:db8::/32", "2001:db8:1::/48"] })).toEqual([
      "172.16.0.0/16",
      "203.0.113.7/32",
      "2001:db8:1::/48",
    ]);
  });
});
