// The commands around systemd in keel's steps and first boot, run for real against stand-ins of
// the tools they ask: the waits after sshd's restart or reload and fail2ban's reload
// (plan/hardening.ts sshdListening, sshdReload, fail2banJailUp), run as keel-place runs an
// onChange argv, against `ss`, `systemctl` and `fail2ban-client` stand-ins that print what the real
// ones print (iproute2's `ss -Htlnpe`, both address families) and a `sleep` that returns at once,
// so a whole wait runs in moments; and the first boot's enable-unless-enabled
// (cloud-init/userData.ts), in `sh` as cloud-init runs runcmd, against a `systemctl` stand-in that
// records what it was asked.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { fail2banJailUp, SETTLE_SECONDS, sshdListening, sshdReload } from "../../plan/hardening";
import { enableUnlessEnabled } from "../../cloud-init/userData";
import { parseConfig } from "../../config";
import { minimalRaw } from "../support/stack";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "keel-settle-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const cfg = (keys: Record<string, string>) => parseConfig(minimalRaw(keys));

/**
 * Runs `argv` with stand-ins first on PATH: `ss -Htlnpe` prints `ssLines` (`ssAfter` once
 * `systemctl reload-or-restart ssh.service` ran), `systemctl show -P MainPID ssh.service` prints
 * 612, `fail2ban-client` exits `f2b`, `sleep` returns at once. Counts the polls.
 */
function run(argv: string[], ssLines: string[], opts: { f2b?: number; ssAfter?: string[]; reloadFails?: boolean } = {}): { code: number; stderr: string; polls: number; calls: string[] } {
  const bin = fs.mkdtempSync(path.join(tmp, "bin-"));
  const count = path.join(bin, "polls");
  const calls = path.join(bin, "calls");
  const reloaded = path.join(bin, "reloaded");
  const heredoc = (lines: string[]) => `cat <<'EOF'\n${lines.join("\n")}\nEOF\n`;
  fs.writeFileSync(
    path.join(bin, "ss"),
    `#!/bin/sh\n[ "$*" = "-Htlnpe" ] || exit 9\necho x >>${count}\nif [ -e ${reloaded} ]; then\n${heredoc(opts.ssAfter ?? ssLines)}else\n${heredoc(ssLines)}fi\n`,
    { mode: 0o755 },
  );
  fs.writeFileSync(
    path.join(bin, "systemctl"),
    `#!/bin/sh\necho "$*" >>${calls}\ncase "$*" in\n  "show -P MainPID ssh.service") echo 612 ;;\n  "reload-or-restart ssh.service") ${opts.reloadFails ? "exit 1" : `touch ${reloaded}`} ;;\n  *) exit 9 ;;\nesac\n`,
    { mode: 0o755 },
  );
  fs.writeFileSync(path.join(bin, "fail2ban-client"), `#!/bin/sh\necho x >>${count}\nexit ${opts.f2b ?? 0}\n`, { mode: 0o755 });
  fs.writeFileSync(path.join(bin, "sleep"), "#!/bin/sh\nexit 0\n", { mode: 0o755 });
  const r = spawnSync(argv[0], argv.slice(1), { env: { PATH: `${bin}:/usr/bin:/bin` }, encoding: "utf8" });
  const lines = (f: string) => (fs.existsSync(f) ? fs.readFileSync(f, "utf8").split("\n").filter(Boolean) : []);
  return { code: r.status ?? -1, stderr: r.stderr, polls: lines(count).length, calls: lines(calls).filter((c) => !c.startsWith("show ")) };
}

/** A listening socket as `ss -Htlnpe` prints it. */
const listen = (addr: string, ino: number, proc = "sshd", pid = 612) =>
  `LISTEN 0      128          ${addr}       ${addr.startsWith("[") ? "[::]:*" : "0.0.0.0:*"}    users:(("${proc}",pid=${pid},fd=3)) ino:${ino} sk:${ino.toString(16)} cgroup:/system.slice/ssh.service <->`;

