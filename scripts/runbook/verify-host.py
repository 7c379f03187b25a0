#!/usr/bin/env python3
"""keel-verify (scripts/runbook/verify-host.py): the on-host half of keel verify
(scripts/runbook/verify.sh), installed by the tools step and run as root through the deploy user's
sudo. What is planned comes from /etc/keel/host.conf (the tools step writes it from the stack
config; $KEEL_HOST_CONF names another), not from the caller. Read-only: it runs only commands that
report (sshd -T, ss, ufw status, nft list, sysctl -n, systemctl is-active, systemd-analyze
security, lstat, keel-health --json without --record) and writes nothing.

Prints one line per check, tab-separated: STATUS NAME EVIDENCE (STATUS: ok, failed or skipped).
Exit 0 when every line was printed (failed checks included), 3 when the checks could not run.
"""
import argparse
import grp
import ipaddress
import json
import os
import pwd
import re
import stat
import subprocess
import sys

# What plan/secrets.ts envFileBundle places (owner, group, mode); test/unit/verify.test.ts keeps
# the two equal.
ENV_FILE_OWNER, ENV_FILE_GROUP, ENV_FILE_MODE = "root", "root", 0o600
# The highest `systemd-analyze security` exposure the engine's unit may have (plan/engine.ts; the VM
# tier measures it at 1.0 or so).
MAX_EXPOSURE = 1.5
# UDP ports a cloud server's own DHCP clients listen on beyond loopback (IPv4, IPv6): not services.
DHCP_CLIENT_UDP = {68, 546}
# Where hardening places the sysctl settings (cloud-init/hardening.ts HARDENING_PATHS.sysctl).
SYSCTL_FILE = "/etc/sysctl.d/99-zz-keel.conf"

results = []


def report(status, name, evidence):
    evidence = " ".join(str(evidence).split())
    results.append((status, name, evidence[:600]))


def run(*argv, timeout=120):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout, p.stderr
    except FileNotFoundError:
        return 127, "", f"{argv[0]}: not installed"
    except subprocess.TimeoutExpired:
        return 124, "", f"{argv[0]}: no answer in {timeout} s"


def check_sshd(ports):
    rc, out, err = run("sshd", "-T")
    if rc != 0:
        return report("failed", "sshd-config", f"sshd -T failed: {err.strip()}")
    seen = {}
    served = set()
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        if key == "port":
            served.add(int(value))
        seen[key] = value
    want = {"permitrootlogin": "no", "passwordauthentication": "no", "kbdinteractiveauthentication": "no", "pubkeyauthentication": "yes"}
    wrong = [f"{k} {seen.get(k, '(unset)')} (planned: {v})" for k, v in want.items() if seen.get(k) != v]
    if served != set(ports):
        wrong.append(f"ports {sorted(served)} (planned: {sorted(ports)})")
    if wrong:
        report("failed", "sshd-config", "; ".join(wrong))
    else:
        report("ok", "sshd-config", f"root login, passwords and keyboard-interactive off, keys only, port(s) {', '.join(map(str, sorted(served)))}")


