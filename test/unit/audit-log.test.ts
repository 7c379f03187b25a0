// keel:auditLog's plan (plan/auditLog.ts): keel-audit-log's configuration, logrotate's, the units
// and the step, and nothing of them when the key is unset. What logrotate, the kernel and systemd
// make of them is measured in test/host/audit-log.test.ts.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseConfig, type KeelConfig } from "../../config";
import {
  AUDIT_LOG_CONF,
  AUDIT_LOG_LOGROTATE,
  AUDIT_LOG_MAX_AGE_HOURS,
  AUDIT_LOG_ROTATE,
  AUDIT_LOG_SERVICE,
  AUDIT_LOG_TIMER,
  auditLogFiles,
  auditLogStateDir,
  auditLogSteps,
  renderAuditLogConf,
  renderAuditLogLogrotate,
  renderAuditLogService,
  renderAuditLogTimer,
} from "../../plan/auditLog";
import { renderHostConf } from "../../plan/health";
import { buildHostPlan } from "../../plan/hostPlan";
import { auditLogDir, auditLogFile } from "../../plan/layout";
import { TOOLS, toolFiles, toolPath } from "../../plan/tools";
import { minimalRaw, REPO } from "../support/stack";

const config = (auditLog?: string): KeelConfig => parseConfig(minimalRaw(auditLog === undefined ? {} : { "keel:auditLog": auditLog }), () => false);
const on = config("audit.log");
const off = config();
const tool = readFileSync(join(REPO, TOOLS["audit-log"]), "utf8");
/** A constant of keel-audit-log: NAME = "…", f"{…}/…" with the names it uses filled in, or a number or tuple as written. */
function toolConst(name: string): string {
  const m = new RegExp(`^${name} = f?"([^"]+)"$`, "m").exec(tool) ?? new RegExp(`^${name} = (.+)$`, "m").exec(tool);
  if (!m) throw new Error(`keel-audit-log has no ${name}`);
  return m[1].replace(/\{(\w+)\}/g, (_, n: string) => toolConst(n));
}
const lines = (text: string) => text.split("\n");

describe("keel:auditLog unset", () => {
  it("places nothing and runs no step", () => {
    expect(auditLogFiles(off)).toEqual([]);
    expect(auditLogSteps(off)).toEqual([]);
    const plan = buildHostPlan(off);
    expect(plan.steps.map((s) => s.name).filter((n) => n.startsWith("audit-log"))).toEqual([]);
    // keel-audit-log is among keel's tools (it says "not set" when asked, to keel-health and keel-verify); nothing else names it.
    const tools = new Set(toolFiles().map((f) => f.path));
    expect(plan.files.filter((f) => !tools.has(f.path) && /audit-?log/i.test(f.path + f.content)).map((f) => f.path)).toEqual([]);
  });

  it("leaves host.conf as it is: the tool reads its own configuration", () => {
    expect(renderHostConf(on)).toBe(renderHostConf(off));
  });
});

describe("keel-audit-log's configuration", () => {
  it("names the live file, its owner and group (the engine's) and the engine's unit, as the keys keel-audit-log knows", () => {
    expect(renderAuditLogConf(on).split("\n").filter((l) => l && !l.startsWith("#"))).toEqual([
      "file=/var/log/engine/audit.log",
      "group=engine",
      "owner=engine",
      "unit=engine.service",
    ]);
    expect(auditLogFile(on)).toBe("/var/log/engine/audit.log");
    expect(auditLogDir(on)).toBe("/var/log/engine");
    expect(toolConst("KEYS")).toBe(`(${["file", "group", "owner", "unit"].map((k) => JSON.stringify(k)).join(", ")})`);
  });

  it("is where keel-audit-log reads it, with logrotate's and the state keel-audit-log keeps", () => {
    expect(toolConst("CONF")).toBe(AUDIT_LOG_CONF);
    expect(toolConst("LOGROTATE_CONF")).toBe(AUDIT_LOG_LOGROTATE);
    expect(toolConst("STATE_DIR")).toBe(auditLogStateDir(on));
    expect(Number(toolConst("MAX_AGE_HOURS"))).toBe(AUDIT_LOG_MAX_AGE_HOURS);
  });
});

describe("logrotate's configuration", () => {
  const conf = renderAuditLogLogrotate(on);

  it("rotates the live file alone, daily, keeping 90 compressed copies, numbered as keel-audit-log finds them", () => {
    expect(lines(conf).filter((l) => l && !l.startsWith("#"))).toEqual([
      "/var/log/engine/audit.log {",
      "    daily",
      `    rotate ${AUDIT_LOG_ROTATE}`,
      "    copytruncate",
      "    compress",
      "    nodelaycompress",
      "    nodateext",
      "    notifempty",
      "    missingok",
      "    nomail",
      "}",
    ]);
    expect(AUDIT_LOG_ROTATE).toBe(90);
  });

  it("runs no script: keel-audit-log lifts and restores the attribute around logrotate itself", () => {
    expect(conf).not.toMatch(/^\s*(pre|post|first|last)rotate|^\s*create\b|chattr/m);
  });
});

