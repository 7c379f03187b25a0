// What a VM test does to the guest's services, through the root helper (installRootHelper): a
// webhook listener on the guest's own loopback (a transient systemd unit) that records every POST,
// and taking the guest's time source away and giving it back.
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
 * Takes the guest's time source away, as when a server loses its NTP servers: stops keel-vm-time
 * (the VM's relay to this machine's clock, docs/VM.md "Time") and systemd-timesyncd, then sets the
 * clock to the time it already has, which makes the kernel mark it unsynchronized (settimeofday
 * sets STA_UNSYNC), so `timedatectl` reports NTPSynchronized=no from then on.
 */
export async function loseTimeSync(vm: Vm): Promise<void> {
  await asRoot(vm, "sh -c 'systemctl stop systemd-timesyncd keel-vm-time && date -s @$(date +%s.%N) >/dev/null && timedatectl show -p NTPSynchronized --value'").then((out) => {
    if (out.trim() !== "no") throw new Error(`the clock still reads as synchronized after its time source was stopped: ${out.trim()}`);
  });
}

/** Gives the time source back (loseTimeSync) and waits until timedatectl reports the clock synchronized. */
export async function restoreTimeSync(vm: Vm): Promise<void> {
  await asRoot(vm, "systemctl start keel-vm-time systemd-timesyncd");
  const wait = `for i in $(seq 90); do [ "$(timedatectl show -p NTPSynchronized --value)" = yes ] && exit 0; sleep 1; done; timedatectl timesync-status; exit 1`;
  await asRoot(vm, `sh -c ${shellQuote(wait)}`, { timeoutMs: 3 * 60_000 });
}
