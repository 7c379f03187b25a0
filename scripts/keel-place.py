#!/usr/bin/env python3
"""keel-place: converge files on the host from a JSON bundle read on stdin.

Usage: keel-place < bundle.json
       keel-place --drift            # report files keel placed that were changed or removed since

The bundle (plan/types.ts `Bundle`) lists system users, directories and files, each with owner,
group and mode; an optional `check` argv that must pass after placing (otherwise every file is put
back as it was and the step fails); and `onChange` argvs run in order only when something changed.
When an onChange command fails, the files stay placed and the bundle is marked pending (a file
under /var/lib/keel/pending/, named by the bundle's file paths): the next run runs its onChange
commands again, though no file changes then, until they pass.

Files are written atomically (temp file in the same directory, fsync, rename) with umask 077, so a
reader sees the old or the new file, never half of one. Contents are never printed: a bundle may
carry a secret. Every placed file is recorded with its sha256 in /var/lib/keel/manifest.json so the
health report can tell when someone edited the box by hand.

Exit codes: 0 converged (prints what changed), 1 check or onChange command failed (files rolled
back when the check failed, onChange left pending when it failed), 2 bad bundle or usage.
"""
import grp
import hashlib
import json
import os
import pwd
import re
import subprocess
import sys
import tempfile

MANIFEST = os.environ.get("KEEL_MANIFEST", "/var/lib/keel/manifest.json")
MODE = re.compile(r"^0[0-7]{3}$")
NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


def fail(code, message):
    print(f"keel-place: {message}", file=sys.stderr)
    sys.exit(code)


def check_path(path, what):
    if not isinstance(path, str) or not path.startswith("/") or "/../" in path + "/" or "\0" in path:
        fail(2, f"{what} path {path!r} is not a clean absolute path; fix the host plan")


def ids(entry):
    try:
        return pwd.getpwnam(entry["owner"]).pw_uid, grp.getgrnam(entry["group"]).gr_gid
    except KeyError:
        fail(2, f"{entry['path']}: owner {entry['owner']!r} or group {entry['group']!r} does not exist on this host; "
                "the user step must run first")


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_user(user):
    if not NAME.match(user.get("name", "")):
        fail(2, f"bad system user name {user.get('name')!r}")
    try:
        pwd.getpwnam(user["name"])
        return False
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", user["home"],
                        "--shell", "/usr/sbin/nologin", user["name"]], check=True)
        return True


def ensure_dir(d):
    check_path(d["path"], "directory")
    if not MODE.match(d["mode"]):
        fail(2, f"{d['path']}: mode {d['mode']!r} is not an octal mode like 0750")
    uid, gid = ids(d)
    mode = int(d["mode"], 8)
    changed = False
    if not os.path.isdir(d["path"]):
        os.makedirs(d["path"], mode=0o755, exist_ok=True)
        changed = True
    st = os.lstat(d["path"])
    if (st.st_uid, st.st_gid) != (uid, gid):
        os.chown(d["path"], uid, gid)
        changed = True
    if st.st_mode & 0o7777 != mode:
        os.chmod(d["path"], mode)
        changed = True
    return changed


def current(path):
    """(bytes, mode, uid, gid) of the file now at path, or None."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not os.path.isfile(path) or os.path.islink(path):
        fail(2, f"{path} exists and is not a regular file; move it away by hand and re-run")
    with open(path, "rb") as f:
        return f.read(), st.st_mode & 0o7777, st.st_uid, st.st_gid


def write_atomic(path, data, mode, uid, gid):
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".keel-place.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchown(f.fileno(), uid, gid)
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def load_manifest():
    try:
        with open(MANIFEST) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def save_manifest(manifest):
    os.makedirs(os.path.dirname(MANIFEST), mode=0o755, exist_ok=True)
    data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    try:
        with open(MANIFEST, "rb") as f:
            if f.read() == data:
                return  # already recorded: a converged run changes no file, not even this one
    except FileNotFoundError:
        pass
    write_atomic(MANIFEST, data, 0o600, 0, 0)


def drift():
    """Print files from the manifest whose content, mode or owner no longer match. Exit 1 if any."""
    drifted = 0
    for path, want in sorted(load_manifest().items()):
        now = current(path) if os.path.lexists(path) else None
        if now is None:
            print(f"missing {path}")
            drifted += 1
            continue
        data, mode, uid, gid = now
        if hashlib.sha256(data).hexdigest() != want["sha256"]:
            print(f"changed {path} (content)")
            drifted += 1
        elif f"{mode:04o}" != want["mode"]:
            print(f"changed {path} (mode {mode:04o}, placed {want['mode']})")
            drifted += 1
    return 1 if drifted else 0


def pending_marker(files):
    """The file that marks this bundle's onChange commands as owed: keyed by its sorted file paths."""
    key = hashlib.sha256("\n".join(sorted(f["path"] for f in files)).encode()).hexdigest()
    return os.path.join(os.path.dirname(MANIFEST), "pending", key)