def local_address(text):
    """(address, port) of an ss local address column: 0.0.0.0:22, [::]:22, *:22, 127.0.0.1%lo:53."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]").split("%")[0]
    return host, int(port) if port.isdigit() else -1


def is_loopback(host):
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback


def check_listeners(ports):
    rc, out, err = run("ss", "-Hlntup")
    if rc != 0:
        return report("failed", "listeners", f"ss failed: {err.strip()}")
    extra = []
    for line in out.splitlines():
        cols = line.split()
        if len(cols) < 5:
            continue
        proto, local = cols[0], cols[4]
        process = cols[6] if len(cols) > 6 else ""
        host, port = local_address(local)
        if is_loopback(host):
            continue
        name = (re.search(r'"([^"]+)"', process) or [None, "?"])[1]
        if proto == "tcp" and port in ports and name == "sshd":
            continue
        if proto == "udp" and port in DHCP_CLIENT_UDP:
            continue
        extra.append(f"{proto} {local} ({name})")
    if extra:
        report("failed", "listeners", f"listening beyond loopback besides sshd on {sorted(ports)}: {', '.join(sorted(set(extra)))}")
    else:
        report("ok", "listeners", f"beyond loopback only sshd on {', '.join(map(str, sorted(ports)))} (and the DHCP client)")


def check_ufw(ports):
    rc, out, err = run("ufw", "status", "verbose")
    if rc != 0:
        return report("failed", "ufw", f"ufw status failed: {err.strip()}")
    problems = []
    if not re.search(r"^Status: active$", out, re.M):
        problems.append("not active")
    if not re.search(r"^Default: deny \(incoming\)", out, re.M):
        problems.append("incoming is not denied by default")
    allowed = set()
    body = out.split("\n--", 1)[1].split("\n", 1)[1] if "\n--" in out else ""
    for line in body.splitlines():
        if not line.strip():
            continue
        m = re.match(r"^(\S+)(?: \(v6\))?\s+(ALLOW IN|LIMIT IN|DENY IN|REJECT IN|ALLOW OUT|DENY OUT|REJECT OUT|LIMIT OUT|ALLOW|LIMIT|DENY|REJECT)\s+(.*)$", line.strip())
        if not m:
            problems.append(f"unread rule: {line.strip()}")
            continue
        to, action = m[1], m[2]
        if action in ("ALLOW", "ALLOW IN", "LIMIT", "LIMIT IN"):
            if to not in {f"{p}/tcp" for p in ports}:
                problems.append(f"allows {to} ({line.strip()})")
            else:
                allowed.add(to)
    missing = {f"{p}/tcp" for p in ports} - allowed
    if missing:
        problems.append(f"does not allow {', '.join(sorted(missing))}")
    if problems:
        report("failed", "ufw", "; ".join(problems))
    else:
        report("ok", "ufw", f"active, incoming denied, allowed only {', '.join(sorted(allowed))}")


def check_fail2ban():
    rc, out, err = run("fail2ban-client", "status", "sshd")
    if rc != 0 or "Status for the jail: sshd" not in out:
        return report("failed", "fail2ban", f"the sshd jail is not running: {(err or out).strip()}")
    banned = re.search(r"Currently banned:\s*(\d+)", out)
    report("ok", "fail2ban", f"jail sshd running, {banned[1] if banned else '?'} banned now")


def check_metadata_guard():
    rc, out, err = run("nft", "list", "chain", "inet", "keel_metadata_guard", "output")
    if rc != 0 or not re.search(r"ip daddr 169\.254\.169\.254 meta skuid != 0 .*reject", out):
        return report("failed", "metadata-guard", f"the rule that keeps non-root users from 169.254.169.254 is not loaded: {(err or out).strip()[:200]}")
    report("ok", "metadata-guard", "nft chain inet keel_metadata_guard rejects 169.254.169.254 for every user but root")


def check_sysctl():
    try:
        with open(SYSCTL_FILE, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        return report("failed", "sysctl", f"{SYSCTL_FILE}: {e.strerror}")
    wrong, count = [], 0
    for line in lines:
        line = line.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        key = key.lstrip("-")
        count += 1
        rc, out, _ = run("sysctl", "-n", key)
        now = " ".join(out.split())
        if rc != 0 or now != " ".join(value.split()):
            wrong.append(f"{key} = {now or '(unreadable)'} (planned {value})")
    if wrong:
        report("failed", "sysctl", "; ".join(wrong))
    else:
        report("ok", "sysctl", f"all {count} values of {SYSCTL_FILE} in effect")


def check_engine(service):
    rc, out, _ = run("systemctl", "is-active", service)
    if out.strip() != "active":
        report("failed", "engine", f"{service} is {out.strip() or 'unknown'}")
    else:
        report("ok", "engine", f"{service} active")
    rc, out, err = run("systemd-analyze", "security", "--no-pager", service)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out + err)
    if not m:
        return report("failed", "engine-exposure", f"systemd-analyze security gave no level: {(err or out).strip()[-200:]}")
    level = float(m[1])
    report("ok" if level <= MAX_EXPOSURE else "failed", "engine-exposure", f"{service}: exposure {level} (planned at most {MAX_EXPOSURE})")


def check_env_file(path):
    try:
        st = os.lstat(path)
    except OSError as e:
        return report("failed", "env-file", f"{path}: {e.strerror}")
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    mode = stat.S_IMODE(st.st_mode)
    got = f"{owner}:{group} {mode:04o}{'' if stat.S_ISREG(st.st_mode) else ' (not a regular file)'}"
    want = f"{ENV_FILE_OWNER}:{ENV_FILE_GROUP} {ENV_FILE_MODE:04o}"
    report("ok" if got == want else "failed", "env-file", f"{path} is {got}" + ("" if got == want else f" (planned {want})"))


def check_health(tool):
    # keel-health without --record: it changes neither its state nor the alert it would send.
    rc, out, err = run(tool, "--json", timeout=600)
    try:
        health = json.loads(out)
    except ValueError:
        return report("failed", "health", f"{tool} --json exited {rc} without a report: {err.strip()[-300:]}")
    checks = health.get("checks", {})
    for name in ("db", "backup", "updates", "drift"):
        c = checks.get(name)
        if c is None:
            report("failed", f"health-{name}", "the health report has no such check")
        else:
            report("ok" if c.get("status") == "ok" else "failed", f"health-{name}", f"{c.get('status')}: {c.get('summary', '')}")
    others = {k: v for k, v in checks.items() if k not in ("db", "backup", "updates", "drift")}
    bad = [f"{k} {v.get('status')}: {v.get('summary', '')}" for k, v in others.items() if v.get("status") != "ok"]
    status = health.get("status")
    report("ok" if status == "healthy" and not bad else "failed", "health", f"{status}" + (f"; {'; '.join(bad)}" if bad else f", {len(checks)} checks ok"))


def read_conf(path):
    """host.conf's key=value lines (plan/health.ts renderHostConf)."""
    conf = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, value = line.split("=", 1)
                conf[key] = value
    return conf


