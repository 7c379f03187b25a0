"""A stand-in for the engine, writing to an SQLite DB for the db-* tests and bench/db-bench.sh.

usage: db-writer.py hold DB          open DB in WAL mode, commit one row, print "ready", then keep
                                     the connection open until stdin closes or a signal ends it
       db-writer.py crash DB N       WAL mode with automatic checkpoints off: commit N rows in
                                     transactions of 10, print "ready", then SIGKILL itself, so
                                     the committed frames stay in the -wal (and the -shm stays)
       db-writer.py hot-journal DB   rollback-journal mode, a tiny page cache, one big uncommitted
                                     transaction that spills into the DB file, then SIGKILL:
                                     a hot journal is left beside the DB
       db-writer.py loop DB LOG SECS commit one small row per transaction until SIGTERM (or SECS
                                     seconds), appending each committed id to LOG after COMMIT
                                     returns; on exit print {"committed","errors","max_ms",
                                     "secs","first_error"} as JSON and exit 1 if any commit failed

Rows go into table w(id INTEGER PRIMARY KEY, v BLOB).
"""

import json
import os
import signal
import sqlite3
import sys
import time


def connect(path, wal=True):
    con = sqlite3.connect(path, isolation_level=None, timeout=5.0)
    if wal:
        con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE IF NOT EXISTS w(id INTEGER PRIMARY KEY, v BLOB)")
    return con


def ready():
    sys.stdout.write("ready\n")
    sys.stdout.flush()


def hold(path):
    con = connect(path)
    con.execute("INSERT INTO w(v) VALUES (randomblob(16))")
    ready()
    sys.stdin.read()
    con.close()


def crash(path, n):
    con = connect(path)
    con.execute("PRAGMA wal_autocheckpoint=0")
    for start in range(0, n, 10):
        con.execute("BEGIN")
        for _ in range(start, min(start + 10, n)):
            con.execute("INSERT INTO w(v) VALUES (randomblob(100))")
        con.execute("COMMIT")
    ready()
    os.kill(os.getpid(), signal.SIGKILL)


def hot_journal(path):
    con = connect(path, wal=False)
    con.execute("INSERT INTO w(v) VALUES (randomblob(100))")
    con.execute("PRAGMA cache_size=2")
    con.execute("BEGIN")
    for _ in range(2000):
        con.execute("INSERT INTO w(v) VALUES (randomblob(500))")
    ready()
    os.kill(os.getpid(), signal.SIGKILL)


def loop(path, log_path, secs):
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    con = connect(path)
    committed = errors = 0
    max_ms = 0.0
    first_error = None
    started = time.monotonic()
    deadline = started + secs
    with open(log_path, "a", buffering=1) as log:
        ready()
        while not stop and time.monotonic() < deadline:
            t0 = time.perf_counter()
            try:
                con.execute("BEGIN IMMEDIATE")
                cur = con.execute("INSERT INTO w(v) VALUES (randomblob(64))")
                con.execute("COMMIT")
            except sqlite3.Error as e:
                errors += 1
                first_error = first_error or str(e)
                if con.in_transaction:
                    con.execute("ROLLBACK")
                continue
            max_ms = max(max_ms, (time.perf_counter() - t0) * 1000)
            committed += 1
            log.write(f"{cur.lastrowid}\n")
    con.close()
    elapsed = round(time.monotonic() - started, 3)
    print(json.dumps({"committed": committed, "errors": errors, "max_ms": round(max_ms, 2), "secs": elapsed, "first_error": first_error}))
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "hold":
        hold(args[0])
    elif mode == "crash":
        crash(args[0], int(args[1]))
    elif mode == "hot-journal":
        hot_journal(args[0])
    elif mode == "loop":
        loop(args[0], args[1], float(args[2]))
    else:
        sys.exit(f"unknown mode {mode}")
