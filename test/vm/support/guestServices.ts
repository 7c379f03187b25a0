// Services a VM test runs on the guest's own loopback, as transient systemd units (systemd-run):
// a webhook listener that records every POST, and an SNTP server that lets systemd-timesyncd
// synchronize in a guest that has no way out (the VM's network is restricted to this machine).
// Both need the root helper (installRootHelper) and listen on 127.0.0.1 only.
import type { Vm } from "../../../local/vm";
import { asRoot, shellQuote, tryAsRoot } from "./keelVm";

const DIR = "/usr/local/lib/keel-test";

const WEBHOOK_LISTENER = `
import http.server, json, sys
port, log = int(sys.argv[1]), sys.argv[2]
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with open(log, "a") as f:
            f.write(json.dumps({"path": self.path, "type": self.headers.get("Content-Type"), "body": json.loads(body)}) + "\\n")
        self.send_response(204)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Hook).serve_forever()
`;

/** An NTP server answering from the guest's own clock (stratum 1, no leap warning): enough for timesyncd. */
const SNTP_SERVER = `
import socket, struct, time
EPOCH = 2208988800
def stamp(t):
    return struct.pack("!II", int(t) + EPOCH, int((t % 1) * 2**32))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 123))
while True:
    data, peer = s.recvfrom(512)
    if len(data) < 48:
        continue
    now = time.time()
    head = struct.pack("!BBbb", (0 << 6) | (4 << 3) | 4, 1, data[2], -20) + struct.pack("!II", 0, 0) + b"LOCL"
    s.sendto(head + stamp(now) + data[40:48] + stamp(now) + stamp(time.time()), peer)
`;

async function install(vm: Vm, name: string, source: string): Promise<string> {
  const file = `${DIR}/${name}`;
  await asRoot(vm, `mkdir -p ${DIR} && cat > ${file}`, { stdin: source });
  return file;
}

export interface WebhookListener {
  /** The URL keel-health should POST to. */
  readonly url: string;
  /** Every request received so far, oldest first. */
  received(): Promise<Array<{ path: string; type: string; body: Record<string, unknown> }>>;
}

/** Starts the webhook listener on 127.0.0.1:`port` of the guest, recording into a root-only file. */
export async function startWebhookListener(vm: Vm, port: number, path: string): Promise<WebhookListener> {
  const script = await install(vm, "webhook.py", WEBHOOK_LISTENER);
  // In /run: the test's record of what arrived is no file of the host's (the secret-hunt looks elsewhere).
  const log = "/run/keel-test-webhook.jsonl";
  await asRoot(vm, `rm -f ${log} && systemd-run --quiet --unit=keel-test-webhook --property=UMask=0077 /usr/bin/python3 ${script} ${port} ${log}`);
  await asRoot(vm, `for i in $(seq 50); do python3 -c 'import socket; socket.create_connection(("127.0.0.1", ${port}), 1)' 2>/dev/null && exit 0; sleep 0.2; done; exit 1`);
  return {
    url: `http://127.0.0.1:${port}${path}`,
    async received() {
      const r = await tryAsRoot(vm, `cat ${log}`);
      return r.stdout.split("\n").filter(Boolean).map((l) => JSON.parse(l));
    },
  };
}

/**
 * Points systemd-timesyncd at an SNTP server on the guest's loopback (a drop-in of the test's, not
 * a file keel placed) and waits until timedatectl reports the clock synchronized.
 */
export async function synchronizeClockLocally(vm: Vm): Promise<void> {
  const script = await install(vm, "sntp.py", SNTP_SERVER);
  await asRoot(vm, `systemd-run --quiet --unit=keel-test-ntp /usr/bin/python3 ${script}`);
  const dropIn = "/etc/systemd/timesyncd.conf.d/keel-test-ntp.conf";
  await asRoot(vm, `mkdir -p /etc/systemd/timesyncd.conf.d && printf '[Time]\\nNTP=127.0.0.1\\nFallbackNTP=\\n' > ${dropIn} && systemctl restart systemd-timesyncd`);
  const wait = `for i in $(seq 90); do [ "$(timedatectl show -p NTPSynchronized --value)" = yes ] && exit 0; sleep 1; done; timedatectl timesync-status; exit 1`;
  await asRoot(vm, `sh -c ${shellQuote(wait)}`, { timeoutMs: 3 * 60_000 });
}
