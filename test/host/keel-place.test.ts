import { spawnSync } from "node:child_process";
import { execFileSync } from "node:child_process";
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Bundle } from "../../plan/types";
import { REPO } from "../support/stack";
import { TOOLS } from "../../plan/tools";

const PLACE = join(REPO, TOOLS.place);

/** keel-place as the host runs it: the system python3, the bundle on stdin, as root. */
function place(input: Bundle | string, manifest: string, args: string[] = []) {
  const r = spawnSync("/usr/bin/python3", [PLACE, ...args], {
    input: typeof input === "string" ? input : JSON.stringify(input),
    encoding: "utf8",
    env: { PATH: process.env.PATH, KEEL_MANIFEST: manifest },
    timeout: 60_000, // a hang (a named pipe opened blocking) fails the test instead of stalling the run
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe("keel-place (real python3, real files)", () => {
  let dir: string;
  let manifest: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "keel-place-"));
    manifest = join(dir, "state", "manifest.json");
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const file = (name: string, content: string, mode = "0640") => ({ path: join(dir, name), owner: "root", group: "root", mode, content });

  it("places files with their mode, then changes nothing on a second run", () => {
    const bundle: Bundle = { dirs: [{ path: join(dir, "etc"), owner: "root", group: "root", mode: "0750" }], files: [file("etc/a.conf", "a=1\n"), file("b.txt", "b\n", "0600")] };
    const first = place(bundle, manifest);
    expect(first.code).toBe(0);
    expect(first.stdout).toContain(`changed ${join(dir, "etc/a.conf")}`);
    expect(readFileSync(join(dir, "etc/a.conf"), "utf8")).toBe("a=1\n");
    expect(statSync(join(dir, "etc/a.conf")).mode & 0o7777).toBe(0o640);
    expect(statSync(join(dir, "b.txt")).mode & 0o7777).toBe(0o600);
    expect(statSync(join(dir, "etc")).mode & 0o7777).toBe(0o750);

    const before = statSync(join(dir, "etc/a.conf")).mtimeMs;
    const manifestBefore = statSync(manifest);
    const stateDirBefore = statSync(join(dir, "state")).mtimeMs;
    const second = place(bundle, manifest);
    expect(second.code).toBe(0);
    expect(second.stdout).toBe("keel-place: 0 changed, 2 file(s) already as planned\n");
    expect(statSync(join(dir, "etc/a.conf")).mtimeMs).toBe(before);
    // Nor is the manifest rewritten (nor its directory touched): a converged run writes nothing.
    expect(statSync(manifest)).toMatchObject({ ino: manifestBefore.ino, mtimeMs: manifestBefore.mtimeMs });
    expect(statSync(join(dir, "state")).mtimeMs).toBe(stateDirBefore);
  });

  it("makes missing parent directories 0755 (not narrowed by its own umask), and the manifest's 0700", () => {
    const r = place({ files: [file("new/sub/c.conf", "c\n", "0644")] }, manifest);
    expect(r.code, r.stderr).toBe(0);
    expect(statSync(join(dir, "new")).mode & 0o7777).toBe(0o755);
    expect(statSync(join(dir, "new", "sub")).mode & 0o7777).toBe(0o755);
    expect(statSync(join(dir, "state")).mode & 0o7777).toBe(0o700);
  });

  it("repairs a mode changed by hand", () => {
    const bundle: Bundle = { files: [file("c.conf", "c\n", "0600")] };
    place(bundle, manifest);
    chmodSync(join(dir, "c.conf"), 0o644);
    expect(place(bundle, manifest).stdout).toContain(`changed ${join(dir, "c.conf")}`);
    expect(statSync(join(dir, "c.conf")).mode & 0o7777).toBe(0o600);
  });

  it("rolls every file back when the check fails, and says so", () => {
    writeFileSync(join(dir, "old.conf"), "good\n");
    const bundle: Bundle = { files: [file("old.conf", "bad\n"), file("new.conf", "new\n")], check: ["false"] };
    const r = place(bundle, manifest);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("check 'false' failed");
    expect(r.stderr).toContain("rolled back 2 file(s); the host keeps its previous configuration");
    expect(readFileSync(join(dir, "old.conf"), "utf8")).toBe("good\n");
    expect(existsSync(join(dir, "new.conf"))).toBe(false);
  });

  it("fails cleanly, naming the command, when a check or on-change command is not installed", () => {
    const checked = place({ files: [file("c.conf", "c\n")], check: ["keel-no-such-tool", "--test"] }, manifest);
    expect(checked.code).toBe(1);
    expect(checked.stderr).toContain("check 'keel-no-such-tool --test' cannot run: No such file or directory");
    expect(checked.stderr).toContain("rolled back 1 file(s)");
    const reloaded = place({ files: [file("r.conf", "r\n")], onChange: [["keel-no-such-tool", "--load"]] }, manifest);
    expect(reloaded.code).toBe(1);
    expect(reloaded.stderr.split("\n")[0]).toBe("keel-place: on-change command 'keel-no-such-tool --load' cannot run: No such file or directory");
  });

  it("runs a failed on-change command again on every next run, though no file changes, until it passes", () => {
    const runs = join(dir, "runs");
    const ok = join(dir, "reload-works");
    const bundle: Bundle = { files: [file("audit.rules", "-e 1\n")], onChange: [["sh", "-c", `echo run >> ${runs}; test -e ${ok}`]] };
    const first = place(bundle, manifest);
    expect(first.code).toBe(1);
    expect(first.stderr).toContain("keel-place: the files are placed; their on-change commands run again on the next run (pulumi up) until they pass.");
    expect(readFileSync(join(dir, "audit.rules"), "utf8")).toBe("-e 1\n");

    const second = place(bundle, manifest);
    expect(second.code).toBe(1);
    expect(second.stdout).toBe("keel-place: running the on-change commands an earlier run left failed\n");

    writeFileSync(ok, "");
    const third = place(bundle, manifest);
    expect(third).toMatchObject({ code: 0, stdout: "keel-place: running the on-change commands an earlier run left failed\nkeel-place: 0 changed, 1 file(s) already as planned\n" });
    // Paid: the next run is a converged one again and runs nothing.
    expect(place(bundle, manifest).stdout).toBe("keel-place: 0 changed, 1 file(s) already as planned\n");
    expect(readFileSync(runs, "utf8")).toBe("run\nrun\nrun\n");
    // Another bundle (other files) owes nothing.
    const other: Bundle = { files: [file("other.conf", "o\n")], onChange: [["sh", "-c", `echo other >> ${runs}`]] };
    place(other, manifest);
    expect(place(other, manifest).stdout).toBe("keel-place: 0 changed, 1 file(s) already as planned\n");
    expect(readFileSync(runs, "utf8")).toBe("run\nrun\nrun\nother\n");
  });

  it("runs onChange commands only when something changed", () => {
    const marker = join(dir, "reloaded");
    const bundle: Bundle = { files: [file("d.conf", "d\n")], onChange: [["sh", "-c", `echo x >> ${marker}`]] };
    place(bundle, manifest);
    place(bundle, manifest);
    expect(readFileSync(marker, "utf8")).toBe("x\n");
  });

  it("never prints a file's content (a bundle may carry a secret)", () => {
    const r = place({ files: [file("env", 'API_KEY="canary-never-printed"\n', "0600")] }, manifest);
    expect(r.code).toBe(0);
    expect(r.stdout + r.stderr).not.toContain("canary-never-printed");
    expect(readFileSync(manifest, "utf8")).not.toContain("canary-never-printed");
    expect(statSync(manifest).mode & 0o777).toBe(0o600);
  });

  it("reports drift: a file edited or removed by hand since it was placed", () => {
    place({ files: [file("e.conf", "e\n"), file("f.conf", "f\n")] }, manifest);
    expect(place("", manifest, ["--drift"]).code).toBe(0);
    writeFileSync(join(dir, "e.conf"), "edited by hand\n");
    rmSync(join(dir, "f.conf"));
    const r = place("", manifest, ["--drift"]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe(`changed ${join(dir, "e.conf")} (content)\nmissing ${join(dir, "f.conf")}\n`);
  });

  it("reports drift: a file handed to another owner or group, its content and mode intact", () => {
    place({ files: [file("o.conf", "o\n"), file("p.conf", "p\n")] }, manifest);
    chownSync(join(dir, "o.conf"), 65534, 0);
    chownSync(join(dir, "p.conf"), 0, 65534);
    const r = place("", manifest, ["--drift"]);
    expect(r.code).toBe(1);
    const nobody = spawnSync("id", ["-nu", "65534"], { encoding: "utf8" }).stdout.trim();
    const nogroup = spawnSync("getent", ["group", "65534"], { encoding: "utf8" }).stdout.split(":")[0];
    expect(r.stdout).toBe(`changed ${join(dir, "o.conf")} (owner ${nobody}:root, placed root:root)\nchanged ${join(dir, "p.conf")} (owner root:${nogroup}, placed root:root)\n`);
  });

  it("refuses a bad bundle with exit 2 and changes nothing", () => {
    expect(place("not json", manifest)).toMatchObject({ code: 2, stderr: expect.stringContaining("stdin is not a JSON bundle") });
    const relative = place({ files: [{ path: "relative/x", owner: "root", group: "root", mode: "0644", content: "" }] }, manifest);
    expect(relative).toMatchObject({ code: 2, stderr: expect.stringContaining("is not a clean absolute path") });
    const badMode = place({ files: [file("g", "g", "644")] }, manifest);
    expect(badMode).toMatchObject({ code: 2, stderr: expect.stringContaining("is not an octal mode") });
    const noUser = place({ files: [file("ok", "ok"), { ...file("h", "h"), owner: "no-such-user-keel" }] }, manifest);
    expect(noUser).toMatchObject({ code: 2, stderr: expect.stringContaining("owner 'no-such-user-keel' or group 'root' does not exist") });
    for (const name of ["g", "h", "ok"]) expect(existsSync(join(dir, name)), name).toBe(false);
  });

  // Issue 11: a directory keel places into may belong to another user (the engine's backup tree,
  // the deploy user's home). Standing in for a compromised engine, `nobody` owns such a directory
  // and plants links in it; root's keel-place must not chmod, chown or write where they point.
  describe("under a directory another user owns", () => {
    const nobody = () => Number(execFileSync("id", ["-u", "nobody"], { encoding: "utf8" }));
    let owned: string;
    let victim: string;
    beforeEach(() => {
      chmodSync(dir, 0o755);
      owned = join(dir, "backups");
      mkdirSync(owned, { mode: 0o755 });
      chownSync(owned, nobody(), 0);
      // Stands in for /usr: root's, 0755, holding a file of root's.
      victim = join(dir, "usr");
      mkdirSync(victim, { mode: 0o755 });
      writeFileSync(join(victim, "keep"), "root's\n", { mode: 0o644 });
    });
    const asNobody = (command: string) => execFileSync("setpriv", ["--reuid=nobody", "--regid=nogroup", "--clear-groups", "sh", "-c", command]);

    it("refuses a link planted where a directory is planned: the place it points to keeps its mode and owner", () => {
      asNobody(`ln -s ${victim} ${join(owned, "sessions")}`);
      const r = place({ dirs: [{ path: join(owned, "sessions"), owner: "root", group: "root", mode: "0700" }], files: [] }, manifest);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`${join(owned, "sessions")} is a symbolic link or not a directory; keel-place follows no link`);
      expect(statSync(victim).mode & 0o7777).toBe(0o755);
      expect(statSync(victim).uid).toBe(0);
    });

    it("refuses a link on the way to a planned file, and writes nothing where it points", () => {
      asNobody(`ln -s ${victim} ${join(owned, "sub")}`);
      const r = place({ files: [{ path: join(owned, "sub", "keep"), owner: "root", group: "root", mode: "0600", content: "planted\n" }] }, manifest);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`${join(owned, "sub")} is a symbolic link or not a directory`);
      expect(readFileSync(join(victim, "keep"), "utf8")).toBe("root's\n");
      expect(statSync(join(victim, "keep")).mode & 0o7777).toBe(0o644);
    });

    it("refuses a link or a named pipe where a file is planned (no write through it, no hang)", () => {
      asNobody(`ln -s ${join(victim, "keep")} ${join(owned, "status")} && mkfifo ${join(owned, "fifo")}`);
      for (const name of ["status", "fifo"]) {
        const r = place({ files: [{ path: join(owned, name), owner: "root", group: "root", mode: "0600", content: "x\n" }] }, manifest);
        expect(r, name).toMatchObject({ code: 2, stderr: expect.stringContaining(`${join(owned, name)} exists and is not a regular file`) });
      }
      expect(readFileSync(join(victim, "keep"), "utf8")).toBe("root's\n");
    });

    it("still sets mode and owner on a real directory there, and places files in it", () => {
      asNobody(`mkdir ${join(owned, "sessions")}`);
      const r = place({ dirs: [{ path: join(owned, "sessions"), owner: "root", group: "root", mode: "0700" }], files: [{ path: join(owned, "sessions", "a"), owner: "root", group: "root", mode: "0600", content: "a\n" }] }, manifest);
      expect(r.code, r.stderr).toBe(0);
      expect(statSync(join(owned, "sessions"))).toMatchObject({ uid: 0, mode: expect.any(Number) });
      expect(statSync(join(owned, "sessions")).mode & 0o7777).toBe(0o700);
      expect(readFileSync(join(owned, "sessions", "a"), "utf8")).toBe("a\n");
    });

    // The deploy user's start-up files: keel bounds their mode without writing them. The user owns
    // the directory and may plant anything there; root narrows only that user's own regular file.
    describe("modes: bounding the permissions of files keel does not write", () => {
      const bound = (name: string, owner = "nobody") => ({ path: join(owned, name), owner, mode: "0640" });

      it("clears the bits the bound does not allow, keeps the others, skips a missing file, and changes nothing the second time", () => {
        asNobody(`umask 022 && echo a > ${join(owned, ".bashrc")} && echo b > ${join(owned, ".profile")} && chmod 0600 ${join(owned, ".profile")} && echo c > ${join(owned, "run")} && chmod 0755 ${join(owned, "run")}`);
        const bundle: Bundle = { modes: [bound(".bashrc"), bound(".profile"), bound("run"), bound(".zshrc")], files: [] };
        const first = place(bundle, manifest);
        expect(first.code, first.stderr).toBe(0);
        expect(first.stdout).toContain(`changed mode ${join(owned, ".bashrc")} 0644 -> 0640`);
        expect(first.stdout).toContain(`changed mode ${join(owned, "run")} 0755 -> 0640`);
        expect(first.stdout).not.toContain(".profile");
        expect(statSync(join(owned, ".bashrc")).mode & 0o7777).toBe(0o640);
        expect(statSync(join(owned, ".profile")).mode & 0o7777).toBe(0o600);
        expect(statSync(join(owned, ".bashrc")).uid).toBe(nobody());
        expect(existsSync(join(owned, ".zshrc"))).toBe(false);
        expect(place(bundle, manifest).stdout).toBe("keel-place: 0 changed, 0 file(s) already as planned\n");
      });

      it("leaves a link, a named pipe, a file of another user and a file with a second name as they are, and says so", () => {
        asNobody(`ln -s ${join(victim, "keep")} ${join(owned, ".bashrc")} && mkfifo ${join(owned, ".profile")} && echo x > ${join(owned, "mine")} && ln ${join(owned, "mine")} ${join(owned, ".bash_login")}`);
        writeFileSync(join(owned, ".zshrc"), "root's\n", { mode: 0o644 });
        const r = place({ modes: [bound(".bashrc"), bound(".profile"), bound(".zshrc"), bound(".bash_login")], files: [] }, manifest);
        expect(r.code, r.stderr).toBe(0);
        expect(r.stderr).toContain(`${join(owned, ".bashrc")}: mode left as it is (a symbolic link)`);
        expect(r.stderr).toContain(`${join(owned, ".profile")}: mode left as it is (not a regular file)`);
        expect(r.stderr).toContain(`${join(owned, ".zshrc")}: mode left as it is (owned by uid 0, not nobody)`);
        expect(r.stderr).toContain(`${join(owned, ".bash_login")}: mode left as it is (2 names (hard links)`);
        expect(statSync(join(victim, "keep")).mode & 0o7777).toBe(0o644);
        expect(statSync(join(owned, ".zshrc")).mode & 0o7777).toBe(0o644);
        expect(r.stdout).toBe("keel-place: 0 changed, 0 file(s) already as planned\n");
      });

      it("refuses a bad bound with exit 2", () => {
        expect(place({ modes: [{ path: join(owned, ".bashrc"), owner: "nobody", mode: "640" }], files: [] }, manifest)).toMatchObject({ code: 2, stderr: expect.stringContaining("mode '640' is not an octal mode") });
        expect(place({ modes: [{ path: join(owned, ".bashrc"), owner: "no-such-user-keel", mode: "0640" }], files: [] }, manifest)).toMatchObject({ code: 2, stderr: expect.stringContaining("owner 'no-such-user-keel' does not exist") });
        // Only true locks passwords; anything else is a bad bundle, refused before any change.
        expect(place(JSON.stringify({ lockPasswords: 1, files: [] }), manifest)).toMatchObject({ code: 2, stderr: expect.stringContaining("lockPasswords must be true or false, not 1") });
      });
    });

    // The backup tree changes hands: from the engine's user (here `nobody`, who may be compromised)
    // to <app>-backup (here `daemon`), group <app> (here `nogroup`), 2750. Root hands over only the
    // engine's own single-link regular files, on their descriptors, and follows nothing planted.
    describe("adoptFilesFrom: handing the directory's files over to its new owner", () => {
      const uidOf = (user: string) => Number(execFileSync("id", ["-u", user], { encoding: "utf8" }));
      const gidOf = (group: string) => Number(execFileSync("getent", ["group", group], { encoding: "utf8" }).split(":")[2]);
      const takeOver = (path: string) => ({ path, owner: "daemon", group: "nogroup", mode: "2750", adoptFilesFrom: { user: "nobody", fileMode: "0640" } });
      let engineDir: string;
      beforeEach(() => {
        // The engine's directory as it was: its own, 0700, its files 0600; and its live DB elsewhere.
        chownSync(owned, nobody(), gidOf("nogroup"));
        chmodSync(owned, 0o700);
        engineDir = join(dir, "lib");
        mkdirSync(engineDir, { mode: 0o700 });
        chownSync(engineDir, nobody(), gidOf("nogroup"));
        asNobody(`umask 077 && printf A > ${join(owned, "a.db")} && printf BB > ${join(owned, "b.db")} && printf live > ${join(engineDir, "live.db")}`);
      });
      const expectEngines = (path: string, mode = 0o600) => expect(lstatSync(path), path).toMatchObject({ uid: nobody(), gid: gidOf("nogroup"), mode: 0o100000 | mode });
      const expectAdopted = (path: string) => expect(statSync(path), path).toMatchObject({ uid: uidOf("daemon"), gid: gidOf("nogroup"), mode: 0o100640 });

      it("gives the directory and each of the engine's files the new owner, group and mode, contents unchanged; a second run changes nothing", () => {
        asNobody(`umask 077 && mkdir ${join(owned, "sessions")} && printf S > ${join(owned, "sessions", "s.db")}`);
        const bundle: Bundle = { dirs: [takeOver(owned), takeOver(join(owned, "sessions"))], files: [] };
        const first = place(bundle, manifest);
        expect(first.code, first.stderr).toBe(0);
        expect(first.stderr).toBe("");
        expect(first.stdout).toBe(
          `changed dir ${owned}\nchanged dir ${owned}: 2 file(s) handed to daemon\n` +
            `changed dir ${join(owned, "sessions")}\nchanged dir ${join(owned, "sessions")}: 1 file(s) handed to daemon\n` +
            "keel-place: 4 changed, 0 file(s) already as planned\n",
        );
        for (const d of [owned, join(owned, "sessions")]) expect(statSync(d), d).toMatchObject({ uid: uidOf("daemon"), gid: gidOf("nogroup"), mode: 0o40000 | 0o2750 });
        for (const f of ["a.db", "b.db", "sessions/s.db"]) expectAdopted(join(owned, f));
        expect(["a.db", "b.db", "sessions/s.db"].map((f) => readFileSync(join(owned, f), "utf8"))).toEqual(["A", "BB", "S"]);

        const second = place(bundle, manifest);
        expect(second).toMatchObject({ code: 0, stdout: "keel-place: 0 changed, 0 file(s) already as planned\n", stderr: "" });

        // The new owner's own files are its own: a 0600 one (its lock files are, on purpose) stays so.
        chmodSync(join(owned, "b.db"), 0o600);
        const third = place(bundle, manifest);
        expect(third.stdout).toBe("keel-place: 0 changed, 0 file(s) already as planned\n");
        expect(statSync(join(owned, "b.db")).mode & 0o7777).toBe(0o600);
      });

      it("follows no link planted there: neither a file of root's nor one of the engine's it points to changes, and says so", () => {
        asNobody(`ln -s ${join(victim, "keep")} ${join(owned, "to-root")} && ln -s ${join(engineDir, "live.db")} ${join(owned, "to-live")}`);
        const r = place({ dirs: [takeOver(owned)], files: [] }, manifest);
        expect(r.code, r.stderr).toBe(0);
        expect(statSync(join(victim, "keep"))).toMatchObject({ uid: 0, gid: 0, mode: 0o100644 });
        expectEngines(join(engineDir, "live.db"));
        for (const name of ["to-root", "to-live"]) {
          expect(lstatSync(join(owned, name)).isSymbolicLink(), name).toBe(true);
          expect(lstatSync(join(owned, name)).uid, name).toBe(nobody());
          expect(r.stderr).toContain(`keel-place: ${join(owned, name)}: left as it is (a symbolic link)\n`);
        }
        expectAdopted(join(owned, "a.db"));
      });

      it("leaves a file with a second name (a hard link to the engine's live DB): neither name changes owner", () => {
        asNobody(`ln ${join(engineDir, "live.db")} ${join(owned, "c.db")}`);
        const r = place({ dirs: [takeOver(owned)], files: [] }, manifest);
        expect(r.code, r.stderr).toBe(0);
        expectEngines(join(engineDir, "live.db"));
        expectEngines(join(owned, "c.db"));
        expect(r.stderr).toContain(`keel-place: ${join(owned, "c.db")}: left as it is (2 names (hard links)`);
        expectAdopted(join(owned, "a.db"));
      });

      it("neither hangs on a named pipe nor changes it", () => {
        asNobody(`mkfifo -m 0600 ${join(owned, "fifo")}`);
        const r = place({ dirs: [takeOver(owned)], files: [] }, manifest);
        expect(r.code, r.stderr).toBe(0);
        expect(lstatSync(join(owned, "fifo")).isFIFO()).toBe(true);
        expect(lstatSync(join(owned, "fifo"))).toMatchObject({ uid: nobody(), mode: 0o10600 });
        expect(r.stderr).toContain(`keel-place: ${join(owned, "fifo")}: left as it is (a named pipe)\n`);
        expectAdopted(join(owned, "b.db"));
      });

      it("leaves another user's file and a subdirectory (with its files) as they are", () => {
        writeFileSync(join(owned, "root.txt"), "root's\n", { mode: 0o600 });
        asNobody(`umask 077 && mkdir ${join(owned, "sessions")} && printf S > ${join(owned, "sessions", "s.db")}`);
        const r = place({ dirs: [takeOver(owned)], files: [] }, manifest);
        expect(r).toMatchObject({ code: 0, stderr: "" });
        expect(r.stdout).toBe(`changed dir ${owned}\nchanged dir ${owned}: 2 file(s) handed to daemon\nkeel-place: 2 changed, 0 file(s) already as planned\n`);
        expect(statSync(join(owned, "root.txt"))).toMatchObject({ uid: 0, gid: 0, mode: 0o100600 });
        expect(statSync(join(owned, "sessions"))).toMatchObject({ uid: nobody(), mode: 0o40700 });
        expectEngines(join(owned, "sessions", "s.db"));
      });

      it("refuses a bad fileMode or an unknown user (exit 2, naming the directory) and changes nothing", () => {
        const badMode = place({ dirs: [{ ...takeOver(owned), adoptFilesFrom: { user: "nobody", fileMode: "640" } }], files: [] }, manifest);
        expect(badMode).toMatchObject({ code: 2, stderr: expect.stringContaining(`${owned}: adoptFilesFrom fileMode '640' is not an octal mode`) });
        const noUser = place({ dirs: [{ ...takeOver(owned), adoptFilesFrom: { user: "no-such-user-keel", fileMode: "0640" } }], files: [] }, manifest);
        expect(noUser).toMatchObject({ code: 2, stderr: expect.stringContaining(`${owned}: adoptFilesFrom user 'no-such-user-keel' does not exist`) });
        expect(statSync(owned)).toMatchObject({ uid: nobody(), mode: 0o40700 });
        expectEngines(join(owned, "a.db"));
      });
    });
  });
});
