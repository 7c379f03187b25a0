// Tier 3 (DESIGN.md "Testing tiers"), issue 6 "Checks in the VM": keel's first-boot payload on a
// real Debian 12 VM. The VM boots with the user-data renderCloudConfig makes for a stack (image
// debian-12, a host key from ssh-keygen), byte for byte what Hetzner would get; the plan's first
// steps then converge it over SSH as `pulumi up` would, retiring one admin key. Then the checks an
// auditor would make (support/hardeningSuite.ts, which the Debian 13 file makes too), once after the
// first boot and again after a reboot.
// One VM; the tests run in order and share it. Root in the guest comes from a test-only keel tool
// (support/keelVm.ts installRootHelper). Traffic stays on 127.0.0.1 and inside the guest: the ban
// test attacks from a network namespace the test makes in the guest.
import * as fs from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { firstBootPackages } from "../../plan/hardening";
import type { KeelConfig } from "../../config";
import { runSteps, StepError } from "../../local/runSteps";
import type { Vm } from "../../local/vm";
import { buildHostPlan } from "../../plan/hostPlan";
import { ATTACKER_CIDR, expectCloudInitClean, IPV6_CLIENT_CIDR, ufwStatus } from "./support/hardeningChecks";
import { convergeFirstBootedHost, hardenedHostChecks, sshAs, type HardenedHost } from "./support/hardeningSuite";
import {
  MINUTE,
  QEMU_HOST_CIDR,
  ROOT_HELPER,
  asRoot,
  deployableVm,
  keyPair,
  sh,
  testHostConfig,
  type KeyPair,
  FIRST_BOOT_HOOK_LIMIT,
} from "./support/keelVm";

const ALLOWED = [QEMU_HOST_CIDR, ATTACKER_CIDR, IPV6_CLIENT_CIDR];

let tmp: string;
let admin: KeyPair;
let second: KeyPair;
let hostKey: KeyPair;
let wrongHostKey: KeyPair;
/** The stack at first boot: the run's test host (one admin key, SSH from this machine only). */
let firstCfg: KeelConfig;
/** The next `pulumi up`: a second admin key. */
let addedCfg: KeelConfig;
/** The one after: the second key retired, and SSH allowed from the attacker's addresses and an IPv6 network too. */
let cfg: KeelConfig;
let vm: Vm;
let resumed: boolean;

beforeAll(async () => {
  const d = await deployableVm("hardening");
  ({ tmp, vm, cfg: firstCfg, admin, hostKey, resumed } = d);
  second = keyPair(tmp, "second");
  wrongHostKey = keyPair(tmp, "wrong-host");
  const keys = (adminKeys: KeyPair[], retired: KeyPair[], cidrs: string[]) => ({
    "keel:adminKeys": JSON.stringify(adminKeys.map((k) => k.publicKey)),
    "keel:retiredKeys": JSON.stringify(retired.map((k) => k.publicKey)),
    "keel:allowedSshCidrs": JSON.stringify(cidrs),
  });
  addedCfg = testHostConfig(admin.publicKey, d.commit, keys([admin, second], [], [QEMU_HOST_CIDR]));
  cfg = testHostConfig(admin.publicKey, d.commit, keys([admin], [second], ALLOWED));
}, FIRST_BOOT_HOOK_LIMIT);

afterAll(async () => {
  await vm?.shutdown();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
}, 3 * MINUTE);

/** The host as the checks see it: the stack as last converged (cfg). */
const host = (): HardenedHost => ({ vm, tmp, cfg, admin, hostKey, wrongHostKey });
const ssh = (key: KeyPair, opts: { user?: string; options?: string[] } = {}) => sshAs(host(), key, opts);

