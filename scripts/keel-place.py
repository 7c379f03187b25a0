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
reader sees the old or the new file, never half of one. No symbolic link is ever followed: every
path is walked from / one component at a time with O_NOFOLLOW, and modes and owners are set on the
open file descriptor (fchmod/fchown). Some directories keel places into belong to another user (the
engine's /var/backups/<app>, the deploy user's home); a link planted there must not make root
chmod, chown or write the place it points to. A link anywhere on a planned path is refused
(exit 2). Contents are never printed: a bundle may carry a secret. Every placed file is recorded
with its sha256 in /var/lib/keel/manifest.json so the health report can tell when someone edited
the box by hand.

A directory may carry `adoptFilesFrom` {user, fileMode}: a directory keel takes from one user for
another (the backup tree, from the engine's user to <app>-backup). Once the directory itself has
its new owner, group and mode, each regular file directly in it (not deeper) that belongs to that
user becomes the directory's owner and group with fileMode (the new owner's own files are left as
they are). Each is opened without following a link or blocking and must still be
a single-link regular file of that user on its descriptor, which alone is fchown'd and fchmod'd:
a link, a named pipe, a file with a second name (a hard link may be the engine's live DB) is left
as it is and named on stderr; another user's file and a subdirectory (its own entry) are left too.

Exit codes: 0 converged (prints what changed), 1 check or onChange command failed (files rolled
back when the check failed, onChange left pending when it failed), 2 bad bundle or usage.
"""
import errno
import grp
import hashlib
import json
import os
import pwd
import re
import secrets
import stat
import subprocess
import sys

MANIFEST = os.environ.get("KEEL_MANIFEST", "/var/lib/keel/manifest.json")
MODE = re.compile(r"^0[0-7]{3}$")
# A directory may also carry setgid (2750: new files get its group) or the sticky bit.
DIR_MODE = re.compile(r"^0?[0-7]{4}$")
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


def open_dir(path, create=False, mode=0o755):
    """An O_DIRECTORY descriptor of path, walked from / without following any link. With create,
    missing directories are made (root's, with mode). Fails (exit 2) on a link or a non-directory."""
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    walked = ""
    try:
        for name in [part for part in path.split("/") if part]:
            walked += "/" + name
            try:
                try:
                    child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    try:
                        os.mkdir(name, mode, dir_fd=fd)
                    except FileExistsError:
                        pass  # made meanwhile: the open below still refuses a link
                    child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as err:
                if err.errno in (errno.ELOOP, errno.ENOTDIR):
                    fail(2, f"{walked} is a symbolic link or not a directory; keel-place follows no link. "
                            f"Move it away by hand (ls -la {os.path.dirname(walked) or '/'}) and re-run")
                raise
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def fsync_dir(path):
    fd = open_dir(path)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path, data, mode, uid, gid):
    dfd = open_dir(os.path.dirname(path), create=True)
    try:
        name = os.path.basename(path)
        tmp = f".keel-place.{secrets.token_hex(8)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dfd)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fchown(f.fileno(), uid, gid)
                os.fchmod(f.fileno(), mode)
                os.fsync(f.fileno())
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dfd)
            except FileNotFoundError:
                pass
            raise
        os.fsync(dfd)
    finally:
        os.close(dfd)


def unlink(path):
    dfd = open_dir(os.path.dirname(path))
    try:
        os.unlink(os.path.basename(path), dir_fd=dfd)
        os.fsync(dfd)
    finally:
        os.close(dfd)


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
    """Converge one directory (and, with adoptFilesFrom, the files in it). Returns what changed, as
    items for main's "changed ..." lines: none when it was already as planned."""
    check_path(d["path"], "directory")
    if not isinstance(d.get("mode"), str) or not DIR_MODE.match(d["mode"]):
        fail(2, f"{d['path']}: mode {d.get('mode')!r} is not an octal mode like 0750 or 2750")
    adopt = d.get("adoptFilesFrom")
    if adopt is not None:
        if not isinstance(adopt, dict) or not isinstance(adopt.get("user"), str):
            fail(2, f"{d['path']}: adoptFilesFrom must be {{\"user\": ..., \"fileMode\": ...}}")
        if not isinstance(adopt.get("fileMode"), str) or not MODE.match(adopt["fileMode"]):
            fail(2, f"{d['path']}: adoptFilesFrom fileMode {adopt.get('fileMode')!r} is not an octal mode like 0640")
        try:
            from_uid = pwd.getpwnam(adopt["user"]).pw_uid
        except KeyError:
            fail(2, f"{d['path']}: adoptFilesFrom user {adopt['user']!r} does not exist on this host; "
                    "the user step must run first")
        if from_uid == 0:
            fail(2, f"{d['path']}: adoptFilesFrom user {adopt['user']!r} is root; keel hands over no file of root's")
    uid, gid = ids(d)
    mode = int(d["mode"], 8)
    try:
        fd = open_dir(d["path"])
        changed = False
    except FileNotFoundError:
        fd = open_dir(d["path"], create=True)
        changed = True
    try:
        st = os.fstat(fd)
        if (st.st_uid, st.st_gid) != (uid, gid):
            os.fchown(fd, uid, gid)
            changed = True
        if st.st_mode & 0o7777 != mode:
            os.fchmod(fd, mode)
            changed = True
        items = [f"dir {d['path']}"] if changed else []
        if adopt is not None:
            adopted = adopt_files(fd, d["path"], from_uid, uid, gid, int(adopt["fileMode"], 8))
            if adopted:
                items.append(f"dir {d['path']}: {adopted} file(s) handed to {d['owner']}")
    finally:
        os.close(fd)
    return items