def run(argv, what):
    try:
        result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as err:  # not installed, not executable
        print(f"keel-place: {what} {' '.join(argv)!r} cannot run: {err.strerror}", file=sys.stderr)
        return False
    if result.returncode != 0:
        tail = "\n".join(result.stdout.strip().splitlines()[-20:])
        print(f"keel-place: {what} {' '.join(argv)!r} failed (exit {result.returncode}):\n{tail}", file=sys.stderr)
    return result.returncode == 0


def main(args):
    if args == ["--drift"]:
        return drift()
    if args:
        fail(2, "usage: keel-place < bundle.json | keel-place --drift")
    os.umask(0o077)
    try:
        bundle = json.load(sys.stdin)
    except json.JSONDecodeError as e:
        fail(2, f"stdin is not a JSON bundle ({e.msg} at line {e.lineno}); it must come from keel's host plan")
    files = bundle.get("files", [])
    for f in files:
        check_path(f.get("path"), "file")
        if not MODE.match(str(f.get("mode"))):
            fail(2, f"{f['path']}: mode {f.get('mode')!r} is not an octal mode like 0644")
        if not isinstance(f.get("content"), str):
            fail(2, f"{f['path']}: content must be a string")

    changed = [f"user {u['name']}" for u in bundle.get("users", []) if ensure_user(u)]
    changed += [f"dir {d['path']}" for d in bundle.get("dirs", []) if ensure_dir(d)]
    # Resolve every owner before writing anything: a bad bundle changes no file.
    planned = [(f, f["content"].encode(), int(f["mode"], 8), *ids(f)) for f in files]
    before = {}
    for f, data, mode, uid, gid in planned:
        old = current(f["path"])
        if old == (data, mode, uid, gid):
            continue
        before[f["path"]] = old
        write_atomic(f["path"], data, mode, uid, gid)
        changed.append(f["path"])

    if before and bundle.get("check") and not run(bundle["check"], "check"):
        for path, old in before.items():
            if old is None:
                os.unlink(path)
            else:
                write_atomic(path, old[0], old[1], old[2], old[3])
        fail(1, f"rolled back {len(before)} file(s); the host keeps its previous configuration. "
                "Fix the config that produced them and run pulumi up again")

    manifest = load_manifest()
    for f in files:
        manifest[f["path"]] = {"sha256": hashlib.sha256(f["content"].encode()).hexdigest(), "mode": f["mode"],
                               "owner": f["owner"], "group": f["group"]}
    save_manifest(manifest)

    on_change = bundle.get("onChange", [])
    pending = pending_marker(files)
    owed = bool(on_change) and os.path.exists(pending)
    if owed and not changed:
        print("keel-place: running the on-change commands an earlier run left failed")
    if changed or owed:
        for argv in on_change:
            if not run(argv, "on-change command"):
                if not owed:
                    os.makedirs(os.path.dirname(pending), mode=0o700, exist_ok=True)
                    write_atomic(pending, b"", 0o600, 0, 0)
                fail(1, "the files are placed; their on-change commands run again on the next run "
                        "(pulumi up) until they pass. Fix what the command says, then run pulumi up again")
        if owed:
            os.unlink(pending)
            fsync_dir(os.path.dirname(pending))
    for item in changed:
        print(f"changed {item}")
    print(f"keel-place: {len(changed)} changed, {len(files) - len(before)} file(s) already as planned")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
