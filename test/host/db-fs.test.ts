/**
 * Seed 000 §11D, "no exceptions": every db-* script refuses a DB (or a backup/snapshot directory)
 * that is not on a local filesystem, naming the type. The non-local filesystem here is a real FUSE
 * mount (bindfs, a Debian package); NFS and SMB cannot be mounted on this machine, so their type
 * names are checked against the classifier the scripts use.
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fingerprint, makeDb, mount, removeDir, script, SCRIPTS, tempDir } from "./db-helpers";

/** Runs bash with keel-db-lib sourced. */
function lib(code: string) {
  const r = spawnSync("bash", ["-c", `set -euo pipefail; . ${join(SCRIPTS, "keel-db-lib")}; ${code}`], { encoding: "utf8", timeout: 20_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe("local filesystems only", () => {
  let dir: string;
  let fuse: string;
  let local: string;
  let unmount: () => void = () => {};

  beforeAll(() => {
    expect(spawnSync("bindfs", ["--version"]).status, "bindfs is needed for this test (apt-get install bindfs)").toBe(0);
    dir = tempDir();
    local = join(dir, "local");
    fuse = join(dir, "fuse");
    mkdirSync(local);
    mkdirSync(join(dir, "under"));
    mkdirSync(fuse);
    makeDb(join(dir, "under", "app.db"), { wal: true });
    makeDb(join(local, "app.db"), { wal: true });
    unmount = mount(["bindfs", join(dir, "under"), fuse], fuse);
  });
  afterAll(() => {
    unmount();
    removeDir(dir);
  });

  it("reads the real type of a FUSE mount, a tmpfs and the root filesystem", () => {
    expect(lib(`keel_fs_type ${fuse}`).stdout.trim()).toMatch(/^fuse/);
    expect(lib("keel_fs_type /dev/shm").stdout.trim()).toBe("tmpfs");
    expect(lib(`keel_fs_class "$(keel_fs_type ${local})"`).stdout.trim()).toBe("local");
  });

  const refusals: Array<[string, () => string[]]> = [
    ["keel-db-gate verify", () => ["gate", "verify", join(fuse, "app.db")]],
    ["keel-db-gate prepare", () => ["gate", "prepare", join(fuse, "app.db")]],
    ["keel-db-gate adopt (SRC on FUSE)", () => ["gate", "adopt", join(fuse, "app.db"), join(local, "new.db")]],
    ["keel-db-gate adopt (DEST on FUSE)", () => ["gate", "adopt", join(local, "app.db"), join(fuse, "new.db")]],
    ["keel-db-backup (DB on FUSE)", () => ["backup", join(fuse, "app.db"), join(local, "backups")]],
    ["keel-db-backup (DIR on FUSE)", () => ["backup", join(local, "app.db"), join(fuse, "backups")]],
    ["keel-db-restore (DB on FUSE)", () => ["restore", join(local, "app.db"), join(fuse, "app.db")]],
    ["keel-db-restore (BACKUP on FUSE)", () => ["restore", join(fuse, "app.db"), join(local, "other.db")]],
    ["keel-db-snapshot (DB on FUSE)", () => ["snapshot", join(fuse, "app.db"), join(local, "snap.db")]],
    ["keel-db-snapshot (OUT on FUSE)", () => ["snapshot", join(local, "app.db"), join(fuse, "snap.db")]],
  ];

  it.each(refusals)("%s exits 4, names the filesystem type and changes nothing", (_name, args) => {
    const [name, ...rest] = args();
    const before = [fingerprint(join(fuse, "app.db")), fingerprint(join(local, "app.db"))];
    const r = script(name as "gate", rest);
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/refused: .* is on a 'fuse[^']*' filesystem \(network, shared or FUSE\); seed 000 §11D/);
    expect([fingerprint(join(fuse, "app.db")), fingerprint(join(local, "app.db"))]).toEqual(before);
    for (const f of ["new.db", "snap.db", "backups", "other.db"]) expect(spawnSync("test", ["-e", join(local, f)]).status).not.toBe(0);
  });

  it("keel-db-backup records a refused DB in the status file of an existing backup directory", () => {
    const backups = join(dir, "status-check");
    mkdirSync(backups);
    const r = script("backup", [join(fuse, "app.db"), backups]);
    expect(r.code).toBe(4);
    const status = JSON.parse(readFileSync(join(backups, "app.status.json"), "utf8"));
    expect(status).toMatchObject({ result: "failed", exit_code: 4, file: null });
    expect(status.reason).toMatch(/is on a 'fuse[^']*' filesystem/);
  });

  it("classifies network and shared filesystem types as refused, local disk types as local, unknown ones as unknown", () => {
    const classes = (types: string[]) => lib(`for t in ${types.join(" ")}; do keel_fs_class "$t"; done`).stdout.trim().split("\n");
    const network = ["nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "v9fs", "virtiofs", "fuse", "fuse.sshfs", "fuse.bindfs", "fuseblk", "sshfs", "ceph", "glusterfs", "lustre", "afs", "ocfs2", "gfs2", "davfs"];
    const local = ["ext4", "ext2/ext3", "xfs", "btrfs", "zfs", "f2fs", "tmpfs", "overlay", "apfs"];
    expect(classes(network)).toEqual(network.map(() => "network"));
    expect(classes(local)).toEqual(local.map(() => "local"));
    expect(classes(["weirdfs"])).toEqual(["unknown"]);
  });

  it("refuses an unknown filesystem type too, naming it", () => {
    const r = lib(`keel_fs_type() { echo weirdfs; }; keel_require_local ${join(local, "app.db")}`);
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/filesystem of type 'weirdfs', which is not known to be local/);
  });
});
