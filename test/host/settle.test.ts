// The commands around systemd in keel's steps and first boot, run for real against stand-ins of
// the tools they ask: the waits that follow a reload in the sshd and fail2ban hardening steps
// (cloud-init/hardening.ts sshdListening, fail2banJailUp), run as keel-place runs an onChange argv,
// against `ss` and `fail2ban-client` stand-ins that print what the real ones print (iproute2's
// `ss -Htlnp`, both address families) and a `sleep` that returns at once, so the whole wait runs
// in moments; and the first boot's enable-unless-enabled (cloud-init/userData.ts), in `sh` as
// cloud-init runs runcmd, against a `systemctl` stand-in that records what it was asked.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { fail2banJailUp, SETTLE_SECONDS, sshdListening } from "../../cloud-init/hardening";
import { enableUnlessEnabled } from "../../cloud-init/userData";
import { parseConfig } from "../../config";
import { ADMIN_KEY } from "../support/stack";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "keel-settle-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const cfg = (keys: Record<string, string>) =>
  parseConfig({
    "keel:adminKeys": JSON.stringify([ADMIN_KEY]),
    "keel:allowedSshCidrs": JSON.stringify(["203.0.113.7/32"]),
    "keel:repoUrl": "git@github.com:example/engine.git",
    "keel:repoRef": "0123456789abcdef0123456789abcdef01234567",
    "keel:pythonVersion": "3.11",
    "keel:startCommand": "python -m engine",
    ...keys,
  });

/** Runs `argv` with stand-ins first on PATH: `ss` prints `ssLines`, `fail2ban-client` exits `f2b`. */
function run(argv: string[], ssLines: string[], f2b = 0): { code: number; stderr: string; polls: number } {
  const bin = fs.mkdtempSync(path.join(tmp, "bin-"));
  const count = path.join(bin, "polls");
  fs.writeFileSync(path.join(bin, "ss"), `#!/bin/sh\n[ "$*" = "-Htlnp" ] || exit 9\necho x >>${count}\ncat <<'EOF'\n${ssLines.join("\n")}\nEOF\n`, { mode: 0o755 });
  fs.writeFileSync(path.join(bin, "fail2ban-client"), `#!/bin/sh\necho x >>${count}\nexit ${f2b}\n`, { mode: 0o755 });
  fs.writeFileSync(path.join(bin, "sleep"), "#!/bin/sh\nexit 0\n", { mode: 0o755 });
  const r = spawnSync(argv[0], argv.slice(1), { env: { PATH: `${bin}:/usr/bin:/bin` }, encoding: "utf8" });
  const polls = fs.existsSync(count) ? fs.readFileSync(count, "utf8").split("\n").filter(Boolean).length : 0;
  return { code: r.status ?? -1, stderr: r.stderr, polls };
}

const listen = (addr: string, proc = "sshd") => `LISTEN 0      128          ${addr}       ${addr.startsWith("[") ? "[::]:*" : "0.0.0.0:*"}    users:(("${proc}",pid=612,fd=3))`;

describe("sshdListening", () => {
  const moving = cfg({ "keel:sshPortNext": "2222" });

  it("holds at once when sshd listens on exactly the planned ports, on IPv4 and IPv6", () => {
    const r = run(sshdListening(moving), [listen("0.0.0.0:2222"), listen("0.0.0.0:22"), listen("[::]:22"), listen("[::]:2222"), listen("127.0.0.1:8000", "python3")]);
    expect(r).toMatchObject({ code: 0, polls: 1 });
  });

  it("fails, naming the ports, while sshd still listens on a port it should have left, or not yet on the new one", () => {
    const after = cfg({ "keel:sshPort": "2222" });
    for (const lines of [[listen("0.0.0.0:22"), listen("0.0.0.0:2222")], [listen("0.0.0.0:22")], []]) {
      const r = run(sshdListening(after), lines);
      expect(r.code).toBe(1);
      expect(r.polls).toBe(SETTLE_SECONDS);
      expect(r.stderr).toBe(`keel: sshd did not listen on port(s) 2222 (and no other) within ${SETTLE_SECONDS} s\n`);
    }
  });

  it("does not count another program's listener on the SSH port", () => {
    expect(run(sshdListening(cfg({})), [listen("0.0.0.0:22", "dropbear")]).code).toBe(1);
  });
});

describe("fail2banJailUp", () => {
  it("holds once fail2ban-client answers for the jail, and fails after the limit when it never does", () => {
    expect(run(fail2banJailUp(), [], 0)).toMatchObject({ code: 0, polls: 1 });
    const never = run(fail2banJailUp(), [], 255);
    expect(never).toMatchObject({ code: 1, polls: SETTLE_SECONDS });
    expect(never.stderr).toBe(`keel: fail2ban's sshd jail did not come up within ${SETTLE_SECONDS} s\n`);
  });
});

describe("enableUnlessEnabled", () => {
  /** Runs the command in sh with a systemctl that answers is-enabled/is-active as given and logs every call. */
  function runWith(command: string, state: { enabled: boolean; active: boolean }): string[] {
    const bin = fs.mkdtempSync(path.join(tmp, "systemctl-"));
    const log = path.join(bin, "calls");
    fs.writeFileSync(
      path.join(bin, "systemctl"),
      `#!/bin/sh\necho "$*" >>${log}\ncase $1 in is-enabled) exit ${state.enabled ? 0 : 1} ;; is-active) exit ${state.active ? 0 : 3} ;; esac\nexit 0\n`,
      { mode: 0o755 },
    );
    const r = spawnSync("sh", ["-eu", "-c", command], { env: { PATH: `${bin}:/usr/bin:/bin` }, encoding: "utf8" });
    expect(r.status, r.stderr).toBe(0);
    return fs.readFileSync(log, "utf8").trim().split("\n");
  }

  it("enables nothing that is enabled (and running, with now): no daemon-reload", () => {
    expect(runWith(enableUnlessEnabled("fail2ban.service"), { enabled: true, active: false })).toEqual(["is-enabled --quiet fail2ban.service"]);
    expect(runWith(enableUnlessEnabled("auditd.service", { now: true }), { enabled: true, active: true })).toEqual([
      "is-enabled --quiet auditd.service",
      "is-active --quiet auditd.service",
    ]);
  });

  it("enables (and starts) a unit that is not, under set -e as runcmd runs", () => {
    expect(runWith(enableUnlessEnabled("fail2ban.service"), { enabled: false, active: false }).slice(-1)).toEqual(["enable fail2ban.service"]);
    expect(runWith(enableUnlessEnabled("auditd.service", { now: true }), { enabled: true, active: false }).slice(-1)).toEqual(["enable --now auditd.service"]);
    expect(runWith(enableUnlessEnabled("auditd.service", { now: true }), { enabled: false, active: false }).slice(-1)).toEqual(["enable --now auditd.service"]);
  });
});
