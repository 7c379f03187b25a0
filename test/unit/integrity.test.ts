// The file-integrity baseline's plan (docs/INTEGRITY.md): aide installed without aide-common, keel's
// configuration and units, and the baseline built last. What aide and systemd make of the files is
// measured in test/host/integrity.test.ts; the baseline and its daily check on the demo VM
// (test/vm/demo.test.ts).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseConfig } from "../../config";
import { IMAGES } from "../../images";
import { buildHostPlan } from "../../plan/hostPlan";
import { AIDE_CONF, AIDE_DB_DIR, aideConf, INTEGRITY_MAX_AGE_HOURS, INTEGRITY_SERVICE, INTEGRITY_STATE_DIR, INTEGRITY_TIMER, renderIntegrityService } from "../../plan/integrity";
import { hostPaths } from "../../plan/layout";
import { toolStep } from "../../plan/steps";
import { TOOLS, toolPath } from "../../plan/tools";
import { REPO, stackConfig } from "../support/stack";

const { raw, secretKeys } = stackConfig("staging");
const cfg = parseConfig(raw, (k) => secretKeys.includes(k));
const tool = readFileSync(join(REPO, TOOLS.integrity), "utf8");
/** A constant of keel-integrity: NAME = "…" or NAME = f"{…}/…" with the names it uses filled in. */
function toolConst(name: string): string {
  const m = new RegExp(`^${name} = f?"([^"]+)"$`, "m").exec(tool);
  if (!m) throw new Error(`keel-integrity has no ${name}`);
  return m[1].replace(/\{(\w+)\}/g, (_, n: string) => toolConst(n));
}

describe("the integrity steps", () => {
  const steps = buildHostPlan(cfg).steps;
  const named = (n: string) => steps.find((s) => s.name === n)!;

  it("come last: the baseline holds what every other step placed", () => {
    expect(steps.slice(-3).map((s) => s.name)).toEqual(["integrity-package", "integrity-units", "integrity-baseline"]);
  });

  it("install aide alone: its Recommends (aide-common, which mails a host with no mail transfer agent) stay out", () => {
    expect(named("integrity-package").command).toBe(`sudo ${toolPath("packages")} aide`);
  });

  it("place keel's configuration (root's) and the units, checked by aide and systemd before they are kept", () => {
    const units = named("integrity-units");
    expect(units.bundle!.files.map((f) => [f.path, f.mode])).toEqual([
      [AIDE_CONF, "0600"],
      [`/etc/systemd/system/${INTEGRITY_SERVICE}`, "0644"],
      [`/etc/systemd/system/${INTEGRITY_TIMER}`, "0644"],
    ]);
    expect(units.bundle!.dirs!.map((d) => [d.path, d.mode])).toEqual([["/etc/aide", "0755"], [AIDE_DB_DIR, "0700"], [INTEGRITY_STATE_DIR, "0700"]]);
    expect(units.bundle!.check).toEqual([toolPath("integrity"), "config-check", `/etc/systemd/system/${INTEGRITY_SERVICE}`, `/etc/systemd/system/${INTEGRITY_TIMER}`]);
    expect(units.bundle!.onChange).toEqual([
      ["systemctl", "enable", "--no-reload", INTEGRITY_TIMER],
      ["systemctl", "daemon-reload"],
      ["systemctl", "start", INTEGRITY_TIMER],
    ]);
  });

  it("build the baseline through keel-integrity, again when the configuration changes", () => {
    const baseline = named("integrity-baseline");
    expect(baseline.command).toBe(`sudo ${toolPath("integrity")} baseline --planned`);
    expect(baseline.timeoutSeconds).toBe(3600);
    const withConf = (conf: string) => toolStep("integrity-baseline", baseline.description, "integrity", ["baseline", "--planned"], { timeoutSeconds: 3600, stdin: conf }).hash;
    // The configuration travels on stdin (keel-integrity builds only with it): another file re-runs the step.
    expect(baseline.stdin).toBe(aideConf(cfg.image));
    expect(baseline.hash).toBe(withConf(aideConf(cfg.image)));
    expect(baseline.hash).not.toBe(withConf(aideConf(cfg.image) + "/srv f Content\n"));
  });
});

