import { describe, expect, it } from "vitest";
import { parseConfig, type KeelConfig } from "../../config";
import {
  BACKUP_RANDOMIZED_DELAY,
  migrationSteps,
  renderBackupService,
  renderBackupTimer,
  renderSessionDropIn,
} from "../../plan/database";
import { GATE_FAILURE_STATUS, STOP_TIMEOUT_SECONDS } from "../../plan/engine";
import { readStatic } from "../../plan/static";
import { sha256, stableJson } from "../../plan/hash";
import { buildHostPlan } from "../../plan/hostPlan";
import { localStep, parseFileResult, step, uploadStep } from "../../plan/steps";
import { toolFiles } from "../../plan/tools";
import type { Bundle, Step } from "../../plan/types";
import { stackConfig } from "../support/stack";

function config(overrides: Record<string, string> = {}): KeelConfig {
  const { raw, secretKeys } = stackConfig("prod");
  return parseConfig({ ...raw, ...overrides }, (k) => secretKeys.includes(k));
}

const MIGRATE = { "keel:migrateFrom": "/srv/old engine/engine.db", "keel:migrateFallbackDir": "/srv/old engine/backups" };
const names = (cfg: KeelConfig) => buildHostPlan(cfg).steps.map((s) => s.name);
const byName = (cfg: KeelConfig, name: string): Step => buildHostPlan(cfg).steps.find((s) => s.name === name)!;
const bundle = (s: Step): Bundle => JSON.parse(s.stdin!) as Bundle;

function rerun(a: KeelConfig, b: KeelConfig): string[] {
  const ha = new Map(buildHostPlan(a).steps.map((s) => [s.name, s.hash]));
  return buildHostPlan(b).steps.filter((s) => ha.get(s.name) !== s.hash).map((s) => s.name);
}

/** `Key=value` lines of a rendered unit, values of one key. */
function unitLines(text: string, key: string): string[] {
  return text.split("\n").filter((l) => l.startsWith(`${key}=`)).map((l) => l.slice(key.length + 1));
}

describe("the database's place in the host plan", () => {
  // The backup tree and the drop-in that writes it as the backup user come right after the engine's
  // unit (one keel-place run: an up stopped in between leaves no old drop-in facing the new tree).
  it("puts the backup tree with the session-backup drop-in, then the backup timer, after the engine's unit and before its start", () => {
    const n = names(config());
    expect(n.slice(n.indexOf("engine-unit"), n.indexOf("engine-start") + 1)).toEqual(["engine-unit", "db-session-backups", "db-backup-timer", "engine-start"]);
    expect(n.filter((x) => x.startsWith("db-migrate"))).toEqual([]);
  });

  it("with keel:migrateFrom, migrates after them and still before the engine's first start", () => {
    const n = names(config(MIGRATE));
    expect(n.slice(n.indexOf("db-backup-timer"), n.indexOf("engine-start") + 1)).toEqual([
      "db-backup-timer",
      "db-migrate-staging",
      "db-migrate-source",
      "db-migrate-upload",
      "db-migrate-adopt",
      "engine-start",
    ]);
  });

  it("installs the DB scripts as keel tools, the library beside them as keel-db-lib", () => {
    const paths = toolFiles().map((f) => f.path);
    for (const t of ["lib", "gate", "backup", "restore", "snapshot", "session-backup", "migrate"]) expect(paths).toContain(`/usr/local/sbin/keel-db-${t}`);
    expect(toolFiles().filter((f) => f.path.startsWith("/usr/local/sbin/keel-db-")).every((f) => f.owner === "root" && f.mode === "0755")).toBe(true);
  });
});

describe("the backup timer and service", () => {
  const cfg = config();
  const service = renderBackupService(cfg);
  const timer = renderBackupTimer(cfg);

  it("back up the live DB into the backup directory: read as the engine's user, stored by the backup user, with the configured retention", () => {
    expect(unitLines(service, "ExecStart")).toEqual(["/usr/local/sbin/keel-db-backup --as engine:engine-backup --keep 30 --also-check /var/backups/engine/sessions /var/lib/engine/engine.db /var/backups/engine"]);
    expect(unitLines(service, "Type")).toEqual(["oneshot"]);
    // root only to run the two sides as their users (setpriv): no User=, and no capability but those two.
    expect(unitLines(service, "User")).toEqual([]);
    expect(unitLines(service, "PrivateUsers")).toEqual([]);
    expect(unitLines(service, "ReadWritePaths")).toEqual(["/var/lib/engine /var/backups/engine"]);
    expect(unitLines(service, "PrivateNetwork")).toEqual(["yes"]);
    expect(unitLines(service, "RestrictAddressFamilies")).toEqual(["none"]);
    expect(unitLines(service, "CapabilityBoundingSet")).toEqual(["CAP_SETUID CAP_SETGID"]);
    expect(unitLines(service, "NoNewPrivileges")).toEqual(["yes"]);
  });

  it("fire on keel:backupSchedule with a random delay, and catch up a missed run", () => {
    expect(unitLines(timer, "OnCalendar")).toEqual(["*-*-* 03:17:00"]);
    expect(unitLines(timer, "RandomizedDelaySec")).toEqual([BACKUP_RANDOMIZED_DELAY]);
    expect(unitLines(timer, "Persistent")).toEqual(["true"]);
    expect(unitLines(timer, "Unit")).toEqual(["engine-backup.service"]);
    expect(unitLines(timer, "WantedBy")).toEqual(["timers.target"]);
    expect(unitLines(renderBackupTimer(config({ "keel:backupSchedule": "hourly" })), "OnCalendar")).toEqual(["hourly"]);
  });

  it("are placed as root 0644, checked by systemd-analyze verify, then reloaded and the timer enabled — only on a change", () => {
    const b = bundle(byName(cfg, "db-backup-timer"));
    expect(b.files.map((f) => [f.path, f.owner, f.group, f.mode])).toEqual([
      ["/etc/systemd/system/engine-backup.service", "root", "root", "0644"],
      ["/etc/systemd/system/engine-backup.timer", "root", "root", "0644"],
    ]);
    expect(b.check).toEqual(["systemd-analyze", "verify", "/etc/systemd/system/engine-backup.service", "/etc/systemd/system/engine-backup.timer"]);
    expect(b.onChange).toEqual([
      ["systemctl", "enable", "--no-reload", "engine-backup.timer"],
      ["systemctl", "daemon-reload"],
      ["systemctl", "start", "engine-backup.timer"],
    ]);
  });
});

