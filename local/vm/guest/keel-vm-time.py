#!/usr/bin/python3
"""keel-vm-time: the local VM's way to the real time (baked into the VM image, not keel's payload).

A keel VM has no way out to an NTP server. qemu forwards one TCP address of the guest's network,
TIME_SOURCE below, to an NTP responder on the machine running the VM (local/vm/ntp-responder.js),
which answers from that machine's clock. This service
  - relays systemd-timesyncd's NTP requests from 127.0.0.1:123 (UDP) to it, so timesyncd
    synchronizes for a real reason and `timedatectl` reports NTPSynchronized=yes;
  - asks it for the time every STEP_CHECK_SECONDS itself and steps the clock when the two differ by
    more than STEP_THRESHOLD_SECONDS. That happens only when the VM was paused or resumed from a
    snapshot (Vm.snapshot and resumeVm in local/vm/vm.ts), as a cloud platform's guest agent does; small drifts are
    timesyncd's to slew.
"""
import select
import socket
import struct
import sys
import time

TIME_SOURCE = ("10.0.2.100", 123)
LISTEN = ("127.0.0.1", 123)
PACKET = 48
NTP_EPOCH_OFFSET = 2208988800
STEP_CHECK_SECONDS = 2.0
STEP_THRESHOLD_SECONDS = 1.0


def log(message):
    print(f"keel-vm-time: {message}", file=sys.stderr, flush=True)


class Source:
    """One TCP connection to the time source, opened again whenever it fails."""

    def __init__(self):
        self.conn = None

    def ask(self, request):
        for attempt in (1, 2):
            try:
                if self.conn is None:
                    self.conn = socket.create_connection(TIME_SOURCE, timeout=5)
                self.conn.sendall(request)
                reply = b""
                while len(reply) < PACKET:
                    chunk = self.conn.recv(PACKET - len(reply))
                    if not chunk:
                        raise ConnectionError("the time source closed the connection")
                    reply += chunk
                return reply
            except OSError as err:
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise err
        return None


def ntp_seconds(packet, offset):
    seconds, fraction = struct.unpack("!II", packet[offset:offset + 8])
    return seconds - NTP_EPOCH_OFFSET + fraction / 2**32


def check_clock(source):
    """Steps the clock when it is more than STEP_THRESHOLD_SECONDS off the source's."""
    sent = time.time()
    seconds = int(sent) + NTP_EPOCH_OFFSET
    request = struct.pack("!B", (4 << 3) | 3) + bytes(39) + struct.pack("!II", seconds, int((sent % 1) * 2**32))
    reply = source.ask(request)
    received = time.time()
    offset = ((ntp_seconds(reply, 32) - sent) + (ntp_seconds(reply, 40) - received)) / 2
    if abs(offset) > STEP_THRESHOLD_SECONDS:
        time.clock_settime(time.CLOCK_REALTIME, time.time() + offset)
        log(f"stepped the clock by {offset:+.3f} s to the source's time (the VM was paused or resumed)")


def main():
    relay = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    relay.bind(LISTEN)
    source = Source()
    next_check = 0.0
    while True:
        now = time.monotonic()
        if now >= next_check:
            try:
                check_clock(source)
            except OSError as err:
                log(f"time source {TIME_SOURCE[0]}:{TIME_SOURCE[1]} unreachable: {err}")
            next_check = now + STEP_CHECK_SECONDS
        ready, _, _ = select.select([relay], [], [], max(next_check - time.monotonic(), 0))
        if not ready:
            continue
        request, peer = relay.recvfrom(512)
        if len(request) < PACKET:
            continue
        try:
            relay.sendto(source.ask(request[:PACKET]), peer)
        except OSError as err:
            log(f"could not relay a request from {peer[0]}:{peer[1]}: {err}")


if __name__ == "__main__":
    main()