describe("sshdListening (the first boot, after sshd's restart)", () => {
  const moving = cfg({ "keel:sshPortNext": "2222" });

  it("holds at once when sshd listens on exactly the planned ports, on IPv4 and IPv6", () => {
    const r = run(sshdListening(moving), [listen("0.0.0.0:2222", 11), listen("0.0.0.0:22", 12), listen("[::]:22", 13), listen("[::]:2222", 14), listen("127.0.0.1:8000", 15, "python3", 700)]);
    expect(r).toMatchObject({ code: 0, polls: 1 });
  });

  it("fails, naming the ports, while sshd still listens on a port it should have left, or not yet on the new one", () => {
    const after = cfg({ "keel:sshPort": "2222" });
    for (const lines of [[listen("0.0.0.0:22", 1), listen("0.0.0.0:2222", 2)], [listen("0.0.0.0:22", 1)], []]) {
      const r = run(sshdListening(after), lines);
      expect(r.code).toBe(1);
      expect(r.polls).toBe(SETTLE_SECONDS);
      expect(r.stderr).toBe(`keel: sshd did not listen on port(s) 2222 (and no other) within ${SETTLE_SECONDS} s\n`);
    }
  });

  it("counts only ssh.service's own process: another program calling itself sshd neither stands in for it nor gets in its way", () => {
    // Something else, named sshd, on the planned port while sshd is not there: not listening.
    expect(run(sshdListening(cfg({})), [listen("0.0.0.0:22", 1, "sshd", 4242)]).code).toBe(1);
    // ... nor counted as an extra port beside the real sshd.
    expect(run(sshdListening(cfg({})), [listen("0.0.0.0:22", 1), listen("0.0.0.0:2200", 2, "sshd", 4242)]).code).toBe(0);
    expect(run(sshdListening(cfg({})), [listen("0.0.0.0:22", 1, "dropbear", 4242)]).code).toBe(1);
  });
});

describe("sshdReload (the sshd step's change)", () => {
  it("reloads sshd and holds once it listens again on new sockets, on the same ports", () => {
    const r = run(sshdReload(cfg({})), [listen("0.0.0.0:22", 11), listen("[::]:22", 12)], { ssAfter: [listen("0.0.0.0:22", 21), listen("[::]:22", 22)] });
    expect(r).toMatchObject({ code: 0, calls: ["reload-or-restart ssh.service"] });
  });

  it("fails at once, without waiting, when systemctl cannot reload or restart sshd", () => {
    const r = run(sshdReload(cfg({})), [listen("0.0.0.0:22", 11)], { reloadFails: true });
    expect(r).toMatchObject({ code: 1, calls: ["reload-or-restart ssh.service"] });
    // One look at the sockets from before the reload, none after it.
    expect(r.polls).toBe(1);
  });

  it("does not take the sockets from before the reload for its effect, even on the planned ports", () => {
    const same = [listen("0.0.0.0:22", 11), listen("[::]:22", 12)];
    const r = run(sshdReload(cfg({})), same, { ssAfter: same });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`keel: sshd did not listen again, on port(s) 22 (and no other), after its reload within ${SETTLE_SECONDS} s\n`);
  });

  it("moves the ports: holds when the new sockets are on exactly the new set", () => {
    const moving = cfg({ "keel:sshPortNext": "2222" });
    expect(run(sshdReload(moving), [listen("0.0.0.0:22", 11)], { ssAfter: [listen("0.0.0.0:22", 21), listen("0.0.0.0:2222", 22)] }).code).toBe(0);
    expect(run(sshdReload(moving), [listen("0.0.0.0:22", 11)], { ssAfter: [listen("0.0.0.0:22", 21)] }).code).toBe(1);
  });
});

describe("fail2banJailUp", () => {
  it("holds once fail2ban-client answers for the jail, and fails after the limit when it never does", () => {
    expect(run(fail2banJailUp(), [], { f2b: 0 })).toMatchObject({ code: 0, polls: 1 });
    const never = run(fail2banJailUp(), [], { f2b: 255 });
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
