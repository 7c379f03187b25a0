// keel-integrity (scripts/host/keel-integrity, docs/INTEGRITY.md) with this machine's real aide 0.18
// on a temporary tree: keel's aide.conf (plan/integrity.ts aideConf("debian-12")) with only its database
// directory and its selections moved there, every attribute group and option as keel writes them.
// Its paths are moved into the temp dir by loading it as a module (as compliance-tool.test.ts
// does). Here: what it refuses, the baseline and its record, what a check explains and what it
// does not, pending changes and their acceptance, a database changed behind its back, the verdict,
// the configuration's and the unit's checks (systemd-analyze), and what keel-health and keel
// verify make of each verdict. Needs root. The baseline of a whole host and its daily check under
// systemd run on the demo VM (test/vm/demo.test.ts).
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { appendFileSync, utimesSync, chmodSync, chownSync, copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { aideConf, INTEGRITY_MAX_AGE_HOURS, INTEGRITY_SERVICE, INTEGRITY_TIMER, renderIntegrityService, renderIntegrityTimer } from "../../plan/integrity";
import { TOOLS, toolPath } from "../../plan/tools";
import { REPO } from "../support/stack";
import { exposure, MAX_INTEGRITY_EXPOSURE } from "../support/units";

const TOOL = join(REPO, TOOLS.integrity);
const ENV = { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" };
const SHOW = "read them with scripts/runbook/integrity.sh show";

const hex = (algo: string, data: string | Buffer) => createHash(algo).update(data).digest("hex");
const fileSha = (path: string) => hex("sha256", readFileSync(path));

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
const tempDir = (prefix: string) => dirs[dirs.push(mkdtempSync(join(tmpdir(), prefix))) - 1];

/** Loads scripts/host/`file` as module m (python3 -I -B). */
const loader = (file: string) => `
import importlib.machinery, importlib.util, json, sys
spec = importlib.util.spec_from_loader("m", importlib.machinery.SourceFileLoader("m", ${JSON.stringify(join(REPO, file))}))
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
`;

/** keel's aide.conf, its database directory and its selections moved to `dbDir` and `tree`. */
function testConf(dbDir: string, tree: string): string {
  const kept = aideConf("debian-12")
    .split("\n")
    .filter((line) => !/^!?\//.test(line))
    .map((line) => (line.startsWith("@@define DBDIR ") ? `@@define DBDIR ${dbDir}` : line));
  return [...kept, `${tree} f Content`, `${tree} d,l Entry`, ""].join("\n");
}

type Run = { code: number; stdout: string; stderr: string; bytes: Buffer };

/** A host in a temp dir: the tree aide looks at, its database, keel-integrity's state, dpkg's info and keel-place's manifest. */
class Host {
  readonly root = tempDir("keel-integrity-");
  readonly tree = join(this.root, "tree");
  readonly conf = join(this.root, "aide.conf");
  readonly db = join(this.root, "db", "aide.db");
  readonly pending = join(this.root, "db", "aide.db.pending");
  readonly baselineRecord = join(this.root, "state", "baseline.json");
  readonly checkRecord = join(this.root, "state", "check.json");
  readonly manifest = join(this.root, "manifest.json");
  readonly info = join(this.root, "dpkg");
  readonly status = join(this.root, "status");
  constructor() {
    for (const d of [this.tree, join(this.root, "db"), this.info]) mkdirSync(d, { recursive: true });
    writeFileSync(this.conf, testConf(join(this.root, "db"), this.tree));
  }

  /** A file of the tree with `content` and `mode`; its path. */
  file(name: string, content: string, mode = 0o644): string {
    const path = join(this.tree, name);
    writeFileSync(path, content);
    chmodSync(path, mode);
    return path;
  }

  /** keel-integrity `args`, its paths in this host; `extra` (Python) runs before main. */
  run(args: string[], extra = "", input = ""): Run {
    const program = `${loader(TOOLS.integrity)}
root = sys.argv[1]
m.CONF, m.DB_DIR, m.STATE_DIR = root + "/aide.conf", root + "/db", root + "/state"
m.DB, m.DB_NEW, m.PENDING = (m.DB_DIR + "/aide.db" + s for s in ("", ".new", ".pending"))
m.BASELINE_RECORD, m.CHECK_RECORD, m.LOCK = (m.STATE_DIR + "/" + n for n in ("baseline.json", "check.json", ".lock"))
m.MANIFEST, m.DPKG_INFO, m.DPKG_STATUS = root + "/manifest.json", root + "/dpkg", root + "/status"
# This machine's apt knows nothing of the test's package: it comes from a source unless a test says otherwise.
m.apt_sourceless = lambda packages: []
${extra}
sys.exit(m.main(sys.argv[2:]))`;
    const r = spawnSync("python3", ["-I", "-B", "-c", program, this.root, ...args], { env: ENV, input });
    return { code: r.status ?? -1, stdout: r.stdout.toString(), stderr: r.stderr.toString(), bytes: r.stdout };
  }

  ok(args: string[], extra = ""): Run {
    const r = this.run(args, extra);
    return expect(r.code, r.stderr).toBe(0), r;
  }

  verdict = (): string => this.ok(["verdict"]).stdout;
  json = (path: string): Record<string, any> => JSON.parse(readFileSync(path, "utf8"));

  /** The sha256 of every file of the database directory and keel-integrity's state. */
  snapshot(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const d of ["db", "state"]) for (const f of existsSync(join(this.root, d)) ? readdirSync(join(this.root, d)) : []) out[`${d}/${f}`] = fileSha(join(this.root, d, f));
    return out;
  }

  /** dpkg's record of package keel-test at `version`: md5sums (path: content), its list, and its conffiles' md5s. */
  dpkg(md5sums: Record<string, string>, listed: string[] = [], conffiles: Record<string, string> = {}, version = "1"): void {
    writeFileSync(join(this.info, "keel-test.md5sums"), Object.entries(md5sums).map(([p, c]) => `${hex("md5", c)}  ${p.slice(1)}\n`).join(""));
    writeFileSync(join(this.info, "keel-test.list"), listed.map((p) => `${p}\n`).join(""));
    const lines = Object.entries(conffiles).map(([p, c]) => ` ${p} ${hex("md5", c)}\n`).join("");
    writeFileSync(this.status, `Package: keel-test\nStatus: install ok installed\nVersion: ${version}\nConffiles:\n${lines}\n`);
  }
}

/** Every unexplained change of the last check: [path, change]. */
const unexplained = (h: Host) => (h.json(h.checkRecord).unexplained as { path: string; change: string }[]).map((u) => [u.path, u.change]);

describe("keel-integrity: what it refuses", () => {
  it("compiles (python3 -m py_compile, in a temporary directory)", () => {
    const tmp = tempDir("keel-integrity-compile-");
    const r = spawnSync("python3", ["-I", "-c", "import py_compile, sys; py_compile.compile(sys.argv[1], cfile=sys.argv[2], doraise=True)", TOOL, join(tmp, "c.pyc")], { encoding: "utf8" });
    expect(r.status, r.stderr).toBe(0);
  });

  it("runs only as root", () => {
    for (const command of [["check"], ["verdict"], ["baseline"]]) {
      const r = spawnSync("runuser", ["-u", "nobody", "--", "python3", "-I", TOOL, ...command], { encoding: "utf8", env: ENV });
      expect([r.status, r.stderr]).toEqual([2, "keel-integrity: must run as root (sudo)\n"]);
    }
  });

  it("refuses a usage error before it changes anything: no command, an unknown one, accept without a sha256 or with another word", () => {
    const h = new Host();
    h.ok(["baseline"]);
    const before = h.snapshot();
    for (const args of [[], ["frobnicate"], ["accept"], ["accept", "nope"], ["accept", "A".repeat(64)], ["database", "nope"]]) expect(h.run(args).code, args.join(" ")).toBe(2);
    expect(h.run(["accept", "nope"]).stderr).toBe("keel-integrity: 'nope' is not a sha256: give the pending database's, as scripts/runbook/integrity.sh show printed it; nothing was changed\n");
    expect(h.snapshot()).toEqual(before);
  });
});

describe("keel-integrity's baseline, with keel's aide.conf and this machine's aide", () => {
  it("builds the database (0600) and its record: the configuration's and the database's sha256", () => {
    const h = new Host();
    h.file("a", "a\n");
    const r = h.ok(["baseline"]);
    expect(r.stdout).toMatch(new RegExp(`^keel-integrity: built the baseline \\(first baseline\\): 2 entries in \\d+ s; ${h.db} sha256 [0-9a-f]{64}\\n$`));
    expect(h.json(h.baselineRecord)).toMatchObject({ reason: "first baseline", conf_sha256: fileSha(h.conf), db_sha256: fileSha(h.db), entries: 2 });
    expect(readFileSync(h.db).subarray(0, 2)).toEqual(Buffer.from([0x1f, 0x8b])); // gzip_dbout=yes
    expect(spawnSync("stat", ["-c", "%a", h.db], { encoding: "utf8" }).stdout).toBe("600\n");
  });

  it("builds only with the configuration the step gives on stdin, refusing another before it changes anything", () => {
    const h = new Host();
    const r = h.run(["baseline", "--planned"], "", "# another aide.conf\n");
    expect([r.code, r.stderr]).toEqual([2, `keel-integrity: ${h.conf} is not the configuration this pulumi up placed (the health report's drift check names it): pulumi up again puts it back; nothing was changed\n`]);
    expect(existsSync(h.db)).toBe(false);
    expect(h.run(["baseline", "--planned"], "", "").code).toBe(2);
    expect(h.run(["baseline", "--planned"], "", readFileSync(h.conf, "utf8")).code).toBe(0);
  });

  it("leaves a baseline in place; builds it anew when the configuration changed; refuses a database someone else changed", () => {
    const h = new Host();
    h.ok(["baseline"]);
    const sha = fileSha(h.db);
    expect(h.ok(["baseline"]).stdout).toMatch(/^keel-integrity: the baseline of \S+ is in place \(1 entries\)\n$/);
    expect(fileSha(h.db)).toBe(sha);
    appendFileSync(h.conf, "# another configuration\n");
    expect(h.ok(["baseline"]).stdout).toContain("built the baseline (the configuration changed)");
    expect(h.json(h.baselineRecord).conf_sha256).toBe(fileSha(h.conf));
    const built = fileSha(h.db);
    appendFileSync(h.db, "x");
    const tampered = fileSha(h.db);
    const r = h.run(["baseline"]);
    expect([r.code, r.stderr]).toEqual([2, `keel-integrity: ${h.db} is not the baseline keel-integrity built (sha256 ${tampered}, recorded ${built}): find out who changed it, then scripts/runbook/integrity.sh rebuild; nothing was changed\n`]);
    expect(fileSha(h.db)).toBe(tampered);
  });
});

describe("keel-integrity check", () => {
  it("finds nothing on an unchanged tree (exit 0, verdict ok)", () => {
    const h = new Host();
    h.file("a", "a\n");
    h.ok(["baseline"]);
    expect(h.verdict()).toMatch(/^ok\tbaseline of \S+ \(2 entries\); not checked yet/);
    expect(h.ok(["check"]).stdout).toBe("keel-integrity: no unexplained change (0 explained); the baseline now holds them\n");
    expect(h.json(h.checkRecord)).toMatchObject({ counts: { total: 2, added: 0, removed: 0, changed: 0 }, explained: {}, unexplained: [] });
    expect(h.verdict()).toMatch(/^ok\tchecked \S+ against the baseline of \S+: no unexplained change \(0 explained\)\n$/);
  });

  it("explains a rewrite with the same bytes, a package's update (its file and conffile), keel's file, a link to a package's file, a listed directory and a removal the update made; the baseline moves on", () => {
    const h = new Host();
    const same = h.file("same", "same\n");
    const pkg = h.file("pkg", "old package file\n");
    const conffile = h.file("etc.conf", "old conf\n");
    const placed = h.file("placed", "old keel file\n");
    const gone = h.file("gone", "nobody's\n");
    const link = join(h.tree, "link");
    symlinkSync(same, link);
    h.dpkg({ [pkg]: "old package file\n" }, [pkg], { [conffile]: "old conf\n" }, "1");
    h.ok(["baseline"]);
    const before = h.json(h.baselineRecord).db_sha256;

    copyFileSync(same, `${same}.tmp`);
    renameSync(`${same}.tmp`, same); // a new inode, the same bytes
    h.file("pkg", "new package file, a longer one\n");
    h.file("etc.conf", "new conf\n");
    h.file("placed", "new keel file\n");
    writeFileSync(h.manifest, JSON.stringify({ [placed]: { sha256: hex("sha256", "new keel file\n"), mode: "0644", owner: "root", group: "root" } }));
    unlinkSync(link);
    symlinkSync(pkg, link);
    unlinkSync(gone);
    const dir = join(h.tree, "dir");
    mkdirSync(dir);
    // The package's version 2, from an apt source (apt_sourceless stood in for: none).
    h.dpkg({ [pkg]: "new package file, a longer one\n" }, [dir, pkg], { [conffile]: "new conf\n" }, "2");

    const r = h.ok(["check"]);
    expect(r.stdout).toBe("keel-integrity: no unexplained change (7 explained); the baseline now holds them\n");
    const record = h.json(h.checkRecord);
    expect(record.unexplained).toEqual([]);
    expect(record.explained).toEqual({
      "a directory a package lists or keel's files live in": { count: 1, paths: [dir] },
      "removed with a package change, claimed by nobody now": { count: 1, paths: [gone] },
      "installed by a package": { count: 2, paths: [conffile, pkg] },
      "a link to a file keel or an updated package installed": { count: 1, paths: [link] },
      "placed by keel": { count: 1, paths: [placed] },
      "rewritten with the same content": { count: 1, paths: [same] },
    });
    const after = h.json(h.baselineRecord);
    expect(after.db_sha256).not.toBe(before);
    expect(after.db_sha256).toBe(fileSha(h.db));
    expect(after.packages["keel-test"].version).toBe("2");
    expect(record.db_sha256).toBe(after.db_sha256);
    expect(existsSync(h.pending)).toBe(false);
    expect(h.ok(["check"]).stdout).toContain("no unexplained change (0 explained)");
  });

  it("trusts no package an intruder could have made: md5sums rewritten at the same version, a version no apt source offers; nor their files, nor a removal without a package change", () => {
    const h = new Host();
    const pkg = h.file("pkg", "package file\n");
    const gone = h.file("gone", "nobody's\n");
    h.dpkg({ [pkg]: "package file\n" }, [pkg], {}, "1");
    h.ok(["baseline"]);
    unlinkSync(gone);
    expect(h.run(["check"]).code).toBe(1);
    expect(unexplained(h)).toEqual([[gone, "removed"]]);
    h.ok(["accept", h.json(h.checkRecord).pending_sha256]);

    // The trojan and dpkg's checksum of it, at the same version.
    h.file("pkg", "trojan\n");
    h.dpkg({ [pkg]: "trojan\n" }, [pkg], {}, "1");
    expect(h.run(["check"]).code).toBe(1);
    expect(unexplained(h)).toEqual([["dpkg:keel-test", "package"], [pkg, "changed"]]);
    expect(h.json(h.checkRecord).unexplained[0].summary).toBe("its md5sums or conffile checksums changed at the same version");

    // A new version, but one only dpkg knows (dpkg -i of a file).
    h.dpkg({ [pkg]: "trojan\n" }, [pkg], {}, "2");
    expect(h.run(["check"], "m.apt_sourceless = lambda packages: list(packages)").code).toBe(1);
    expect(unexplained(h)).toEqual([["dpkg:keel-test", "package"], [pkg, "changed"]]);
    expect(h.json(h.checkRecord).unexplained[0].summary).toBe("version 2 comes from no apt source (dpkg -i of a file?)");
  });

  it("explains byte-compiled Python only beside a source a package installed in the same check; a .pyc alone is unexplained", () => {
    const h = new Host();
    mkdirSync(join(h.tree, "__pycache__"));
    const source = h.file("mod.py", "x = 1\n");
    const pyc = h.file("__pycache__/mod.cpython-311.pyc", "compiled 1\n");
    h.dpkg({ [source]: "x = 1\n" }, [source], {}, "1");
    h.ok(["baseline"]);
    h.file("mod.py", "x = 2\n");
    h.file("__pycache__/mod.cpython-311.pyc", "compiled 2\n");
    h.dpkg({ [source]: "x = 2\n" }, [source], {}, "2");
    h.ok(["check"]);
    expect(h.json(h.checkRecord).explained["byte-compiled from a package's source"]).toEqual({ count: 1, paths: [pyc] });
    h.file("__pycache__/mod.cpython-311.pyc", "an intruder's code\n");
    expect(h.run(["check"]).code).toBe(1);
    expect(unexplained(h)).toEqual([[pyc, "changed"]]);
  });

  it("does not take a touched source as a reason for a new .pyc, nor a conffile whose checksum was rewritten in dpkg's status", () => {
    const h = new Host();
    mkdirSync(join(h.tree, "__pycache__"));
    const source = h.file("mod.py", "x = 1\n");
    const pyc = h.file("__pycache__/mod.cpython-311.pyc", "compiled 1\n");
    const conffile = h.file("etc.conf", "packaged conf\n");
    h.dpkg({ [source]: "x = 1\n" }, [source], { [conffile]: "packaged conf\n" }, "1");
    h.ok(["baseline"]);
    utimesSync(source, new Date(2030, 0, 1), new Date(2030, 0, 1));
    h.file("__pycache__/mod.cpython-311.pyc", "an intruder's code\n");
    h.file("etc.conf", "an intruder's conf\n");
    h.dpkg({ [source]: "x = 1\n" }, [source], { [conffile]: "an intruder's conf\n" }, "1");
    expect(h.run(["check"]).code).toBe(1);
    expect(unexplained(h)).toEqual([["dpkg:keel-test", "package"], [conffile, "changed"], [pyc, "changed"]]);
  });

  it("refuses to check with a configuration the baseline was not built with, leaving the last check's record and what it left pending", () => {
    const h = new Host();
    h.ok(["baseline"]);
    h.file("added", "who?\n");
    expect(h.run(["check"]).code).toBe(1);
    const record = readFileSync(h.checkRecord, "utf8");
    appendFileSync(h.conf, "# a new keel's configuration\n");
    const r = h.run(["check"]);
    expect([r.code, r.stderr]).toEqual([2, `keel-integrity: ${h.conf} is not the configuration the baseline was built with: pulumi up (its integrity-baseline step) builds it anew; nothing was changed\n`]);
    expect(readFileSync(h.checkRecord, "utf8")).toBe(record);
    // And the new configuration's baseline waits for the change to be read and accepted.
    expect(h.run(["baseline"]).stderr).toContain("the last check found 1 change(s) nobody has accepted");
    h.ok(["accept", JSON.parse(record).pending_sha256]);
    expect(h.ok(["baseline"]).stdout).toContain("built the baseline (the configuration changed)");
  });

  it("follows one link, to a regular file a package or keel installed: not a chain, not a directory", () => {
    const h = new Host();
    const pkg = h.file("pkg", "package file\n");
    h.dpkg({ [pkg]: "package file\n" }, [pkg, h.tree], {}, "1");
    const hop = join(h.tree, "hop");
    symlinkSync(pkg, hop);
    h.ok(["baseline"]);
    const chain = join(h.tree, "chain");
    symlinkSync(hop, chain);
    const toDir = join(h.tree, "to-dir");
    symlinkSync(h.tree, toDir);
    expect(h.run(["check"]).code).toBe(1);
    expect(unexplained(h)).toEqual([[chain, "added"], [toDir, "added"]]);
  });

  it("explains an initramfs a kernel update regenerated only for a kernel a package installed, and a root file without special bits", () => {
    const h = new Host();
    mkdirSync(join(h.tree, "boot"));
    const vmlinuz = h.file("boot/vmlinuz-6.1.0-99", "kernel\n");
    h.dpkg({ [vmlinuz]: "kernel\n" }, [vmlinuz], {}, "1");
    h.ok(["baseline"]);
    const initrd = h.file("boot/initrd.img-6.1.0-99", "initramfs\n");
    const stray = h.file("boot/initrd.img-6.1.0-98", "no kernel for this one\n");
    const regenerated = `m.REGENERATED = ((m.re.compile(root + "/tree/boot/initrd\\\\.img-([^/]+)"), lambda v: [root + "/tree/boot/vmlinuz-" + v]),)`;
    expect(h.run(["check"], regenerated).code).toBe(1);
    expect(unexplained(h)).toEqual([[stray, "added"]]);
    expect(h.json(h.checkRecord).explained["regenerated for what a package installed"]).toEqual({ count: 1, paths: [initrd] });
  });

  it("does not explain an added file, a package's file whose mode changed, a removed file a package lists: exit 1, the baseline kept, the new database pending", () => {
    const h = new Host();
    const suid = h.file("suid", "a packaged program\n", 0o755);
    const listed = h.file("listed", "listed\n");
    h.dpkg({ [suid]: "a packaged program\n" }, [suid, listed]);
    h.ok(["baseline"]);
    const db = fileSha(h.db);
    chmodSync(suid, 0o4755);
    unlinkSync(listed);
    const added = h.file("added", "who put this here?\n");

    const r = h.run(["check"]);
    const named = `${added} (added), ${listed} (removed), ${suid} (changed)`;
    expect([r.code, r.stderr]).toEqual([1, `keel-integrity: 3 change(s) no package and no keel step explains: ${named}\n`]);
    expect(unexplained(h)).toEqual([[added, "added"], [listed, "removed"], [suid, "changed"]]);
    expect(h.json(h.checkRecord).unexplained[2].attributes).toContain("perm");
    expect(fileSha(h.db)).toBe(db);
    expect(h.json(h.baselineRecord).db_sha256).toBe(db);
    expect(h.json(h.checkRecord).pending_sha256).toBe(fileSha(h.pending));
    const t = h.json(h.checkRecord).time;
    expect(h.verdict()).toBe(`failed\tthe check of ${t} found 3 change(s) no package and no keel step explains: ${named}; ${SHOW}\n`);
  });

  it("does not explain a link a package lists once it points at a file nobody installed", () => {
    const h = new Host();
    const pkg = h.file("python3.11", "a packaged interpreter\n");
    const link = join(h.tree, "python3");
    symlinkSync(pkg, link);
    h.dpkg({ [pkg]: "a packaged interpreter\n" }, [pkg, link]);
    h.ok(["baseline"]);
    const elsewhere = join(h.root, "not-watched");
    writeFileSync(elsewhere, "#!/bin/sh\n");
    unlinkSync(link);
    symlinkSync(elsewhere, link);
    expect(h.run(["check"]).code).toBe(1);
    expect(unexplained(h)).toEqual([[link, "changed"]]);
  });

  it("does not explain a file keel placed whose owner changed, its content and mode as recorded", () => {
    const h = new Host();
    const placed = h.file("sudoers-keel", "keel ALL=(ALL) NOPASSWD: /usr/local/sbin/keel-ops\n", 0o440);
    writeFileSync(h.manifest, JSON.stringify({ [placed]: { sha256: fileSha(placed), mode: "0440", owner: "root", group: "root" } }));
    h.ok(["baseline"]);
    chownSync(placed, 65534, 0); // nobody may now rewrite it
    expect(h.run(["check"]).code).toBe(1);
    expect(unexplained(h)).toEqual([[placed, "changed"]]);
  });

  it("escapes a file name's newline and right-to-left override in what it prints: one line each, no control character", () => {
    const h = new Host();
    h.ok(["baseline"]);
    h.file("x\ny", "");
    h.file("r\u202eevil", "");
    const r = h.run(["check"]);
    const named = `${h.tree}/r\\u202eevil (added), ${h.tree}/x\\ny (added)`;
    expect([r.code, r.stderr]).toEqual([1, `keel-integrity: 2 change(s) no package and no keel step explains: ${named}\n`]);
    const verdict = h.verdict();
    expect(verdict).toMatch(/^failed\t[^\n\u202e]*\n$/);
    expect(verdict).toContain(named);
  });

  it("reports a file whose name is not UTF-8 (escaped) rather than failing the check", () => {
    const h = new Host();
    h.ok(["baseline"]);
    writeFileSync(Buffer.concat([Buffer.from(`${h.tree}/bad`), Buffer.from([0xff])]), "");
    const r = h.run(["check"]);
    expect(r.stderr).toMatch(/^keel-integrity: 1 change\(s\) no package and no keel step explains: [\x20-\x7e]+\/bad[\x20-\x7e]* \(added\)\n$/);
    expect(h.verdict()).toMatch(/^failed\t[\x20-\x7e]*bad[\x20-\x7e]*\n$/);
  });
});

describe("keel-integrity accept and rebuild", () => {
  it("accepts only the pending database's sha256; then the pending database is the baseline, the verdict ok and the next check clean", () => {
    const h = new Host();
    h.ok(["baseline"]);
    const added = h.file("added", "expected\n");
    expect(h.run(["check"]).code).toBe(1);
    const { pending_sha256: sha, time } = h.json(h.checkRecord);
    const before = h.snapshot();
    const wrong = h.run(["accept", "0".repeat(64)]);
    expect([wrong.code, wrong.stderr]).toEqual([2, `keel-integrity: the pending database is ${sha}, not ${"0".repeat(64)}: accept what \`scripts/runbook/integrity.sh show\` printed, after reading it; nothing was changed\n`]);
    expect(h.snapshot()).toEqual(before);

    expect(h.ok(["accept", sha]).stdout).toBe(`keel-integrity: accepted 1 change(s) of the check of ${time}; they are the baseline now\n`);
    expect(fileSha(h.db)).toBe(sha);
    expect(existsSync(h.pending)).toBe(false);
    expect(h.json(h.baselineRecord).db_sha256).toBe(sha);
    expect(h.json(h.checkRecord)).toMatchObject({ accepted: expect.any(String), db_sha256: sha, unexplained: [{ path: added, change: "added" }] });
    expect(h.verdict()).toMatch(/^ok\tchecked /);
    expect(h.run(["accept", sha]).stderr).toBe("keel-integrity: the last check left nothing pending: nothing to accept; nothing was changed\n");
    h.ok(["check"]);
    expect(h.json(h.checkRecord)).toMatchObject({ counts: { added: 0, removed: 0, changed: 0 }, unexplained: [] });
  });

  it("checks nothing against a database changed after the baseline (aide not run), fails the verdict naming it; rebuild makes it ok", () => {
    const h = new Host();
    h.ok(["baseline"]);
    appendFileSync(h.db, "x");
    const r = h.run(["check"], "m.aide = lambda mode: sys.exit(99)");
    // Refused (2), the last check's record left as it was (a later accept still works).
    expect([r.code, r.stderr]).toEqual([2, `keel-integrity: ${h.db} is not the baseline keel-integrity built: find out who changed it, then scripts/runbook/integrity.sh rebuild; nothing was changed\n`]);
    expect(existsSync(h.checkRecord)).toBe(false);
    expect(existsSync(h.pending)).toBe(false);
    expect(h.verdict()).toBe(`failed\t${h.db} is not the baseline keel-integrity built: find out who changed it, then scripts/runbook/integrity.sh rebuild\n`);
    expect(h.ok(["rebuild"]).stdout).toContain("built the baseline (rebuilt by the operator)");
    expect(existsSync(h.checkRecord)).toBe(false);
    expect(h.verdict()).toMatch(/^ok\tbaseline of /);
  });
});

describe("keel-integrity check-now (systemctl stood in for)", () => {
  /** check-now, systemctl start answering `rc`, after a check of its own when `checks`. */
  const checkNow = (h: Host, rc: number, checks: boolean) =>
    h.run(["check-now"], `
import contextlib, io
real = m.subprocess.run
def systemctl(argv, **kw):
    assert argv == ["systemctl", "start", m.UNIT], argv
    m.subprocess.run = real  # for aide
    if ${checks ? "True" : "False"}:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            m.cmd_check()
    return real(["sh", "-c", "exit ${rc}"])
m.subprocess.run = systemctl`);

  it("prints the verdict of the check the unit recorded; fails (3) when the unit failed or recorded nothing", () => {
    const h = new Host();
    h.ok(["baseline"]);
    expect(checkNow(h, 0, true)).toMatchObject({ code: 0, stdout: expect.stringMatching(/^keel-integrity: checked \S+ against the baseline of .*no unexplained change/) });
    const added = h.file("added", "");
    expect(checkNow(h, 0, true)).toMatchObject({ code: 1, stdout: "", stderr: expect.stringContaining(`found 1 change(s) no package and no keel step explains: ${added} (added)`) });
    expect(checkNow(h, 0, false)).toMatchObject({ code: 3, stderr: expect.stringContaining(`keel-integrity.service ran but recorded no check in ${h.checkRecord}`) });
    expect(checkNow(h, 1, false)).toMatchObject({ code: 3, stderr: expect.stringContaining("keel-integrity.service failed (systemctl exit 1)") });
  });
});

describe("keel-integrity verdict, database and config-check", () => {
  // The verdict exits 0 whatever it says: keel-health and keel verify read a non-zero exit as "no verdict".
  it("is skipped without the configuration, and failed when the last check is older than the timer allows", () => {
    const h = new Host();
    h.ok(["baseline"]);
    h.ok(["check"]);
    const at = (hours: number) => new Date(Date.now() - hours * 3600_000).toISOString().replace(/\.\d+Z$/, "Z");
    const record = h.json(h.checkRecord);
    writeFileSync(h.checkRecord, JSON.stringify({ ...record, time: at(INTEGRITY_MAX_AGE_HOURS - 1) }));
    expect(h.verdict()).toMatch(/^ok\t/);
    const old = at(INTEGRITY_MAX_AGE_HOURS + 1);
    writeFileSync(h.checkRecord, JSON.stringify({ ...record, time: old }));
    expect(h.verdict()).toBe(`failed\tno check since ${old} (${INTEGRITY_MAX_AGE_HOURS + 1} h; keel-integrity.timer runs daily): systemctl status keel-integrity.timer keel-integrity.service\n`);
    rmSync(h.conf);
    expect(h.verdict()).toBe(`skipped\tno ${h.conf}: this host was last converged by a keel without the integrity baseline; pulumi up\n`);
  });

  it("prints the database's sha256 and its bytes only when they are the baseline's", () => {
    const h = new Host();
    h.ok(["baseline"]);
    const sha = fileSha(h.db);
    expect(h.ok(["database-sha256"]).stdout).toBe(`${sha}\n`);
    expect(h.ok(["database", sha]).bytes.equals(readFileSync(h.db))).toBe(true);
    const other = h.run(["database", "0".repeat(64)]);
    expect([other.code, other.stdout, other.stderr]).toEqual([2, "", `keel-integrity: the baseline database is no longer ${"0".repeat(64)}: ask for its sha256 again; nothing was changed\n`]);
    appendFileSync(h.db, "x");
    for (const args of [["database-sha256"], ["database", sha]]) {
      const r = h.run(args);
      expect([r.code, r.stdout]).toEqual([2, ""]);
      expect(r.stderr).toContain(`${h.db} is not the baseline keel-integrity built`);
    }
  });

  it("config-check: aide takes keel's aide.conf as it is (its warning about `database` dropped) and refuses a broken one, naming it", () => {
    const dir = tempDir("keel-integrity-conf-");
    const conf = join(dir, "aide.conf");
    writeFileSync(conf, aideConf("debian-12"));
    expect(spawnSync("aide", ["--config-check", "--config", conf], { encoding: "utf8" }).stderr).toContain("Using 'database' is DEPRECATED");
    const h = new Host();
    const set = (file: string) => `m.CONF = ${JSON.stringify(file)}`;
    const r = h.run(["config-check"], set(conf));
    expect([r.code, r.stdout, r.stderr]).toEqual([0, "", ""]);
    const broken = join(dir, "broken.conf");
    writeFileSync(broken, aideConf("debian-12").replace("Content = p+", "Content = nonsense+p+"));
    const bad = h.run(["config-check"], set(broken));
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(new RegExp(`^keel-integrity: aide refuses ${broken} \\(exit \\d+\\): .*group 'nonsense' is not defined`));
    expect(bad.stderr).not.toContain("DEPRECATED");
  });
});

describe("what keel-health and keel verify make of keel-integrity verdict", () => {
  const dir = tempDir("keel-integrity-callers-");
  const stub = join(dir, "keel-integrity");
  const answer = (shell: string) => writeFileSync(stub, `#!/bin/sh\n[ "$1" = verdict ] || exit 9\n${shell}\n`, { mode: 0o755 });
  const python = (program: string) => {
    const r = spawnSync("python3", ["-I", "-B", "-c", program], { encoding: "utf8", env: ENV });
    expect(r.stderr).toBe("");
    return JSON.parse(r.stdout) as unknown;
  };
  const health = (shell: string) => {
    answer(shell);
    return python(`${loader(TOOLS.health)}
r = m.check_integrity(m.Context(conf={"tools_dir": ${JSON.stringify(dir)}}, state={}, now=0, webhook=False))
print(json.dumps([r.status, r.summary, r.todo]))`);
  };
  const verify = (shell: string) => {
    answer(shell);
    return python(`${loader(TOOLS.verify)}
m.check_integrity(${JSON.stringify(stub)})
print(json.dumps(m.results))`);
  };

  it("keel-health: ok is ok, failed degraded (what the summary says), skipped unknown (pulumi up), anything else unknown", () => {
    expect(health("printf 'ok\\tchecked\\n'")).toEqual(["ok", "checked", ""]);
    expect(health("printf 'failed\\t1 change\\n'")).toEqual(["degraded", "1 change", 'what the summary says; for changes: scripts/runbook/integrity.sh show, and docs/INTEGRITY.md "A change nobody explains"']);
    expect(health("printf 'skipped\\tno conf\\n'")).toEqual(["unknown", "no conf", "pulumi up"]);
    expect(health("echo passed")).toEqual(["unknown", "keel-integrity verdict exited 0 without a verdict: passed", ""]);
    expect(health("printf 'ok\\tfine\\n'; echo broken >&2; exit 3")).toEqual(["unknown", "keel-integrity verdict exited 3 without a verdict: ok\tfine\nbroken", ""]);
  });

  it("keel verify: its STATUS and EVIDENCE as they are, failed when it gives none", () => {
    expect(verify("printf 'ok\\tchecked\\n'")).toEqual([["ok", "integrity", "checked"]]);
    expect(verify("printf 'failed\\t1 change\\n'")).toEqual([["failed", "integrity", "1 change"]]);
    expect(verify("printf 'skipped\\tno conf\\n'")).toEqual([["skipped", "integrity", "no conf"]]);
    expect(verify("echo passed")).toEqual([["failed", "integrity", `${stub} verdict exited 0 without a verdict: passed`]]);
    expect(verify("echo broken >&2; exit 3")).toEqual([["failed", "integrity", `${stub} verdict exited 3 without a verdict: broken`]]);
  });
});

describe("keel-integrity.service and .timer, checked by systemd-analyze", () => {
  const run = (args: string[]) => {
    const r = spawnSync("systemd-analyze", args, { encoding: "utf8" });
    return { code: r.status, out: r.stdout + r.stderr };
  };

  it("verify without a warning, the timer with its service and keel-integrity installed", () => {
    const root = tempDir("keel-integrity-units-");
    cpSync("/usr/lib/systemd/system", join(root, "usr/lib/systemd/system"), { recursive: true });
    mkdirSync(join(root, "etc/systemd/system"), { recursive: true });
    for (const [name, content] of [[INTEGRITY_SERVICE, renderIntegrityService()], [INTEGRITY_TIMER, renderIntegrityTimer()]]) writeFileSync(join(root, "etc/systemd/system", name), content);
    mkdirSync(dirname(join(root, toolPath("integrity"))), { recursive: true });
    writeFileSync(join(root, toolPath("integrity")), "#!/bin/sh\n", { mode: 0o755 });
    expect(run(["verify", `--root=${root}`, INTEGRITY_TIMER, INTEGRITY_SERVICE])).toEqual({ code: 0, out: "" });
  });

  it(`rate the service's exposure at most ${MAX_INTEGRITY_EXPOSURE} offline: root to read every file, little else`, () => {
    const file = join(tempDir("keel-integrity-security-"), INTEGRITY_SERVICE);
    writeFileSync(file, renderIntegrityService());
    const level = exposure(run(["security", "--offline=true", file]).out);
    console.log(`systemd-analyze security --offline=true ${INTEGRITY_SERVICE}: exposure ${level}`);
    expect(level).toBeLessThanOrEqual(MAX_INTEGRITY_EXPOSURE);
    writeFileSync(file, renderIntegrityService().split("# Sandbox:")[0]);
    expect(exposure(run(["security", "--offline=true", file]).out)).toBeGreaterThan(level + 3);
  });
});