describe("keel's first boot on Debian 12", () => {
  it("finishes cloud-init: status done, no error, no warning", async () => {
    console.log(`hardening VM (${vm.accel}): ${resumed ? "resumed from the run's first boot" : "first boot done"}`);
    await expectCloudInitClean(vm, { recoverable: true });
    expect(await asRoot(vm, "cat /var/log/cloud-init-output.log")).toMatch(/keel: \/ has enough free disk \(\d+ GiB free, 1 GiB required\)/);
    // The first boot's own firewall: SSH from the stack's one allowed CIDR.
    expect((await ufwStatus(vm)).rules).toEqual([{ to: "22/tcp", action: "ALLOW IN", from: "10.0.2.2", comment: "keel-ssh" }]);
    expect(firstCfg.allowedSshCidrs).toEqual([QEMU_HOST_CIDR]);
  }, 5 * MINUTE);

  it("lets the deploy user in with the first-boot admin key, and no key the stack does not list yet", async () => {
    expect((await ssh(admin)).stdout).toBe("keel-ok\n");
    const notYet = await ssh(second);
    expect(notYet.code).toBe(255);
    expect(notYet.stderr).toContain("Permission denied (publickey).");
  }, 5 * MINUTE);

  it("converges with the plan's steps: the hardening is already as planned, a second admin key is let in", async () => {
    const runs = await convergeFirstBootedHost(vm, addedCfg);
    expect(runs.find((r) => r.name === "admin-keys")!.stdout).toMatch(/^keel-place: 1 changed/m);
    expect((await ssh(second)).stdout).toBe("keel-ok\n");
  }, 15 * MINUTE);

  it("retires the second key and allows SSH from more CIDRs on the next up: only what changed is converged", async () => {
    const before = buildHostPlan(addedCfg).steps;
    const changed = buildHostPlan(cfg).steps.filter((s, i) => s.name.startsWith("harden-") || s.name === "admin-keys" ? s.hash !== before[i].hash : false);
    expect(changed.map((s) => s.name).sort()).toEqual(["admin-keys", "harden-firewall"]);
    const runs = await runSteps(vm, changed, {});
    for (const run of runs) expect(run.stdout, run.name).toMatch(/^keel-place: [1-9]\d* changed/m);
    const retired = await ssh(second);
    expect(retired.code).toBe(255);
    expect(retired.stderr).toContain("Permission denied (publickey).");
    expect((await ssh(admin)).stdout).toBe("keel-ok\n");
  }, 15 * MINUTE);

  it("finds every installed file as its package shipped it (keel-ops verify-packages, debsums)", async () => {
    expect(await sh(vm, "sudo keel-ops verify-packages", { timeoutMs: 20 * MINUTE })).toBe("keel-ops: every installed package file matches its package\n");
  }, 25 * MINUTE);
});

hardenedHostChecks(host, "after the first boot and the first converge", 0);

describe("a reboot", () => {
  it("comes back with cloud-init done and no new error", async () => {
    const bootsBefore = Number((await sh(vm, "journalctl --list-boots --no-pager | wc -l")).trim());
    await vm.reboot({ command: `sudo ${ROOT_HELPER} systemctl reboot`, timeoutMs: 20 * MINUTE });
    await vm.waitForCloudInit(10 * MINUTE, { allowRecoverable: true });
    await expectCloudInitClean(vm, { recoverable: true });
    // The journal kept the first boot: it is persistent.
    expect(Number((await sh(vm, "journalctl --list-boots --no-pager | wc -l")).trim())).toBe(bootsBefore + 1);
  }, 35 * MINUTE);
});

hardenedHostChecks(host, "after a reboot", 1);

describe("a server first booted by an older keel, before auditd and debsums were first-boot packages", () => {
  const named = (...names: string[]) => buildHostPlan(cfg).steps.filter((s) => names.includes(s.name));

  it("stops at harden-audit without them, then gets them from the packages step and loads keel's audit rules", async () => {
    // What that first boot left: no auditd (purged), debsums removed with its configuration kept
    // (dpkg's "rc", which keel-packages counts as missing), no keel audit rules.
    await asRoot(vm, "export DEBIAN_FRONTEND=noninteractive; apt-get purge -y -q auditd && apt-get remove -y -q debsums && rm -f /etc/audit/rules.d/50-keel.rules", { timeoutMs: 15 * MINUTE });
    expect((await vm.exec("test -e /usr/sbin/augenrules || test -e /usr/bin/debsums")).code).toBe(1);
    // The failure the packages step exists for: keel-place places the rules, then cannot load them.
    const failed = await runSteps(vm, named("harden-audit"), {}).then(() => undefined, (err: unknown) => err);
    expect(failed).toBeInstanceOf(StepError);
    expect((failed as StepError).message).toContain("on-change command 'augenrules --load' cannot run");

    const [packages, audit] = await runSteps(vm, named("packages", "harden-audit"), {});
    expect(packages.stdout).toMatch(/^keel-packages: missing auditd debsums; installing\n/);
    expect(packages.stdout).toMatch(/\nkeel-packages: installed auditd debsums\n$/);
    // The rules file stayed placed; the load the failed run owed runs now.
    expect(audit.stdout).toBe("keel-place: running the on-change commands an earlier run left failed\nkeel-place: 0 changed, 1 file(s) already as planned\n");
    expect((await sh(vm, "dpkg-query -W -f='${db:Status-Abbrev}\\n' auditd debsums")).split("\n")).toEqual(["ii ", "ii ", ""]);
    expect((await sh(vm, "systemctl is-active auditd")).trim()).toBe("active");
    const rules = (await asRoot(vm, "auditctl -l")).split("\n");
    for (const rule of ["-w /etc/keel -p wa -k keel", "-w /etc/sudoers -p wa -k sudoers", "-w /etc/ssh -p wa -k sshd"]) expect(rules).toContain(rule);
    expect(await asRoot(vm, "auditctl -s | grep '^enabled'")).toBe("enabled 1\n");

    // Run again: everything is there, no apt runs.
    const [again] = await runSteps(vm, named("packages"), {});
    expect(again.stdout).toBe(`keel-packages: all ${firstBootPackages(cfg.image).length} packages installed, nothing to do\n`);
  }, 30 * MINUTE);
});
