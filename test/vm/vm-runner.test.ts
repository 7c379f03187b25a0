// Tier 3 (DESIGN.md "Testing tiers"): a real Debian 12 VM under qemu. Builds the image (cached
// outside the repo after the first run), boots it with a small user-data made here, and proves
// what the end-to-end tests rely on: cloud-init finishes cleanly, the pinned host key is the one
// presented, apt works offline, the clock follows this machine's, execs share a connection, a
// snapshot resumes as independent VMs, reboot and shutdown work and leave nothing behind; then, on
// a second VM, that a guest kernel panic ends the wait at once instead of at its timeout.
// One VM at a time; steps run in order and share the VM.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { stringify } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { keyPair, type KeyPair } from "../../local/localStack";
import { bootVm, buildImage, GuestPanicError, imageKey, isHostKeyFailure, kernelPanic, parseCloudInitStatus, resumeVm, type ImageInfo, type SshLogin, type Vm } from "../../local/vm";
import { knownHostsLine, sshArgs } from "../../local/vm/ssh";
import { logProblems } from "../../local/vm/vm";

const MINUTE = 60_000;

/** A small user-data: the login user with the key of `login`, and `hostKey` as the only host key. */
function plainUserData(login: SshLogin, hostKey: { privateKey: string; publicKey: string }): string {
  return `#cloud-config\n${stringify({
    users: [{
      name: login.user,
      shell: "/bin/bash",
      sudo: "ALL=(ALL) NOPASSWD:ALL",
      ssh_authorized_keys: [fs.readFileSync(`${login.identityFile}.pub`, "utf8").trim()],
    }],
    // With ssh_keys given, cloud-init generates no other host key; `ssh_genkeytypes: []` would
    // say so too, but the schema wants at least one item and cloud-init warns (Debian 12 too).
    ssh_deletekeys: true,
    ssh_keys: { ed25519_private: hostKey.privateKey, ed25519_public: hostKey.publicKey },
  })}`;
}

function qemuProcessesFor(dir: string): string[] {
  return fs.readdirSync("/proc").filter((p) => /^\d+$/.test(p)).filter((p) => {
    try {
      return fs.readFileSync(`/proc/${p}/cmdline`, "utf8").includes(dir);
    } catch {
      return false;
    }
  });
}

