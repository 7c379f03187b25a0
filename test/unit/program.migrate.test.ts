import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseConfig } from "../../config";
import { buildHostPlan } from "../../plan/hostPlan";
import { REPO_ROOT } from "../../plan/static";
import { FAKE_HOST_PUBLIC, localCommandResults } from "../support/mocks";
import { idOf, resolved, runProgram, type ProgramRun } from "../support/program";
import { expectCommonShape } from "../support/programShape";
import { stackConfig } from "../support/stack";

const STEP_TYPES = ["command:remote:Command", "command:local:Command"];
/** A value only the DB's content holds: it must be nowhere in the program's resources. */
const MARKER = "row-content-5e1f0c2a-only-in-the-db";

describe("the prod stack with keel:migrateFrom, under Pulumi mocks", () => {
  let dir: string;
  let db: string;
  let result: string;
  let run: ProgramRun;
  const overrides = () => ({ "keel:migrateFrom": db, "keel:migrateFallbackDir": join(dir, "backups") });

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "keel-migrate-program-"));
    db = join(dir, "engine.db");
    const r = spawnSync("sqlite3", [db, `CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('${MARKER}');`], { encoding: "utf8" });
    if (r.status !== 0) throw new Error(r.stderr);
    // What db-migrate-source.sh prints on the operator's machine.
    result = `${createHash("sha256").update(readFileSync(db)).digest("hex")}  ${db}\n`;
    localCommandResults.set("keel-step-db-migrate-source", result);
    run = await runProgram("prod", overrides());
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const plan = () => {
    const { raw, secretKeys } = stackConfig("prod");
    return buildHostPlan(parseConfig({ ...raw, ...overrides() }, (k) => secretKeys.includes(k)));
  };
  const steps = () => run.resources.filter((r) => STEP_TYPES.includes(r.type));
  const named = (step: string) => run.resources.find((r) => r.name === `keel-step-${step}`)!;

  it("has the common shape (names, parents, pinned host key, secrets)", async () => {
    await expectCommonShape(run, "prod");
  });

  it("runs every plan step in order, one resource each, each after the previous one", () => {
    const p = plan();
    expect(steps().map((r) => r.name)).toEqual(p.steps.map((s) => `keel-step-${s.name}`));
    for (const [i, r] of steps().entries()) expect(r.opts.dependsOn, r.name).toEqual(i === 0 ? [] : [steps()[i - 1].resource]);
    const names = p.steps.map((s) => s.name);
    expect(names.slice(names.indexOf("db-migrate-staging"), names.indexOf("engine-start") + 1)).toEqual([
      "db-migrate-staging",
      "db-migrate-source",
      "db-migrate-upload",
      "db-migrate-adopt",
      "engine-start",
    ]);
  });

  it("runs the source gate on the operator's machine, in the repository, re-run only by its hash", async () => {
    const local = named("db-migrate-source");
    expect(local.type).toBe("command:local:Command");
    const step = plan().steps.find((s) => s.name === "db-migrate-source")!;
    expect(await resolved(local.inputs.create)).toBe(`bash scripts/steps/db-migrate-source.sh --fallback-dir ${join(dir, "backups")} ${db}`);
    // No `dir`: it is an input kept in state, so an absolute checkout path would re-run the step on
    // every other machine (CI included). Without it the provider runs the command in its own working
    // directory (pulumi-command v1.2.1 provider/pkg/provider/local/commandOutputs.go: os.Getwd()),
    // which the engine sets to the project root for every plugin (pulumi v3.248.0
    // pkg/engine/project.go getPwdMain, sdk/go/common/resource/plugin/plugin.go `cmd.Dir = pwd`).
    expect(local.inputs.dir).toBeUndefined();
    expect(JSON.stringify(await resolved(local.inputs.create))).not.toContain(REPO_ROOT);
    expect(await resolved(local.inputs.triggers)).toEqual([step.hash]);
    expect(local.inputs.stdin).toBeUndefined();
  });

  it("copies the chosen file over the pinned connection with scripts/steps/upload-file.sh, after the gate, and again only when the gate's result or the server changes", async () => {
    const copy = named("db-migrate-upload");
    // A local command, no asset: the engine reads an asset's file at every registration, so a
    // FileAsset would break every later preview once the source moved (pulumi v3.248.0
    // pkg/resource/deploy/source_eval.go, RegisterResource with ComputeAssetHashes).
    expect(copy.type).toBe("command:local:Command");
    expect(copy.inputs.source).toBeUndefined();
    expect(await resolved(copy.inputs.create)).toBe("bash scripts/steps/upload-file.sh 198.51.100.7 22 deploy /home/deploy/keel-incoming/engine.db");
    expect(await resolved(copy.inputs.stdin)).toBe(result);
    expect(await resolved(copy.inputs.environment)).toEqual({ KEEL_HOST_KEY: FAKE_HOST_PUBLIC });
    expect(copy.inputs.dir).toBeUndefined();
    const triggers = await resolved<string[]>(copy.inputs.triggers);
    expect(triggers.slice(0, 2)).toEqual([plan().steps.find((s) => s.name === "db-migrate-upload")!.hash, result]);
    expect(triggers[2]).toBe(await idOf(run.one("hcloud:index/server:Server")));
    expect(copy.opts.dependsOn).toEqual([named("db-migrate-source").resource]);
  });

  it("adopts on the host with the gate's result (sha256 and origin) on stdin, before the engine's first start", async () => {
    const adopt = named("db-migrate-adopt");
    expect(adopt.type).toBe("command:remote:Command");
    expect(await resolved(adopt.inputs.create)).toBe(
      "sudo /usr/local/sbin/keel-db-migrate --owner engine:engine --unit engine.service /home/deploy/keel-incoming/engine.db /var/lib/engine/engine.db",
    );
    expect(await resolved(adopt.inputs.stdin)).toBe(result);
    expect(named("engine-start").opts.dependsOn).toEqual([adopt.resource]);
  });

  it("keeps the DB's content out of every resource: no stdin, no string asset, no command holds it", async () => {
    const content = readFileSync(db);
    for (const r of run.resources) {
      const inputs = await resolved<Record<string, unknown>>(r.inputs);
      const text = JSON.stringify(inputs);
      expect(text, r.name).not.toContain(MARKER);
      expect(text, r.name).not.toContain(content.toString("base64").slice(0, 64));
    }
  });
});
