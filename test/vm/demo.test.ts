// Tier 3: the README's "try it without a Hetzner account" path, run as a user runs it:
// `npm run demo` (boots a VM, deploys the whole plan, prints outputs and health, leaves the VM
// running), then the printed ssh command, then `npm run demo:down`.
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { REPO } from "../support/stack";

const MINUTE = 60_000;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keel-demo-"));
const env = { ...process.env, KEEL_DEMO_DIR: dir };

/** The state letter of a process in /proc/PID/stat (R, S, Z, …), or "gone". */
function processState(pid: number): string {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
  } catch {
    return "gone";
  }
}

function npm(script: string) {
  return spawnSync("npm", ["run", "--silent", script], { cwd: REPO, env, encoding: "utf8", timeout: 40 * MINUTE });
}

afterAll(() => {
  // Whatever happened, leave no VM behind.
  if (fs.existsSync(path.join(dir, "vm.json"))) npm("demo:down");
  fs.rmSync(dir, { recursive: true, force: true });
}, 5 * MINUTE);

describe("npm run demo", () => {
  let outputs: Record<string, unknown>;

  it("deploys the whole plan on a local VM and prints the stack outputs and a healthy report", () => {
    const r = npm("demo");
    expect(r.status, r.stderr).toBe(0);
    const json = r.stdout.slice(r.stdout.indexOf("{"), r.stdout.indexOf("\n}\n") + 2);
    outputs = JSON.parse(json) as Record<string, unknown>;
    expect(outputs).toMatchObject({ ipv4: "127.0.0.1", deployUser: "deploy", serviceName: "engine.service" });
    // The demo VM cannot reach an NTP server (it has no way out): every check but time is ok.
    expect(r.stdout).toMatch(/Health report \(keel-health, exit [01]\)/);
    expect(r.stdout).toContain("npm run demo:down");
  }, 45 * MINUTE);

  it("leaves the VM running: the printed ssh command logs in with the pinned key and the engine is active", () => {
    const command = String(outputs.sshCommand);
    expect(command).toContain("StrictHostKeyChecking=yes");
    const args = command.split(" ").slice(1);
    const out = execFileSync("ssh", [...args, "-o", "BatchMode=yes", "systemctl is-active engine.service"], { encoding: "utf8", timeout: 2 * MINUTE });
    expect(out.trim()).toBe("active");
    const health = spawnSync("ssh", [...args, "-o", "BatchMode=yes", "sudo /usr/local/sbin/keel-health --json"], { encoding: "utf8", timeout: 5 * MINUTE });
    const report = JSON.parse(health.stdout) as { checks: Record<string, { status: string }> };
    const notOk = Object.entries(report.checks).filter(([name, c]) => c.status !== "ok" && !(name === "time" && c.status === "degraded"));
    expect(notOk).toEqual([]);
  }, 5 * MINUTE);

  it("refuses a second demo while one runs, then demo:down stops the VM and removes its files", () => {
    const again = npm("demo");
    expect(again.status).toBe(1);
    expect(again.stderr).toContain("a demo VM is already running");
    const state = JSON.parse(fs.readFileSync(path.join(dir, "vm.json"), "utf8")) as { dir: string; pid: number };
    const down = npm("demo:down");
    expect(down.status, down.stderr).toBe(0);
    expect(fs.existsSync(state.dir)).toBe(false);
    expect(fs.existsSync(path.join(dir, "vm.json"))).toBe(false);
    // qemu ran detached, so its parent is the machine's init, which may reap it a moment later:
    // a zombie has exited all the same.
    expect(processState(state.pid), `qemu pid ${state.pid}`).toMatch(/^(gone|Z|X)$/);
  }, 5 * MINUTE);
});