describe("local VM runner, the parts that need no VM", () => {
  it("keys the image cache on the release and the package set, not on order or repeats", () => {
    const key = imageKey("bookworm", ["ufw", "git"]);
    expect(imageKey("bookworm", ["git", "ufw", "git"])).toBe(key);
    expect(imageKey("trixie", ["ufw", "git"])).not.toBe(key);
    expect(imageKey("bookworm", ["ufw"])).not.toBe(key);
  });

  it("refuses a package list entry that is not a package name", async () => {
    await expect(buildImage({ release: "bookworm", repoPackages: ["ufw", "-oAPT::Get=1"] }))
      .rejects.toThrow('repoPackages: "-oAPT::Get=1" is not a Debian package name');
  });

  it("pins exactly one host key and never trusts on first use", () => {
    const line = knownHostsLine(2222, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx4 host@example\n");
    expect(line).toBe("[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx4\n");
    expect(() => knownHostsLine(22, "not a key")).toThrow("expected an OpenSSH public key line");
    const args = sshArgs({ port: 2222, login: { user: "deploy", identityFile: "/k" }, knownHostsFile: "/kh" }).join(" ");
    expect(args).toContain("StrictHostKeyChecking=yes");
    expect(args).toContain("UserKnownHostsFile=/kh");
    expect(args).toContain("GlobalKnownHostsFile=/dev/null");
    expect(args).not.toMatch(/StrictHostKeyChecking=(no|accept-new)/);
  });

  it("reads cloud-init's status from 22.4 (Debian 12) and 25.x (Debian 13)", () => {
    const old = parseCloudInitStatus(JSON.stringify({ status: "done", errors: [], datasource: "nocloud" }));
    expect(old).toMatchObject({ status: "done", errors: [], recoverableErrors: {} });
    const recent = parseCloudInitStatus(JSON.stringify({
      status: "done", errors: [], recoverable_errors: { WARNING: ["w1"], DEPRECATED: [] },
    }));
    expect(recent.recoverableErrors).toEqual({ WARNING: ["w1"] });
    const failed = parseCloudInitStatus(JSON.stringify({ status: "error", errors: ["boom"] }));
    expect(failed).toMatchObject({ status: "error", errors: ["boom"] });
  });

  it("finds a kernel panic in a serial console log, and none in a clean one", () => {
    const panicked = [
      "[  OK  ] Started ssh.service - OpenBSD Secure Shell server.\r",
      "[  443.566657] traps: PANIC: double fault, error_code: 0x0\r",
      "[  443.581716] Kernel panic - not syncing: Fatal exception in interrupt\r",
      "[  443.593691] ---[ end Kernel panic - not syncing: Fatal exception in interrupt ]---\r",
    ].join("\n");
    expect(kernelPanic(panicked)).toBe("Kernel panic - not syncing: Fatal exception in interrupt");
    expect(kernelPanic("[  OK  ] Reached target cloud-init.target - Cloud-init target.\n[  OK  ] Finished panic-free.service\n")).toBeUndefined();
  });

  it("collects WARNING and worse from a cloud-init.log", () => {
    const log = [
      "2026-11-22 01:30:31,406 - schema.py[WARNING]: Invalid cloud-config provided",
      "2026-11-22 01:30:32,000 - util.py[DEBUG]: Running command",
      "2026-11-22 01:30:33,000 - cc_x.py[ERROR]: failed",
    ].join("\n");
    expect(logProblems(log)).toEqual({ WARNING: ["Invalid cloud-config provided"], ERROR: ["failed"] });
  });
});

describe("local VM runner on Debian 12", () => {
  let tmp: string;
  let login: SshLogin;
  let hostKey: KeyPair;
  let otherHostKey: KeyPair;
  let image: ImageInfo;
  let vm: Vm | undefined;

  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "keel-runner-test-"));
    login = { user: "deploy", identityFile: keyPair(tmp, "deploy").file };
    hostKey = keyPair(tmp, "host");
    otherHostKey = keyPair(tmp, "other-host");
  });

  afterAll(async () => {
    await vm?.shutdown();
    fs.rmSync(tmp, { recursive: true, force: true });
  }, 2 * MINUTE);

  it("builds the image, or finds it in the cache", async () => {
    image = await buildImage({ release: "bookworm" });
    for (const file of [image.image, image.kernel, image.initrd]) expect(fs.statSync(file).size).toBeGreaterThan(0);
    expect(image.repoPackages).toContain("ufw");
    // Same inputs, same entry.
    expect((await buildImage({ release: "bookworm" })).dir).toBe(image.dir);
  }, 30 * MINUTE);

  it("boots, and cloud-init finishes with no error or warning", async () => {
    const userData = plainUserData(login, hostKey);
    vm = await bootVm({ image, userData, hostPublicKey: hostKey.publicKey, login });
    // Ceilings, not expectations: ~1-2 min when this is the only VM, many more when other VMs
    // share the machine's two cores.
    const status = await vm.waitForCloudInit(25 * MINUTE);
    expect(status.status).toBe("done");
    expect(status.errors).toEqual([]);
    expect(status.recoverableErrors).toEqual({});
  }, 26 * MINUTE);

  it("presents the pinned host key and no other", async () => {
    const pinned = await vm!.exec("true");
    expect(pinned.code, pinned.stderr).toBe(0);
    const other = await vm!.exec("true", { hostPublicKey: otherHostKey.publicKey });
    expect(isHostKeyFailure(other), other.stderr).toBe(true);
    const hostKeys = await vm!.exec("ls /etc/ssh/ | grep '^ssh_host_'");
    expect(hostKeys.stdout.trim().split("\n")).toEqual(["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"]);
  }, 5 * MINUTE);

  it("keeps the guest off the network: the host's own forwarded port is unreachable", async () => {
    const probe = await vm!.exec(`timeout 10 bash -c 'exec 3<>/dev/tcp/10.0.2.2/${vm!.sshPort()}' && echo reached`);
    expect(probe.stdout).not.toContain("reached");
  }, 5 * MINUTE);

  it("installs a package from the baked offline repository", async () => {
    // sqlite3: small, and not in the base image (keel's payload installs it at first boot).
    const install = await vm!.exec("sudo -n DEBIAN_FRONTEND=noninteractive apt-get install -y sqlite3", { timeoutMs: 15 * MINUTE });
    expect(install.code, install.stdout + install.stderr).toBe(0);
    expect((await vm!.exec("dpkg-query -W -f '${Status}' sqlite3")).stdout).toBe("install ok installed");
  }, 16 * MINUTE);

  it("keeps time from this machine's clock: timesyncd synchronized through keel-vm-time, the clock within a second", async () => {
    expect(await vm!.waitForClock(2 * MINUTE)).toBeLessThan(1_000);
    const synced = await vm!.exec("for i in $(seq 60); do [ \"$(timedatectl show -p NTPSynchronized --value)\" = yes ] && exit 0; sleep 1; done; timedatectl timesync-status; exit 1");
    expect(synced.code, synced.stdout + synced.stderr).toBe(0);
    expect((await vm!.exec("timedatectl show-timesync -p ServerAddress --value")).stdout.trim()).toBe("127.0.0.1");
  }, 5 * MINUTE);

  it("shares one SSH connection between execs, and still opens one of its own beyond the sessions it may carry", async () => {
    const sessions = await Promise.all([1, 2, 3, 4].map(() => vm!.exec("echo $SSH_CONNECTION")));
    expect(sessions.map((r) => r.code)).toEqual([0, 0, 0, 0]);
    // The client's source port tells connections apart: at most two sessions share the master.
    const ports = sessions.map((r) => r.stdout.trim().split(" ")[1]);
    expect(new Set(ports).size).toBeGreaterThanOrEqual(2);
    expect(new Set(ports).size).toBeLessThan(4);
  }, 5 * MINUTE);

  it("snapshots the running guest and resumes two VMs from it, each on its own disk, clock set to now", async () => {
    await vm!.exec("echo before-snapshot > ~/marker");
    const snapshot = path.join(tmp, "snapshot");
    await vm!.snapshot(snapshot);
    expect(fs.statSync(snapshot).mode & 0o777).toBe(0o700);
    // The original goes on.
    expect((await vm!.exec("cat ~/marker")).stdout).toBe("before-snapshot\n");
    const forks = await Promise.all([0, 1].map(() => resumeVm(snapshot, { hostPublicKey: hostKey.publicKey, login })));
    try {
      for (const [i, fork] of forks.entries()) {
        expect((await fork.exec("cat ~/marker")).stdout).toBe("before-snapshot\n");
        expect(Math.abs(await fork.waitForClock())).toBeLessThan(1_000);
        await fork.exec(`echo fork-${i} > ~/marker`);
      }
      expect((await forks[0].exec("cat ~/marker")).stdout).toBe("fork-0\n");
      expect((await forks[1].exec("cat ~/marker")).stdout).toBe("fork-1\n");
      expect((await vm!.exec("cat ~/marker")).stdout).toBe("before-snapshot\n");
      // The same host key: a fork is the same machine.
      const other = await forks[0].exec("true", { hostPublicKey: otherHostKey.publicKey });
      expect(isHostKeyFailure(other), other.stderr).toBe(true);
    } finally {
      await Promise.all(forks.map((f) => f.shutdown()));
    }
  }, 15 * MINUTE);

  it("reboots and answers over SSH with the pinned key again", async () => {
    const before = (await vm!.exec("cat /proc/sys/kernel/random/boot_id")).stdout;
    await vm!.reboot({ timeoutMs: 20 * MINUTE });
    const after = await vm!.exec("cat /proc/sys/kernel/random/boot_id");
    expect(after.code).toBe(0);
    expect(after.stdout).not.toBe(before);
  }, 21 * MINUTE);

  it("shuts down, leaving no qemu process and no files", async () => {
    const { dir, pid } = vm!;
    await vm!.shutdown();
    expect(vm!.running).toBe(false);
    expect(fs.existsSync(`/proc/${pid}`)).toBe(false);
    expect(qemuProcessesFor(dir)).toEqual([]);
    expect(fs.existsSync(dir)).toBe(false);
    expect(vm!.serialLog()).toContain("reboot: Power down");
  }, 3 * MINUTE);
});

