import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import * as http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { parseConfig } from "../../config";
import { freePort } from "../../local/vm/qemu";
import { GATE_FAILURE_STATUS, renderConfigYaml } from "../../plan/engine";
import { CANARY, REPO, stackConfig } from "../support/stack";

/** The sample engine the VM tests deploy (test/fixtures/engine), run here with the system python3. */
const ENGINE = join(REPO, "test", "fixtures", "engine");

function sqlite(db: string, sql: string): string {
  const r = spawnSync("sqlite3", [db, sql], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`sqlite3 ${sql}: ${r.stderr}`);
  return r.stdout.trim();
}

function settingsYaml(settings: Record<string, unknown>): string {
  const { raw, secretKeys } = stackConfig("prod");
  return renderConfigYaml(parseConfig({ ...raw, "keel:settings": JSON.stringify(settings) }, (k) => secretKeys.includes(k)));
}

describe("the sample engine (real python3, real SQLite)", () => {
  let dir: string;
  let children: ChildProcess[];
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "keel-engine-"));
    children = [];
    writeFileSync(join(dir, "config.yaml"), settingsYaml({ heartbeatSeconds: 0.1, session: { mode: "paper" } }));
  });
  afterEach(() => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });

  function env(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
    const e: NodeJS.ProcessEnv = { PATH: process.env.PATH, PYTHONDONTWRITEBYTECODE: "1", KEEL_CONFIG: join(dir, "config.yaml"), KEEL_DB: join(dir, "engine.db"), ENGINE_API_KEY: CANARY, ...extra };
    for (const k of Object.keys(e)) if (e[k] === undefined) delete e[k];
    return e;
  }

  /** Starts the engine; resolves with its exit code and output once it ends. */
  function start(extra: Record<string, string | undefined> = {}) {
    const child = spawn("/usr/bin/python3", ["-m", "engine"], { cwd: ENGINE, env: env(extra) });
    children.push(child);
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    const done = new Promise<{ code: number | null; out: string; err: string }>((resolve) => child.on("close", (code) => resolve({ code, out, err })));
    return { child, done, output: () => out };
  }

  async function until(check: () => boolean, ms = 10_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!check()) {
      if (Date.now() > deadline) throw new Error("timed out");
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  it("writes heartbeats into its DB in WAL mode, logs to stdout, and stops cleanly on SIGTERM", async () => {
    const engine = start();
    await until(() => (engine.output().match(/heartbeat \d+/g) ?? []).length >= 3);
    const db = join(dir, "engine.db");
    expect(existsSync(`${db}-wal`)).toBe(true);
    engine.child.kill("SIGTERM");
    const { code, out, err } = await engine.done;
    expect(code).toBe(0);
    expect(err).toBe("");
    expect(out).toMatch(/^engine: started \(pid \d+, settings \['heartbeatSeconds', 'session'\], secrets present: \['ENGINE_API_KEY'\]\)\n/);
    expect(out).toMatch(/engine: stopped after \d+ heartbeat\(s\)\n$/);
    expect(sqlite(db, "PRAGMA journal_mode")).toBe("wal");
    expect(Number(sqlite(db, "SELECT count(*) FROM heartbeat"))).toBeGreaterThanOrEqual(3);
    expect(out + err).not.toContain(CANARY);
  });

  it(`exits ${GATE_FAILURE_STATUS} with one line when a required variable is missing, before touching the DB`, async () => {
    const { code, out, err } = await start({ ENGINE_API_KEY: undefined }).done;
    expect(code).toBe(GATE_FAILURE_STATUS);
    expect(out).toBe("");
    expect(err).toBe(
      "engine: startup gate failed: required environment variable(s) ENGINE_API_KEY missing or empty; set them with pulumi config set --secret --path 'keel:secretEnv.NAME' and run pulumi up\n",
    );
    expect(existsSync(join(dir, "engine.db"))).toBe(false);
  });

  it(`exits ${GATE_FAILURE_STATUS} for an empty variable, an unreadable config and a config it cannot parse`, async () => {
    expect((await start({ ENGINE_API_KEY: "" }).done).code).toBe(GATE_FAILURE_STATUS);
    const missing = await start({ KEEL_CONFIG: join(dir, "nope.yaml") }).done;
    expect(missing.code).toBe(GATE_FAILURE_STATUS);
    expect(missing.err).toContain(`cannot read the config ${join(dir, "nope.yaml")}: No such file or directory`);
    writeFileSync(join(dir, "bad.yaml"), "list:\n  - a: 1\n");
    const bad = await start({ KEEL_CONFIG: join(dir, "bad.yaml") }).done;
    expect(bad.code).toBe(GATE_FAILURE_STATUS);
    expect(bad.err).toContain("line 2: only sequences of scalars are supported");
  });

  it(`runs once only: a second instance on the same DB exits ${GATE_FAILURE_STATUS}`, async () => {
    const first = start();
    await until(() => first.output().includes("heartbeat 1"));
    const second = await start().done;
    expect(second.code).toBe(GATE_FAILURE_STATUS);
    expect(second.err).toContain("another engine instance holds");
    first.child.kill("SIGTERM");
    expect((await first.done).code).toBe(0);
  });

  it("with listen answers HTTP there (keel:https's upstream) and appends each request to KEEL_AUDIT_LOG, which it opens for appending only", async () => {
    const port = await freePort();
    writeFileSync(join(dir, "config.yaml"), settingsYaml({ heartbeatSeconds: 0.1, listen: `127.0.0.1:${port}` }));
    const audit = join(dir, "audit.log");
    writeFileSync(audit, "earlier line\n");
    const engine = start({ KEEL_AUDIT_LOG: audit });
    await until(() => engine.output().includes(`listening on 127.0.0.1:${port}`));
    const body = await new Promise<string>((resolve, reject) =>
      http.get({ host: "127.0.0.1", port, path: "/authorize?x=1" }, (res) => {
        let b = "";
        res.on("data", (d: Buffer) => (b += d.toString()));
        res.on("end", () => resolve(b));
      }).on("error", reject),
    );
    expect(body).toBe("keel sample engine: GET /authorize?x=1\n");
    engine.child.kill("SIGTERM");
    expect((await engine.done).code).toBe(0);
    const lines = readFileSync(audit, "utf8").trim().split("\n");
    expect(lines[0]).toBe("earlier line");
    expect(JSON.parse(lines[1])).toMatchObject({ event: "started" });
    expect(JSON.parse(lines[2])).toMatchObject({ event: "request", path: "/authorize?x=1", client: "127.0.0.1" });
  });

  it(`exits ${GATE_FAILURE_STATUS} when KEEL_AUDIT_LOG cannot be opened for appending`, async () => {
    const { code, err } = await start({ KEEL_AUDIT_LOG: join(dir, "no-such-dir", "audit.log") }).done;
    expect(code).toBe(GATE_FAILURE_STATUS);
    expect(err).toContain(`engine: startup gate failed: cannot open the audit log ${join(dir, "no-such-dir", "audit.log")} for appending: No such file or directory`);
  });

  it("reads every config.yaml keel renders as the YAML library would", () => {
    const samples: Record<string, unknown>[] = [
      {},
      { session: { mode: "live", maxOpenPositions: 3 }, logLevel: "INFO" },
      {
        endpoints: ["wss://xrpl.example.org:443", "https://api.example.org/v1?x=1#frag"],
        limits: { ratio: 0.25, negative: -3, big: 1e21, off: false, none: null, empty: {}, nothing: [] },
        quotes: { colon: "a: b", hash: "x # y", lead: "- dash", yes: "yes", num: "123", multi: "two\nlines", unicode: "é ✓", quote: `it's "q"` },
        "key with spaces": "v",
        "a:b": 1,
      },
    ];
    for (const settings of samples) {
      const r = spawnSync("/usr/bin/python3", ["-c", "import json, sys; from engine.miniyaml import loads; print(json.dumps(loads(sys.stdin.read())))"], {
        cwd: ENGINE,
        input: settingsYaml(settings),
        encoding: "utf8",
        env: { PATH: process.env.PATH, PYTHONDONTWRITEBYTECODE: "1" },
      });
      expect(r.stderr).toBe("");
      expect(JSON.parse(r.stdout)).toEqual(settings);
    }
  });
});