describe("keel-audit-log.service and .timer", () => {
  const unit = renderAuditLogService(on);

  it("rotates once, as root, writing only the log directory and keel-audit-log's state, without a network", () => {
    expect(unit).toContain(`ExecStart=${toolPath("audit-log")} rotate\n`);
    expect(unit).toContain("Type=oneshot\n");
    expect(unit).toContain(`ReadWritePaths=${auditLogDir(on)} ${auditLogStateDir(on)}\n`);
    expect(unit).toContain("ProtectSystem=strict\n");
    expect(unit).toContain("PrivateNetwork=yes\n");
    expect(unit).toContain("RestrictAddressFamilies=AF_UNIX\n");
    expect(unit).not.toMatch(/^User=/m);
  });

  it("keeps the capabilities the attribute, the engine's file and the rotated files need, and no other", () => {
    expect(lines(unit).filter((l) => l.startsWith("CapabilityBoundingSet="))).toEqual(["CapabilityBoundingSet=CAP_LINUX_IMMUTABLE CAP_DAC_OVERRIDE CAP_CHOWN CAP_FOWNER"]);
  });

  it("runs daily just after midnight, and after a boot that missed it", () => {
    const timer = renderAuditLogTimer(on);
    expect(timer).toContain("OnCalendar=*-*-* 00:00:00\n");
    expect(timer).toContain("Persistent=true\n");
    expect(timer).toContain("WantedBy=timers.target\n");
  });
});

describe("the audit-log steps", () => {
  const [pkg, step] = auditLogSteps(on);

  it("install logrotate first, when the server lacks it", () => {
    expect(auditLogSteps(on).map((s) => s.name)).toEqual(["audit-log-package", "audit-log", "audit-log-start"]);
    expect(pkg.command).toBe(`sudo ${toolPath("packages")} logrotate`);
  });

  it("places the two configurations and the units (root's), with keel-audit-log's state directory", () => {
    expect(step.bundle!.files.map((f) => [f.path, f.owner, f.mode])).toEqual([
      [AUDIT_LOG_CONF, "root", "0644"],
      [AUDIT_LOG_LOGROTATE, "root", "0644"],
      [`/etc/systemd/system/${AUDIT_LOG_SERVICE}`, "root", "0644"],
      [`/etc/systemd/system/${AUDIT_LOG_TIMER}`, "root", "0644"],
    ]);
    expect(step.bundle!.dirs).toEqual([{ path: "/var/lib/keel/audit-log", owner: "root", group: "root", mode: "0700" }]);
  });

  it("keeps them only when logrotate reads its configuration and systemd the units", () => {
    expect(step.bundle!.check).toEqual([toolPath("audit-log"), "config-check", `/etc/systemd/system/${AUDIT_LOG_SERVICE}`, `/etc/systemd/system/${AUDIT_LOG_TIMER}`]);
  });

  it("reloads systemd for changed units; audit-log-start enables the timer and makes the live file whenever it is created, and its delete turns the rotation off", () => {
    expect(step.bundle!.onChange).toEqual([["systemctl", "daemon-reload"]]);
    const start = auditLogSteps(on)[2];
    if (start.kind === "local" || start.kind === "upload") throw new Error("audit-log-start is a remote step");
    // The file in the command: a new keel:auditLog name updates the step, which makes the new file.
    expect(start.command).toBe(`sudo ${toolPath("audit-log")} enable file=${auditLogFile(on)}`);
    expect((auditLogSteps(config("events.log"))[2] as typeof start).command).toBe(`sudo ${toolPath("audit-log")} enable file=/var/log/engine/events.log`);
    expect(start.deleteCommand).toBe(`sudo ${toolPath("audit-log")} off`);
    // No tool bytes behind its trigger: a new keel-audit-log updates nothing and replaces nothing.
    expect(start.unseenHash).toBe((auditLogSteps(config("events.log"))[2] as typeof start).unseenHash);
  });

  it("runs again when the file's name changes", () => {
    expect(auditLogSteps(config("events.log"))[1].hash).not.toBe(step.hash);
  });

  it("comes before the engine's start, which needs the file (the engine can create nothing in its directory)", () => {
    const names = buildHostPlan(on).steps.map((s) => s.name);
    expect(names.indexOf("audit-log-package")).toBe(names.indexOf("audit-log") - 1);
    expect(names.indexOf("audit-log")).toBeLessThan(names.indexOf("engine-start"));
    expect(names.indexOf("audit-log-start")).toBe(names.indexOf("audit-log") + 1);
    expect(names.indexOf("audit-log-start")).toBeLessThan(names.indexOf("engine-start"));
    expect(names.indexOf("audit-log")).toBeGreaterThan(names.indexOf("layout"));
  });
});
