// The local executor's stand-in for the Hetzner firewall (local/vm/vm.ts setFirewall): a real qemu
// with keel's user network (restrict=on, forwards on 127.0.0.1 only) and no disk (it idles in its
// firmware: the forward is qemu's own listening socket, which is all that opens or closes), driven
// through its monitor as the VM tier drives it.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { VmSession } from "../../local/vm";
import { freePort } from "../../local/vm/qemu";

/** Whether a TCP connection to 127.0.0.1:port is accepted. */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

describe("setFirewall: the forwarded guest ports a VM lets in", () => {
  const dir = mkdtempSync(join(tmpdir(), "keel-vm-firewall-"));
  let qemu: ChildProcess;
  let ports: Map<number, number>;
  let session: VmSession;

  beforeAll(async () => {
    ports = new Map([
      [22, await freePort()],
      [2222, await freePort()],
    ]);
    const forwards = [...ports].map(([guest, host]) => `hostfwd=tcp:127.0.0.1:${host}-:${guest}`);
    qemu = spawn(
      "qemu-system-x86_64",
      ["-nodefaults", "-no-user-config", "-display", "none", "-accel", "tcg", "-m", "64", "-netdev", ["user", "id=net0", "restrict=on", ...forwards].join(","), "-device", "virtio-net-pci,netdev=net0", "-qmp", `unix:${join(dir, "qmp.sock")},server=on,wait=off`],
      { stdio: "ignore" },
    );
    for (let i = 0; i < 100 && !(existsSync(join(dir, "qmp.sock")) && (await accepts(ports.get(22)!))); i++) await new Promise((r) => setTimeout(r, 100));
    session = new VmSession(dir, 22, ports, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeHostKeyForTestsOnly00000000000000000000", undefined);
  }, 60_000);

  afterAll(() => {
    qemu?.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });

  it("closes a port left out, keeps the others, opens it again; an unforwarded port is refused", async () => {
    expect([await accepts(ports.get(22)!), await accepts(ports.get(2222)!)]).toEqual([true, true]);
    await session.setFirewall([2222]);
    expect([await accepts(ports.get(22)!), await accepts(ports.get(2222)!)]).toEqual([false, true]);
    // Applying the same set again changes nothing.
    await session.setFirewall([2222]);
    expect([await accepts(ports.get(22)!), await accepts(ports.get(2222)!)]).toEqual([false, true]);
    await session.setFirewall([22, 2222]);
    expect([await accepts(ports.get(22)!), await accepts(ports.get(2222)!)]).toEqual([true, true]);
    await expect(session.setFirewall([22, 8080])).rejects.toThrow("setFirewall: guest port 8080 was not forwarded at boot (22, 2222)");
  });
});