describe("a guest kernel panic, on a second Debian 12 VM", () => {
  let tmp: string | undefined;
  let vm: Vm | undefined;

  afterAll(async () => {
    await vm?.shutdown();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  }, 3 * MINUTE);

  it("ends the next wait at once with the panic line, not at the wait's timeout, and still shuts down", async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "keel-runner-panic-"));
    const login = { user: "deploy", identityFile: keyPair(tmp, "deploy").file };
    const hostKey = keyPair(tmp, "host");
    const built = await buildImage({ release: "bookworm" });
    // An init that exits at once panics the kernel seconds into the boot ("Attempted to kill
    // init!"): a real panic, without first booting a whole VM to crash it. (An init that does not
    // exist would not do: Debian's initramfs falls back to /sbin/init and the guest boots.)
    const image = { ...built, cmdline: `${built.cmdline} init=/bin/true panic=0` };
    vm = await bootVm({ image, userData: plainUserData(login, hostKey), hostPublicKey: hostKey.publicKey, login });
    // Without the panic check this wait would sit out its 15 minutes and fail with "did not
    // finish", as a CI run once did for 30 on Debian 13.
    const failed = await vm.waitForCloudInit(15 * MINUTE).then(() => undefined, (err: unknown) => err);
    expect(failed).toBeInstanceOf(GuestPanicError);
    expect((failed as Error).message).toMatch(/^the guest kernel panicked while waiting for SSH: Kernel panic - not syncing: Attempted to kill init!/);
    const { dir, pid } = vm;
    await vm.shutdown();
    expect(vm.running).toBe(false);
    expect(fs.existsSync(`/proc/${pid}`)).toBe(false);
    expect(fs.existsSync(dir)).toBe(false);
  }, 20 * MINUTE);
});
