#!/usr/bin/env node
// @ts-check
/**
 * The VM's time source, on this machine: an NTP server answering from this machine's clock, one
 * 48-byte request at a time on stdin, one 48-byte reply on stdout. qemu starts it for each TCP
 * connection the guest opens to its guestfwd address (local/vm/vm.ts, TIME_SOURCE), so it lives
 * exactly as long as the VM's connection and needs no port on this machine. In the guest,
 * keel-vm-time (local/vm/guest/keel-vm-time.py, baked into the image) relays timesyncd's UDP
 * requests to it. Plain Node.js, no dependencies.
 */
"use strict";

/** Seconds from the NTP epoch (1900) to the Unix epoch (1970). */
const NTP_EPOCH_OFFSET = 2208988800;
const PACKET = 48;

/**
 * An NTP timestamp (seconds and 2^-32 fractions since 1900) for a Unix time in milliseconds.
 * @param {number} ms
 * @returns {Buffer}
 */
function ntpTime(ms) {
  const b = Buffer.alloc(8);
  const seconds = Math.floor(ms / 1000);
  b.writeUInt32BE((seconds + NTP_EPOCH_OFFSET) >>> 0, 0);
  b.writeUInt32BE(Math.floor(((ms % 1000) / 1000) * 2 ** 32) >>> 0, 4);
  return b;
}

/**
 * The server's reply to a client request: leap 0, version as asked, mode 4 (server), stratum 2
 * (synchronized to this machine's clock, refid "HOST"), the client's transmit time as the origin.
 * @param {Buffer} request 48 bytes
 * @param {number} receivedMs
 * @param {number} sentMs
 * @returns {Buffer}
 */
function reply(request, receivedMs, sentMs) {
  const version = (request[0] >> 3) & 0x7 || 4;
  const out = Buffer.alloc(PACKET);
  out[0] = (0 << 6) | (version << 3) | 4;
  out[1] = 2; // stratum
  out[2] = request[2]; // poll, as asked
  out.writeInt8(-20, 3); // precision: about a microsecond
  out.writeUInt32BE(0, 4); // root delay
  out.writeUInt32BE(0x00000100, 8); // root dispersion: ~4 ms
  out.write("HOST", 12, "ascii");
  ntpTime(receivedMs).copy(out, 16); // reference time
  request.copy(out, 24, 40, 48); // origin = the client's transmit timestamp
  ntpTime(receivedMs).copy(out, 32);
  ntpTime(sentMs).copy(out, 40);
  return out;
}

function main() {
  /** @type {Buffer} */
  let pending = Buffer.alloc(0);
  process.stdin.on("data", (chunk) => {
    const received = Date.now();
    pending = Buffer.concat([pending, chunk]);
    while (pending.length >= PACKET) {
      const request = pending.subarray(0, PACKET);
      pending = pending.subarray(PACKET);
      process.stdout.write(reply(request, received, Date.now()));
    }
  });
  process.stdin.on("end", () => process.exit(0));
}

module.exports = { reply, ntpTime };

if (require.main === module) main();
