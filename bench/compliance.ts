// Compliance benchmark (issue 14, docs/COMPLIANCE.md): OpenSCAP with ANSSI BP-028 on a Debian 12 VM
// with keel's real first boot and its whole host plan deployed (engine included), as `pulumi up`
// leaves a server. Prints, per profile (intermediary, enhanced) and per form (as published, as
// tailored by compliance/keel-anssi-bp28.tailoring.xml): pass / fail / not applicable / not decided,
// and each failing rule with keel's decision on it. Asserts nothing.
//
// oscap 1.3.7 under TCG sometimes stops making progress, every thread waiting (issue 14). So rules
// are evaluated in batches, each watched in the guest: a run whose CPU time has not moved for
// STALL_SECONDS is a stall and is killed. A stalled batch is split in halves until the rule that
// stalls is alone; that rule is tried once more by itself, and if it stalls again it is counted as
// "not decided (stalled)" — never as passed, and the run is never reported as complete.
//
// Usage: npx ts-node --transpile-only bench/compliance.ts [--level intermediary|enhanced]...
// Keeps under ~/.cache/keel/compliance/<date>/: the merged XCCDF results and the HTML report of
// each profile and form, the batches' stderr, and summary.txt (what this prints).
// Exit: 0 figures printed; 1 the VM, the content or a tool failed.
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { DATA_STREAM_INSTALLED, PROFILE_LEVELS, PROFILES, RULE_PREFIX, SSG_PACKAGE, tailoredProfileId, type ProfileLevel } from "../compliance/content";
import { DECISIONS, TAILORING_FILE } from "../compliance/decisions";
import { DEFAULT_REPO_PACKAGES } from "../local/vm/image";
import { MINUTE, asRoot, deployedTestHost, shellQuote } from "../test/vm/support/keelVm";
import type { Vm } from "../local/vm";

const CACHE = path.join(os.homedir(), ".cache", "keel", "compliance");
const GUEST_DIR = "/var/tmp/keel-compliance";
const BATCH_SIZE = 24;
/** A run whose CPU time has not moved for this long is stalled. */
const STALL_SECONDS = 90;
/** A batch that is still busy after this long is cut short too (and split like a stall). */
const BATCH_LIMIT_SECONDS = 40 * 60;

type Result = "pass" | "fail" | "notapplicable" | "notchecked" | "error" | "unknown" | "informational" | "fixed" | "stalled" | "missing";

interface Run {
  readonly level: ProfileLevel;
  readonly form: "published" | "tailored";
  readonly selected: readonly string[];
  readonly results: Map<string, Result>;
  readonly seconds: number;
  readonly stalls: number;
}

const short = (rule: string) => rule.replace(RULE_PREFIX, "");
let out: string[] = [];
function say(line = ""): void {
  console.log(line);
  out.push(line);
}

/** The ssg-debian package, downloaded once and checked against its pinned sha256; returns the data stream's path. */
function dataStream(): string {
  const dir = path.join(CACHE, `ssg-debian-${SSG_PACKAGE.version}`);
  const ds = path.join(dir, SSG_PACKAGE.dataStream);
  if (fs.existsSync(ds)) return ds;
  fs.mkdirSync(CACHE, { recursive: true });
  const deb = path.join(CACHE, path.basename(SSG_PACKAGE.url));
  if (!fs.existsSync(deb)) {
    const got = spawnSync("curl", ["-fsS", "--max-time", "300", "-o", `${deb}.part`, SSG_PACKAGE.url], { stdio: "inherit" });
    if (got.status !== 0) throw new Error(`could not download ${SSG_PACKAGE.url} (curl exit ${got.status})`);
    fs.renameSync(`${deb}.part`, deb);
  }
  const sum = createHash("sha256").update(fs.readFileSync(deb)).digest("hex");
  if (sum !== SSG_PACKAGE.sha256) {
    fs.rmSync(deb);
    throw new Error(`${SSG_PACKAGE.url}: sha256 ${sum}, expected ${SSG_PACKAGE.sha256} (compliance/content.ts); removed it`);
  }
  const tmp = `${dir}.tmp`;
  fs.rmSync(tmp, { recursive: true, force: true });
  const x = spawnSync("dpkg-deb", ["-x", deb, tmp], { stdio: "inherit" });
  if (x.status !== 0 || !fs.existsSync(path.join(tmp, SSG_PACKAGE.dataStream))) throw new Error(`dpkg-deb -x ${deb} failed or has no ${SSG_PACKAGE.dataStream}`);
  fs.renameSync(tmp, dir);
  return ds;
}