def main():
    argparse.ArgumentParser(prog="keel-verify", description="keel verify's checks on this host (read-only); run by scripts/runbook/verify.sh").parse_args()
    if os.geteuid() != 0:
        print("keel-verify: must run as root (sudo)", file=sys.stderr)
        return 3
    path = os.environ.get("KEEL_HOST_CONF", "/etc/keel/host.conf")
    try:
        conf = read_conf(path)
    except OSError as e:
        print(f"keel-verify: cannot read {path}: {e.strerror}; keel writes it on pulumi up (the tools step)", file=sys.stderr)
        return 3
    missing = [k for k in ("ssh_ports", "unit", "env_file", "tools_dir") if not conf.get(k)]
    if missing or not re.fullmatch(r"[0-9]+(,[0-9]+)*", conf.get("ssh_ports", "")):
        print(f"keel-verify: {path} lacks {', '.join(missing) or 'a valid ssh_ports'}; run pulumi up with this keel", file=sys.stderr)
        return 3
    ports = [int(p) for p in conf["ssh_ports"].split(",")]
    check_sshd(ports)
    check_listeners(ports)
    check_ufw(ports)
    check_fail2ban()
    check_metadata_guard()
    check_sysctl()
    check_engine(conf["unit"])
    check_env_file(conf["env_file"])
    check_health(os.path.join(conf["tools_dir"], "keel-health"))
    for status, name, evidence in results:
        print(f"{status}\t{name}\t{evidence}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