describe("keel's aide.conf", () => {
  const conf = aideConf("debian-12");

  it("writes the database line aide takes on each image: `database` only on Debian 12 (ANSSI's check reads it; aide 0.19 refuses it)", () => {
    for (const image of IMAGES) {
      const line = /^(database|database_in)=file:@@\{DBDIR\}\/aide\.db$/m.exec(aideConf(image));
      expect(line?.[1], image).toBe(image === "debian-12" ? "database" : "database_in");
    }
  });

  it("names the database paths keel-integrity reads, and those ANSSI BP-028's aide_build_database looks for", () => {
    expect(toolConst("CONF")).toBe(AIDE_CONF);
    expect(toolConst("DB_DIR")).toBe(AIDE_DB_DIR);
    expect(toolConst("STATE_DIR")).toBe(INTEGRITY_STATE_DIR);
    expect(toolConst("UNIT")).toBe(INTEGRITY_SERVICE);
    expect(toolConst("MANIFEST")).toBe(`${hostPaths(cfg).keelState}/manifest.json`);
    // The OVAL check's patterns (ssg-debian12-ds.xml 0.1.76, oval:ssg-object_aide_build_database_dirpath,
    // …_operational_database_filepath, …_new_database_config): DBDIR, then database= and database_out= under it.
    expect(conf).toMatch(/^@@define[\s]DBDIR[\s]+(\/.*)$/m);
    expect(/^@@define DBDIR (.*)$/m.exec(conf)![1]).toBe(AIDE_DB_DIR);
    expect(/^database=file:(?:@@\{DBDIR\}\/)?([a-z./]+)$/m.exec(conf)![1]).toBe(toolConst("DB").slice(AIDE_DB_DIR.length + 1));
    expect(/^database_out=file:@@\{DBDIR\}\/([a-z.]+)$/m.exec(conf)![1]).toBe(toolConst("DB_NEW").slice(AIDE_DB_DIR.length + 1));
  });

  it("has aide report in JSON on stdout, which keel-integrity parses", () => {
    expect(conf).toMatch(/^report_format=json$/m);
    expect(conf).toMatch(/^report_url=stdout$/m);
  });

  it("looks at /usr, /etc, /boot, root's home, the SSH keys and the crontabs; not at the engine's code, state or backups", () => {
    const selected = [...conf.matchAll(/^(\/[^ ]+) (f|d,l) /gm)].map((m) => m[1]);
    for (const p of ["/usr", "/etc", "/boot", "/root", "/home/[^/]+/\\.ssh(/|$)", "/var/spool/cron", "/var/lib/dpkg/info"]) expect(selected).toContain(p);
    const p = hostPaths(cfg);
    for (const out of [p.appDir, p.venv, p.stateDir, p.backupDir]) expect(selected.some((s) => out.startsWith(s))).toBe(false);
  });
});

describe("keel-integrity.service", () => {
  const unit = renderIntegrityService();

  it("runs the check as the timer's job, at the lowest priority, with no network and nothing writable but its state", () => {
    expect(unit).toContain(`ExecStart=${toolPath("integrity")} check\n`);
    expect(unit).toContain("SuccessExitStatus=1\n");
    expect(unit).toContain("Nice=19\nIOSchedulingClass=idle\n");
    expect(unit).toContain("PrivateNetwork=yes\n");
    expect(unit).toContain(`ReadWritePaths=${AIDE_DB_DIR} ${INTEGRITY_STATE_DIR}\n`);
    // systemd's ProtectKernelModules= makes /usr/lib/modules inaccessible: aide would find every module removed.
    expect(unit).not.toContain("ProtectKernelModules=");
  });

  it("is counted missing by keel-integrity after the same hours as the plan says", () => {
    expect(Number(/^MAX_AGE_HOURS = (\d+)$/m.exec(tool)![1])).toBe(INTEGRITY_MAX_AGE_HOURS);
  });
});