/** Rule id -> title, from the data stream's XCCDF benchmark. */
function ruleTitles(ds: string): Map<string, string> {
  const text = fs.readFileSync(ds, "utf8");
  const titles = new Map<string, string>();
  for (const m of text.matchAll(/<xccdf-1\.2:Rule [^>]*\bid="([^"]+)"[^>]*>\s*<xccdf-1\.2:title[^>]*>([^<]*)<\/xccdf-1\.2:title>/g)) titles.set(m[1], m[2]);
  return titles;
}

/** Copies a file of this machine into the guest (gzip, base64 over the ssh channel's stdin). */
async function upload(vm: Vm, local: string, guest: string): Promise<void> {
  const gz = spawnSync("gzip", ["-9c", local], { maxBuffer: 64 * 1024 * 1024 });
  if (gz.status !== 0) throw new Error(`gzip ${local} failed`);
  await asRoot(vm, `base64 -d | gunzip > ${shellQuote(guest)}`, { stdin: gz.stdout.toString("base64"), timeoutMs: 10 * MINUTE });
}

/**
 * One oscap run over `rules`, watched for a stall in the guest: "stalled", or each evaluated rule's
 * result. `profileArgs` name the profile (and the tailoring file).
 */
async function evaluate(vm: Vm, name: string, profileArgs: string, rules: readonly string[]): Promise<Map<string, Result> | "stalled"> {
  const results = `${GUEST_DIR}/${name}.xml`;
  const script = [
    `cd ${GUEST_DIR}`,
    `setsid oscap xccdf eval ${profileArgs} ${rules.map((r) => `--rule ${r}`).join(" ")} --results ${results} ds.xml >/dev/null 2>${GUEST_DIR}/${name}.err &`,
    "pid=$!",
    // CPU seconds of every process in oscap's session (its probes' children included).
    "cpu() { ps -o times= -s $pid 2>/dev/null | awk '{s+=$1} END {print s+0}'; }",
    "last=$(cpu); still=0; waited=0",
    "while kill -0 $pid 2>/dev/null; do",
    "  sleep 10; waited=$((waited+10)); now=$(cpu)",
    '  if [ "$now" = "$last" ]; then still=$((still+10)); else still=0; last=$now; fi',
    `  if [ $still -ge ${STALL_SECONDS} ] || [ $waited -ge ${BATCH_LIMIT_SECONDS} ]; then kill -9 -$pid 2>/dev/null; wait $pid 2>/dev/null; echo "stalled after $waited s"; exit 0; fi`,
    "done",
    // oscap: 0 every rule passed, 2 some failed, 1 an error.
    'wait $pid; rc=$?; echo "exit $rc"',
  ].join("\n");
  const verdict = (await asRoot(vm, script, { timeoutMs: (BATCH_LIMIT_SECONDS + 120) * 1000 })).trim();
  if (verdict.startsWith("stalled")) return "stalled";
  if (verdict !== "exit 0" && verdict !== "exit 2") {
    throw new Error(`oscap ${name}: ${verdict}; stderr: ${(await asRoot(vm, `tail -n 20 ${GUEST_DIR}/${name}.err`)).trim()}`);
  }
  const lines = (await asRoot(vm, `${GUEST_DIR}/guest.py results ${results}`)).trim().split("\n").filter(Boolean);
  return new Map(lines.map((l) => l.split(" ") as [string, Result]));
}

/** Evaluates `rules` in batches; a batch that stalls is split until the stalling rule is alone, which gets one more try. */
async function evaluateAll(vm: Vm, tag: string, profileArgs: string, rules: readonly string[], batches: string[]): Promise<{ results: Map<string, Result>; stalls: number }> {
  const results = new Map<string, Result>();
  let stalls = 0;
  const queue: { rules: readonly string[]; retry: boolean }[] = [];
  for (let i = 0; i < rules.length; i += BATCH_SIZE) queue.push({ rules: rules.slice(i, i + BATCH_SIZE), retry: false });
  while (queue.length > 0) {
    const batch = queue.shift()!;
    const name = `${tag}-${batches.length + 1}`;
    const started = Date.now();
    const got = await evaluate(vm, name, profileArgs, batch.rules);
    const took = Math.round((Date.now() - started) / 1000);
    if (got !== "stalled") {
      batches.push(name);
      for (const rule of batch.rules) results.set(rule, got.get(rule) ?? "missing");
      console.log(`  ${name}: ${batch.rules.length} rule(s) in ${took} s (${rules.length - queue.reduce((n, b) => n + b.rules.length, 0)} of ${rules.length} done)`);
      continue;
    }
    stalls++;
    console.log(`  ${name}: stalled after ${took} s (${batch.rules.length} rule(s): ${batch.rules.length <= 3 ? batch.rules.map(short).join(", ") : "splitting"})`);
    if (batch.rules.length > 1) {
      const half = Math.ceil(batch.rules.length / 2);
      queue.unshift({ rules: batch.rules.slice(0, half), retry: false }, { rules: batch.rules.slice(half), retry: false });
    } else if (!batch.retry) {
      queue.unshift({ rules: batch.rules, retry: true });
    } else {
      results.set(batch.rules[0], "stalled");
    }
  }
  return { results, stalls };
}