describe("the pre- and post-session backups", () => {
  const cfg = config();
  const dropIn = renderSessionDropIn(cfg);

  it("run around every start and stop, into their own directory, with the configured retention", () => {
    // "+": outside the engine's sandbox (which cannot write the backups), as root only to run the two sides as their users.
    expect(unitLines(dropIn, "ExecCondition")).toEqual(["+/usr/local/sbin/keel-db-session-backup pre --as engine:engine-backup --ops-lock /run/keel/engine.ops.lock --deadline 870 --keep 30 --history /var/backups/engine /var/lib/engine/engine.db /var/backups/engine/sessions"]);
    expect(unitLines(dropIn, "ExecStopPost")).toEqual(["+/usr/local/sbin/keel-db-session-backup post --as engine:engine-backup --keep 30 /var/lib/engine/engine.db /var/backups/engine/sessions"]);
    expect(unitLines(dropIn, "TimeoutStartSec")).toEqual(["900"]);
    expect(unitLines(renderSessionDropIn(config({ "keel:startTimeoutMinutes": "60" })), "ExecCondition")[0]).toContain("--deadline 3570 ");
    expect(unitLines(renderSessionDropIn(config({ "keel:startTimeoutMinutes": "60" })), "TimeoutStartSec")).toEqual(["3600"]);
  });

  it("wait for the sessions directory's lock after a stop only as long as the stop timeout leaves room for", () => {
    // scripts/host/keel-db-session-backup POST_LOCK_WAIT: the post-session backup runs inside TimeoutStopSec=.
    const wait = Number(/^readonly POST_LOCK_WAIT=(\d+)$/m.exec(readStatic("scripts/host/keel-db-session-backup"))?.[1]);
    expect(wait).toBeGreaterThan(0);
    expect(wait).toBeLessThanOrEqual(STOP_TIMEOUT_SECONDS / 3);
  });

  it("use ExecCondition (a failure stops the start, no restart), never ExecStartPre, and leave the engine's own settings alone", () => {
    expect(unitLines(dropIn, "ExecStartPre")).toEqual([]);
    for (const key of ["ExecStart", "User", "Restart", "RestartPreventExitStatus", "ReadWritePaths", "TimeoutStopSec"]) expect(unitLines(dropIn, key), key).toEqual([]);
    expect(GATE_FAILURE_STATUS).toBe(78);
  });

  it("is a drop-in of the engine's unit, with the sessions directory (the backup user's, the engine's group may read), verified with the unit", () => {
    const b = bundle(byName(cfg, "db-session-backups"));
    expect(b.files.map((f) => [f.path, f.owner, f.mode])).toEqual([["/etc/systemd/system/engine.service.d/keel-session-backups.conf", "root", "0644"]]);
    expect(b.dirs).toEqual([
      { path: "/var/backups/engine", owner: "engine-backup", group: "engine", mode: "2750", adoptFilesFrom: { user: "engine", fileMode: "0640" } },
      { path: "/var/backups/engine/sessions", owner: "engine-backup", group: "engine", mode: "2750", adoptFilesFrom: { user: "engine", fileMode: "0640" } },
    ]);
    expect(b.check).toEqual(["systemd-analyze", "verify", "/etc/systemd/system/engine.service"]);
    expect(b.onChange).toEqual([["systemctl", "daemon-reload"]]);
  });
});