def adopt_files(dfd, path, from_uid, uid, gid, mode):
    """Give the regular files directly in the directory open as dfd that belong to from_uid owner
    uid, group gid and mode, on their own descriptors. The directory's previous owner may still be
    hostile: nothing is followed, opened blocking or touched that is not, on its descriptor, a
    single-link regular file of that user. The new owner's own files are left as they are (its lock
    files are 0600 on purpose: a reader who could open one could hold the lock). Returns the number
    of files handed over."""
    adopted = 0

    def leave(name, why):
        print(f"keel-place: {path.rstrip('/')}/{name}: left as it is ({why})", file=sys.stderr)

    def kind(st):
        if stat.S_ISLNK(st.st_mode):
            return "a symbolic link"
        if stat.S_ISFIFO(st.st_mode):
            return "a named pipe"
        if stat.S_ISSOCK(st.st_mode):
            return "a socket"
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            return "a device"
        return "not a regular file"

    def wanted(st):
        """Whether keel acts on this file, or else why not (None: silently not ours)."""
        if st.st_uid != from_uid or from_uid == uid:
            return None  # another user's, or already the new owner's: not handed over
        if st.st_nlink != 1:
            return f"{st.st_nlink} names (hard links): it may be another file too"
        return True

    for name in sorted(os.listdir(dfd)):
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            leave(name, "gone meanwhile")
            continue
        if stat.S_ISDIR(st.st_mode):
            continue  # a subdirectory has its own entry in the plan, if any
        if not stat.S_ISREG(st.st_mode):
            leave(name, kind(st))  # never opened: no FIFO, device or socket is touched
            continue
        verdict = wanted(st)
        if verdict is not True:
            if verdict:
                leave(name, verdict)
            continue
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=dfd)
        except OSError as err:
            why = {errno.ELOOP: "a symbolic link", errno.ENOENT: "gone meanwhile"}.get(err.errno, err.strerror)
            leave(name, why)
            continue
        try:
            st = os.fstat(fd)  # what was opened, not what the name meant a moment ago
            verdict = wanted(st) if stat.S_ISREG(st.st_mode) else kind(st)
            if verdict is not True:
                if verdict:
                    leave(name, f"{verdict}; it changed while keel-place looked at it")
                continue
            if (st.st_uid, st.st_gid) != (uid, gid):
                os.fchown(fd, uid, gid)  # the kernel clears setuid and setgid here
            if st.st_mode & 0o7777 != mode:
                os.fchmod(fd, mode)
            adopted += 1
        finally:
            os.close(fd)
    return adopted


def current(path):
    """(bytes, mode, uid, gid) of the file now at path, or None. Opened without following a link
    and without blocking (a named pipe there is refused, not waited on)."""
    try:
        dfd = open_dir(os.path.dirname(path))
    except FileNotFoundError:
        return None
    try:
        fd = os.open(os.path.basename(path), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno == errno.ELOOP:
            fail(2, f"{path} exists and is not a regular file; move it away by hand and re-run")
        raise
    finally:
        os.close(dfd)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            fail(2, f"{path} exists and is not a regular file; move it away by hand and re-run")
        return f.read(), st.st_mode & 0o7777, st.st_uid, st.st_gid


def load_manifest():
    data = current(MANIFEST)
    return json.loads(data[0]) if data else {}


def save_manifest(manifest):
    data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    now = current(MANIFEST)
    if now and now[0] == data:
        return  # already recorded: a converged run changes no file, not even this one
    write_atomic(MANIFEST, data, 0o600, 0, 0)


def drift():
    """Print files from the manifest whose content, mode or owner no longer match. Exit 1 if any."""
    drifted = 0
    for path, want in sorted(load_manifest().items()):
        now = current(path)
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
    for d in bundle.get("dirs", []):
        changed += ensure_dir(d)
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
                unlink(path)
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
    owed = bool(on_change) and current(pending) is not None
    if owed and not changed:
        print("keel-place: running the on-change commands an earlier run left failed")
    if changed or owed:
        for argv in on_change:
            if not run(argv, "on-change command"):
                if not owed:
                    os.close(open_dir(os.path.dirname(pending), create=True, mode=0o700))
                    write_atomic(pending, b"", 0o600, 0, 0)
                fail(1, "the files are placed; their on-change commands run again on the next run "
                        "(pulumi up) until they pass. Fix what the command says, then run pulumi up again")
        if owed:
            unlink(pending)
    for item in changed:
        print(f"changed {item}")
    print(f"keel-place: {len(changed)} changed, {len(files) - len(before)} file(s) already as planned")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