async function selectedRules(vm: Vm, tag: string, profileArgs: string): Promise<string[]> {
  await asRoot(vm, `cd ${GUEST_DIR} && oscap xccdf generate guide ${profileArgs} ds.xml > ${tag}-guide.html`, { timeoutMs: 20 * MINUTE });
  return (await asRoot(vm, `${GUEST_DIR}/guest.py selected ${GUEST_DIR}/${tag}-guide.html`)).trim().split("\n").filter(Boolean);
}

function count(run: Run, ...kinds: Result[]): number {
  return [...run.results.values()].filter((r) => kinds.includes(r)).length;
}

function report(run: Run, titles: Map<string, string>): void {
  const pass = count(run, "pass");
  const fail = count(run, "fail");
  const decided = pass + fail;
  const undecided = run.selected.length - decided - count(run, "notapplicable");
  say(`\n== ANSSI BP-028 ${run.level}, as ${run.form}: ${run.selected.length} rules selected, evaluated in ${run.seconds} s${run.stalls ? `, ${run.stalls} stall(s) recovered or counted` : ""}`);
  say(`pass ${pass}, fail ${fail}, not applicable ${count(run, "notapplicable")}, not decided ${undecided}` +
    ` (notchecked ${count(run, "notchecked")}, error ${count(run, "error")}, unknown ${count(run, "unknown")}, informational ${count(run, "informational")}, stalled ${count(run, "stalled")}, no result ${count(run, "missing")})`);
  say(`passes ${decided ? ((100 * pass) / decided).toFixed(1) : "n/a"}% of the ${decided} rules it decides`);
  const failing = run.selected.filter((r) => run.results.get(r) === "fail");
  if (failing.length) say("failing:");
  for (const rule of failing) {
    const decision = DECISIONS.find((d) => d.rule === short(rule));
    say(`  ${short(rule)} — ${titles.get(rule) ?? "?"}${decision ? ` [keel: ${decision.kind}]` : ""}`);
  }
  const other = run.selected.filter((r) => !["pass", "fail", "notapplicable"].includes(run.results.get(r) ?? "missing"));
  if (other.length) say("not decided:");
  for (const rule of other) say(`  ${short(rule)}: ${run.results.get(rule) ?? "missing"}`);
}

/**
 * The file-integrity baseline the plan's last step built (AIDE, ANSSI's package_aide_installed and
 * aide_build_database; docs/INTEGRITY.md): its entries, the seconds aide took and the database's
 * size, from keel-integrity's record on the host.
 */