describe("the migration steps", () => {
  const cfg = config(MIGRATE);
  const steps = migrationSteps(cfg);
  const get = (name: string) => steps.find((s) => s.name === name)!;

  it("are none without keel:migrateFrom", () => {
    expect(migrationSteps(config())).toEqual([]);
  });

  it("stage into the deploy user's own 0700 directory", () => {
    expect(bundle(get("db-migrate-staging")).dirs).toEqual([{ path: "/home/deploy/keel-incoming", owner: "deploy", group: "deploy", mode: "0700" }]);
  });

  it("gate the source on the operator's machine, paths quoted for the shell", () => {
    const s = get("db-migrate-source");
    expect(s.kind).toBe("local");
    expect(s.command).toBe("bash scripts/steps/db-migrate-source.sh --fallback-dir '/srv/old engine/backups' '/srv/old engine/engine.db'");
    const alone = migrationSteps(config({ "keel:migrateFrom": "./it's.db" })).find((x) => x.name === "db-migrate-source")!;
    expect(alone.command).toBe("bash scripts/steps/db-migrate-source.sh './it'\\''s.db'");
  });

  it("upload the file the gate chose, then adopt it with the gate's result on stdin", () => {
    expect(get("db-migrate-upload")).toMatchObject({ kind: "upload", from: "db-migrate-source", remotePath: "/home/deploy/keel-incoming/engine.db" });
    const adopt = get("db-migrate-adopt");
    expect(adopt.kind).toBeUndefined();
    expect(adopt.command).toBe("sudo /usr/local/sbin/keel-db-migrate --owner engine:engine --unit engine.service /home/deploy/keel-incoming/engine.db /var/lib/engine/engine.db");
    expect(adopt.stdinFrom).toBe("db-migrate-source");
    expect(adopt.stdin).toBeUndefined();
  });

  it("re-run only what a changed key touches", () => {
    expect(rerun(cfg, config({ ...MIGRATE, "keel:migrateFallbackDir": "/srv/elsewhere" }))).toEqual(["db-migrate-source"]);
    expect(rerun(cfg, config({ ...MIGRATE, "keel:migrateFrom": "/srv/other.db" }))).toEqual(["db-migrate-source"]);
    // Turning the migration on or off adds or removes its steps and changes no other step.
    expect(rerun(config(), cfg)).toEqual(["db-migrate-staging", "db-migrate-source", "db-migrate-upload", "db-migrate-adopt"]);
    expect(rerun(cfg, config())).toEqual([]);
  });
});

describe("hashes", () => {
  it("re-run the backup units alone on a new schedule, and the session backups too on a new retention", () => {
    expect(rerun(config(), config({ "keel:backupSchedule": "hourly" }))).toEqual(["db-backup-timer"]);
    // (The health check reads the retention too: its own step re-runs as well.)
    expect(rerun(config(), config({ "keel:backupRetention": "7" })).filter((n) => n.startsWith("db-"))).toEqual(["db-session-backups", "db-backup-timer"]);
  });

  it("re-run what runs a DB tool when that tool changes: the tools step, the adopt step (tool + library hashed)", () => {
    const cfg = config(MIGRATE);
    const adopt = buildHostPlan(cfg).steps.find((s) => s.name === "db-migrate-adopt")!;
    const unhashed = step({ name: "db-migrate-adopt", description: "", command: adopt.command!, stdinFrom: "db-migrate-source" });
    expect(adopt.hash).not.toBe(unhashed.hash);
  });

  it("leave every existing step's hash formula as it was (stdinFrom is hashed only when set)", () => {
    const s = step({ name: "x", description: "x", command: "true", stdin: "in" });
    expect(s.hash).toBe(sha256(stableJson({ command: "true", stdin: "in", secret: null, dependsOn: [] })));
    expect(step({ name: "x", description: "x", command: "true", stdinFrom: "y" }).hash).not.toBe(step({ name: "x", description: "x", command: "true" }).hash);
  });

  it("give local and upload steps hashes of their own inputs", () => {
    const a = localStep("a", "a", "scripts/steps/db-migrate-source.sh", ["x.db"]);
    expect(localStep("a", "other text", "scripts/steps/db-migrate-source.sh", ["x.db"]).hash).toBe(a.hash);
    expect(localStep("a", "a", "scripts/steps/db-migrate-source.sh", ["y.db"]).hash).not.toBe(a.hash);
    expect(uploadStep("u", "u", "a", "/x").hash).not.toBe(uploadStep("u", "u", "a", "/y").hash);
    expect(() => uploadStep("u", "u", "a", "relative/path")).toThrow(/must be absolute/);
    expect(() => step({ name: "b", description: "", command: "true", stdin: "x", stdinFrom: "a" })).toThrow(/stdinFrom excludes stdin/);
  });
});

describe("a local step's file result", () => {
  const sha = "a".repeat(64);
  it("is the last line, sha256sum's format, with an absolute path (spaces allowed)", () => {
    expect(parseFileResult(`noise\n${sha}  /srv/old engine/engine.db\n`)).toEqual({ sha256: sha, path: "/srv/old engine/engine.db" });
  });
  it("refuses anything else with what it found", () => {
    expect(() => parseFileResult(`${sha} /one/space`)).toThrow(/expected a local step's result/);
    expect(() => parseFileResult(`${sha}  relative.db`)).toThrow(/relative\.db/);
    expect(() => parseFileResult("")).toThrow(/expected/);
  });
});
