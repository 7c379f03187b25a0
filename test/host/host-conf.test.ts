// keel-host-conf, host.conf's one reader on the host (plan/hostConf.ts), run by the real python3:
// it reads what plan/health.ts renders, and refuses, naming the key, a file that is not keel's.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { afterAll, describe, expect, it } from "vitest";
import { parseConfig } from "../../config";
import { renderHostConf } from "../../plan/health";
import { HOST_CONF_KEYS, HOST_CONF_KINDS, renderHostConfText, type HostConfKey } from "../../plan/hostConf";
import { REPO, stackConfig } from "../support/stack";
import { TOOLS } from "../../plan/tools";

const READER = join(REPO, TOOLS["host-conf"]);
const dir = mkdtempSync(join(tmpdir(), "keel-host-conf-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
function read(text: string, ...args: string[]) {
  const file = join(dir, `host-${n++}.conf`);
  writeFileSync(file, text);
  const r = spawnSync(READER, args, { env: { PATH: "/usr/bin:/bin", KEEL_HOST_CONF: file }, encoding: "utf8" });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr.trim(), file };
}

const stacks = ["prod", "staging"].map((stack) => {
  const { raw, secretKeys } = stackConfig(stack);
  return { stack, text: renderHostConf(parseConfig(raw, (k) => secretKeys.includes(k))) };
});
const prod = stacks[0].text;

describe("keel-host-conf", () => {
  it.each(stacks)("reads the $stack stack's host.conf as rendered: every key, sorted, as text and as JSON", ({ text }) => {
    const r = read(text);
    expect([r.code, r.stderr]).toEqual([0, ""]);
    const lines = text.split("\n").filter((l) => l && !l.startsWith("#"));
    expect(r.stdout).toBe(lines.join("\n") + "\n");
    expect(Object.keys(JSON.parse(read(text, "--json").stdout))).toEqual(Object.keys(HOST_CONF_KEYS).sort());
  });

  it("refuses a key it does not know, a missing or repeated key, and a line that is not key=value, naming the file, line and key", () => {
    const unknown = read(prod + "cpu_max=4\n");
    expect(unknown.code).toBe(3);
    expect(unknown.stderr).toMatch(new RegExp(`^keel-host-conf: ${unknown.file}:\\d+: unknown key 'cpu_max' \\(this keel-host-conf knows app, .*\\); host.conf and the tools come from different keels or it was edited: run pulumi up$`));
    const missing = read(prod.replace(/^ops_lock=.*\n/m, "").replace(/^unit=.*\n/m, ""));
    expect([missing.code, missing.stderr]).toEqual([3, `keel-host-conf: ${missing.file} has no ops_lock, unit; host.conf and the tools come from different keels or it was edited: run pulumi up`]);
    const twice = read(prod + "unit=other.service\n");
    expect(twice.stderr).toMatch(/:\d+: unit is given twice$/);
    const notKv = read(prod + "just words\n");
    expect(notKv.stderr).toMatch(/:\d+: expected key=value$/);
    for (const r of [twice, notKv]) expect([r.code, r.stdout]).toEqual([3, ""]);
    const viaSudo = spawnSync(READER, [], { env: { KEEL_HOST_CONF: join(dir, "host-0.conf"), SUDO_UID: "1000" }, encoding: "utf8" });
    expect([viaSudo.status, viaSudo.stderr.trim()]).toEqual([3, "keel-host-conf: KEEL_HOST_CONF is not honoured through sudo; unset it"]);
    const none = spawnSync(READER, [], { env: { KEEL_HOST_CONF: join(dir, "nope.conf") }, encoding: "utf8" });
    expect([none.status, none.stderr.trim()]).toEqual([3, `keel-host-conf: cannot read the config ${join(dir, "nope.conf")} (No such file or directory); keel writes it on pulumi up (the tools step)`]);
  });

  it("refuses a value not of its key's kind, the same values plan/hostConf.ts refuses to render", () => {
    const samples: Record<keyof typeof HOST_CONF_KINDS, { good: string[]; bad: string[] }> = {
      path: { good: ["/", "/var/lib/engine/engine.db"], bad: ["relative/path", "/with space", "/semi;colon", "$(id)", ""] },
      name: { good: ["engine.service", "deploy", "a@b_c-d"], bad: ["", "two words", "a/b", "x;y"] },
      count: { good: ["0", "26"], bad: ["", "-1", "1.5", "eighty"] },
      ports: { good: ["22", "22,2222"], bad: ["", "22,", ",22", "22 2222", "ssh"] },
    };
    const example: Record<keyof typeof HOST_CONF_KINDS, HostConfKey> = { path: "db", name: "unit", count: "disk_warn_percent", ports: "ssh_ports" };
    const values = Object.fromEntries(prod.split("\n").filter((l) => l && !l.startsWith("#")).map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)])) as Record<HostConfKey, string>;
    for (const [kind, { good, bad }] of Object.entries(samples) as [keyof typeof HOST_CONF_KINDS, { good: string[]; bad: string[] }][]) {
      const key = example[kind];
      expect(HOST_CONF_KEYS[key]).toBe(kind);
      for (const v of good) {
        const text = renderHostConfText([], { ...values, [key]: v });
        expect(read(text).code, `${key}=${v}`).toBe(0);
      }
      for (const v of bad) {
        expect(() => renderHostConfText([], { ...values, [key]: v }), `${key}=${v}`).toThrow(`host.conf: ${key} must be ${HOST_CONF_KINDS[kind].what}, not '${v}'`);
        const text = prod.replace(new RegExp(`^${key}=.*$`, "m"), `${key}=${v}`);
        const r = read(text);
        expect([r.code, r.stderr], `${key}=${v}`).toEqual([3, expect.stringMatching(new RegExp(`:\\d+: ${key} must be ${HOST_CONF_KINDS[kind].what.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}, found '`))]);
      }
    }
  });
});
