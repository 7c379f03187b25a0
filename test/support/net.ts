// Loopback helpers for the host tests that start servers of their own (sshd, a git daemon).
import { connect } from "node:net";

/** A TCP port on 127.0.0.1 that nothing listens on right now (the VM runner's own). */
export { freePort } from "../../local/vm/qemu";

/** Whether something accepts a TCP connection on 127.0.0.1:`port` now. */
export function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    socket.once("connect", () => (socket.destroy(), resolve(true)));
    socket.once("error", () => resolve(false));
  });
}