async function reportBaseline(vm: Vm): Promise<void> {
  const shown = JSON.parse(await asRoot(vm, "/usr/local/sbin/keel-integrity show")) as { baseline: { entries: number; seconds: number; built: string } | null };
  say("\n== AIDE: the baseline the plan built (keel-integrity, docs/INTEGRITY.md)");
  if (!shown.baseline) return say("no baseline recorded");
  say(`${shown.baseline.entries} entries in ${shown.baseline.seconds} s (built ${shown.baseline.built}); database ${(await asRoot(vm, "stat -c '%s bytes' /var/lib/aide/aide.db")).trim()}`);
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const levels = args.length ? args.filter((a) => a !== "--level") : PROFILE_LEVELS;
  for (const l of levels) if (!PROFILE_LEVELS.includes(l as ProfileLevel)) throw new Error(`--level: expected one of ${PROFILE_LEVELS.join(", ")}; got "${l}"`);
  const ds = dataStream();
  const titles = ruleTitles(ds);
  const kept = path.join(CACHE, new Date().toISOString().replace(/[:.]/g, "-"));
  // The run's own directory (keys, snapshots), removed at the end like a test run's.
  const runDir = fs.mkdtempSync(path.join(os.tmpdir(), "keel-compliance-run-"));
  process.env.KEEL_TEST_RUN_DIR = runDir;
  out = [];
  const started = Date.now();
  // openscap-scanner is in the image's offline repository, not in keel's payload: the audit tool
  // is not part of the audited host. It is installed after the plan is deployed.
  const host = await deployedTestHost("compliance", { repoPackages: [...DEFAULT_REPO_PACKAGES] }).catch((err: unknown) => {
    fs.rmSync(runDir, { recursive: true, force: true });
    throw err;
  });
  const { vm } = host;
  fs.mkdirSync(kept, { recursive: true });
  try {
    say(`keel's whole plan deployed on Debian 12 (${vm.accel}) in ${Math.round((Date.now() - started) / 1000)} s since start`);
    await asRoot(vm, "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends openscap-scanner", { timeoutMs: 15 * MINUTE });
    await asRoot(vm, `rm -rf ${GUEST_DIR} && mkdir -m 0700 ${GUEST_DIR}`);
    await upload(vm, ds, `${GUEST_DIR}/ds.xml`);
    await upload(vm, path.join(__dirname, "..", TAILORING_FILE), `${GUEST_DIR}/tailoring.xml`);
    // The tailoring file names the data stream where ssg-debian installs it; the guest has a copy.
    await asRoot(vm, `sed -i 's#${DATA_STREAM_INSTALLED}#${GUEST_DIR}/ds.xml#' ${GUEST_DIR}/tailoring.xml`);
    await upload(vm, path.join(__dirname, "compliance-guest.py"), `${GUEST_DIR}/guest.py`);
    await asRoot(vm, `chmod 0700 ${GUEST_DIR}/guest.py`);
    say(`oscap: ${(await asRoot(vm, "oscap --version | head -n 1")).trim()}; content: ${SSG_PACKAGE.name} ${SSG_PACKAGE.version}`);

    const publishedRules = new Set<string>();
    for (const level of levels as ProfileLevel[]) {
      for (const form of ["published", "tailored"] as const) {
        const tag = `${level}-${form}`;
        const profileArgs = form === "published" ? `--profile ${PROFILES[level]}` : `--tailoring-file ${GUEST_DIR}/tailoring.xml --profile ${tailoredProfileId(level)}`;
        const selected = await selectedRules(vm, tag, profileArgs);
        if (form === "published") for (const r of selected) publishedRules.add(r);
        console.log(`${tag}: ${selected.length} rules selected`);
        const t0 = Date.now();
        const batches: string[] = [];
        const { results, stalls } = await evaluateAll(vm, tag, profileArgs, selected, batches);
        const run: Run = { level, form, selected, results, stalls, seconds: Math.round((Date.now() - t0) / 1000) };
        report(run, titles);
        // One results file and one HTML report per profile and form, from the batches.
        await asRoot(vm, `cd ${GUEST_DIR} && ./guest.py merge ${tag}.xml ${batches.map((b) => `${b}.xml`).join(" ")} && oscap xccdf generate report ${tag}.xml > ${tag}.html`, { timeoutMs: 20 * MINUTE });
        for (const file of [`${tag}.xml`, `${tag}.html`]) {
          fs.writeFileSync(path.join(kept, file), await asRoot(vm, `cat ${GUEST_DIR}/${file}`, { timeoutMs: 10 * MINUTE }));
        }
        fs.writeFileSync(path.join(kept, `${tag}.stderr.txt`), await asRoot(vm, `cd ${GUEST_DIR} && tail -n 5 ${tag}-*.err`));
      }
    }
    await reportBaseline(vm);
    const unselected = DECISIONS.filter((d) => !publishedRules.has(`${RULE_PREFIX}${d.rule}`));
    // Only a run of every level can say a decision serves none of them.
    if (unselected.length && levels.length === PROFILE_LEVELS.length) say(`\ndecided but selected by no published profile (remove from compliance/decisions.ts): ${unselected.map((d) => d.rule).join(", ")}`);
    say(`\nreports and results kept in ${kept}`);
  } finally {
    fs.writeFileSync(path.join(kept, "summary.txt"), `${out.join("\n")}\n`);
    await vm.shutdown();
    fs.rmSync(host.tmp, { recursive: true, force: true });
    fs.rmSync(runDir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(`bench/compliance: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
