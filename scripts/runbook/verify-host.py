#!/usr/bin/python3 -I
"""keel-verify (scripts/runbook/verify-host.py): the on-host half of keel verify
(scripts/runbook/verify.sh), installed by the tools step and run as root through the deploy user's
sudo. What is planned comes from /etc/keel/host.conf (the tools step writes it from the stack
config), not from the caller or the environment. Read-only: it runs only commands that
report (sshd -T, ss, ufw status and show added, iptables -S, nft list, sysctl -n, auditctl -l and
-s, systemctl is-active, systemd-analyze security, lstat, keel-health --json without --record) and
writes nothing.

Prints one line per check, tab-separated: STATUS NAME EVIDENCE (STATUS: ok, failed or skipped).
Exit 0 when every line was printed (failed checks included), 3 when the checks could not run
(any other exit: it broke; verify.sh says so).
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
# Where hardening places the sysctl settings, and the SSH ports and sources UFW allows
# (cloud-init/hardening.ts HARDENING_PATHS.sysctl, .ufwConf).
SYSCTL_FILE = "/etc/sysctl.d/99-zz-keel.conf"
UFW_CONF = "/etc/keel/ufw-ssh.conf"
# keel's audit rules (HARDENING_PATHS.auditRules) and the sudo whose runs they record.
AUDIT_RULES = "/etc/audit/rules.d/50-keel.rules"
SUDO = "/usr/bin/sudo"
HOST_CONF = "/etc/keel/host.conf"
# What the commands run with: nothing of the caller's environment (PATH, locale, LANG through ssh).
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}

results = []


def report(status, name, evidence):
    # One line of printable text: a process name or path the engine chose reaches no terminal as
    # control characters.
    evidence = "".join(c if c.isprintable() else "?" for c in " ".join(str(evidence).split()))
    results.append((status, name, evidence[:600]))


def run(*argv, timeout=120):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, errors="replace", env=ENV, timeout=timeout)
        return p.returncode, p.stdout, p.stderr
    except FileNotFoundError:
        return 127, "", f"{argv[0]}: not installed"
    except subprocess.TimeoutExpired:
        return 124, "", f"{argv[0]}: no answer in {timeout} s"


def sshd_files():
    """/etc/ssh/sshd_config and the drop-ins it includes (Debian's and Ubuntu's layout)."""
    files = ["/etc/ssh/sshd_config"]
    try:
        files += sorted(os.path.join("/etc/ssh/sshd_config.d", f) for f in os.listdir("/etc/ssh/sshd_config.d") if f.endswith(".conf"))
    except OSError:
        pass
    return files


def check_sshd(ports, deploy_user):
    wrong = []
    # keel plans no Match block: one would change what sshd -T shows for other users and addresses.
    for path in sshd_files():
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                if any(re.match(r"\s*match\s", line, re.I) for line in f):
                    wrong.append(f"{path} has a Match block (keel plans none)")
        except OSError as e:
            wrong.append(f"{path}: {e.strerror}")
    want = {
        "permitrootlogin": "no",
        "passwordauthentication": "no",
        "kbdinteractiveauthentication": "no",
        "pubkeyauthentication": "yes",
        "authenticationmethods": "publickey",
        "permitemptypasswords": "no",
        "hostbasedauthentication": "no",
        "allowusers": deploy_user,
    }
    served = set()
    # As sshd would answer root and the deploy user from an address of no allowed network.
    for user in ("root", deploy_user):
        rc, out, err = run("sshd", "-T", "-C", f"user={user},host=verify.invalid,addr=192.0.2.1")
        if rc != 0:
            return report("failed", "sshd-config", f"sshd -T failed: {err.strip()}")
        seen = {}
        for line in out.splitlines():
            key, _, value = line.partition(" ")
            if key == "port":
                served.add(int(value))
            seen.setdefault(key, value)
        wrong += [f"{k} {seen.get(k, '(unset)')} for {user} (planned: {v})" for k, v in want.items() if seen.get(k) != v]
    if served != set(ports):
        wrong.append(f"ports {sorted(served)} (planned: {sorted(ports)})")
    if wrong:
        report("failed", "sshd-config", "; ".join(dict.fromkeys(wrong)))
    else:
        report("ok", "sshd-config", f"keys only (publickey), no root, no password or keyboard-interactive, only {deploy_user}, port(s) {', '.join(map(str, sorted(served)))}, no Match block")


def local_address(text):
    """(address, port) of an ss local address column: 0.0.0.0:22, [::]:22, *:22, 127.0.0.1%lo:53."""
    host, _, port = text.rpartition(":")
    host = host.split("%")[0].strip("[]")
    return host, int(port) if port.isdigit() else -1


def is_loopback(host):
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback


def owner_exe(process):
    """(uid, executable) of the first pid in an ss process column, or (None, "")."""
    m = re.search(r"pid=([0-9]+)", process)
    if not m:
        return None, ""
    try:
        return os.stat(f"/proc/{m[1]}").st_uid, os.readlink(f"/proc/{m[1]}/exe")
    except OSError:
        return None, ""


def check_listeners(ports):
    rc, out, err = run("ss", "-Hlntup")
    if rc != 0:
        return report("failed", "listeners", f"ss failed: {err.strip()}")
    extra, sshd = [], set()
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
        uid, exe = owner_exe(process)
        # sshd by its executable and owner, not its name (any process may call itself sshd).
        if proto == "tcp" and port in ports and uid == 0 and exe == "/usr/sbin/sshd":
            sshd.add(port)
            continue
        # The DHCP clients: root's dhclient (which also keeps sockets on random ports) or
        # systemd-networkd on the DHCP client ports.
        if proto == "udp" and ((uid == 0 and exe in ("/sbin/dhclient", "/usr/sbin/dhclient")) or (port in DHCP_CLIENT_UDP and exe == "/usr/lib/systemd/systemd-networkd")):
            continue
        extra.append(f"{proto} {local} ({name})")
    problems = [f"listening beyond loopback besides sshd on {sorted(ports)}: {', '.join(sorted(set(extra)))}"] if extra else []
    # sshd -T says which ports sshd would take; this says it does (a failed reload leaves it without).
    problems += [f"sshd does not listen beyond loopback on {port}" for port in sorted(set(ports) - sshd)]
    if problems:
        report("failed", "listeners", "; ".join(problems))
    else:
        report("ok", "listeners", f"beyond loopback only sshd on {', '.join(map(str, sorted(ports)))} (and the DHCP client)")


def planned_ufw():
    """The rules ufw-apply makes from keel's ufw-ssh.conf, as `ufw show added` prints them."""
    ports, sources = [], []
    with open(UFW_CONF, encoding="utf-8") as f:
        for line in f:
            word, _, value = line.strip().partition(" ")
            if word == "port":
                ports.append(value.strip())
            elif word == "allow":
                sources.append(value.strip())
    sys.path.insert(0, "/usr/lib/python3/dist-packages")
    from ufw.util import normalize_address  # ufw's own form of a source, as ufw-apply asks it

    return {f"ufw allow from {normalize_address(s, ':' in s)[0]} to any port {p} proto tcp comment 'keel-ssh'" for p in ports for s in sources}


def check_ufw():
    problems = []
    rc, out, err = run("ufw", "status", "verbose")
    if rc != 0:
        return report("failed", "ufw", f"ufw status failed: {err.strip()}")
    if not re.search(r"^Status: active$", out, re.M):
        problems.append("not active")
    if not re.search(r"^Default: deny \(incoming\)", out, re.M):
        problems.append("incoming is not denied by default")
    try:
        wanted = planned_ufw()
    except (OSError, ImportError, ValueError) as e:
        return report("failed", "ufw", f"cannot read the planned rules ({UFW_CONF}): {e}")
    rc, out, err = run("ufw", "show", "added")
    added = {line.strip() for line in out.splitlines() if line.startswith("ufw ")}
    for rule in sorted(added - wanted):
        problems.append(f"unplanned rule: {rule}")
    for rule in sorted(wanted - added):
        problems.append(f"missing rule: {rule}")
    # What the kernel applies, not only ufw's rule files: inbound dropped unless a ufw chain accepts.
    for tool in ("iptables", "ip6tables"):
        rc, out, err = run(tool, "-S", "INPUT")
        if rc != 0:
            problems.append(f"{tool} -S INPUT failed: {err.strip()[:120]}")
            continue
        if "-P INPUT DROP" not in out.splitlines():
            problems.append(f"{tool}: INPUT's policy is not DROP")
        for line in out.splitlines():
            if line.startswith("-A INPUT") and not re.search(r" -j ufw6?-[a-z-]+$", line):
                problems.append(f"{tool}: a rule outside ufw's chains: {line}")
    if problems:
        report("failed", "ufw", "; ".join(problems))
    else:
        report("ok", "ufw", f"active, incoming dropped, exactly the {len(wanted)} planned SSH rule(s), nothing else in INPUT")


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
        optional = key.startswith("-")
        key = key.lstrip("-")
        # A "-" key may be missing from this kernel (sysctl.d(5)): then there is nothing to compare.
        if optional and not os.path.exists("/proc/sys/" + key.replace(".", "/")):
            continue
        count += 1
        rc, out, _ = run("sysctl", "-n", key)
        now = " ".join(out.split())
        if rc != 0 or now != " ".join(value.split()):
            wrong.append(f"{key} = {now or '(unreadable)'} (planned {value})")
    if wrong:
        report("failed", "sysctl", "; ".join(wrong))
    else:
        report("ok", "sysctl", f"all {count} values of {SYSCTL_FILE} in effect")


def audit_rule(line):
    """A rule line, as a rules file has it or as `auditctl -l` prints it, in one form: auditctl
    prints `-k KEY` as `-F key=KEY`, an unset auid as -1, a rule on no system call as `-S all`, and
    system calls in their number order. None for a line that is no watch or rule."""
    words = line.split()
    if len(words) < 2 or words[0] not in ("-w", "-a"):
        return None
    pairs = list(zip(words[2::2], words[3::2]))
    if words[0] == "-w":
        perms = "".join(c for c in "rwxa" if c in dict(pairs).get("-p", ""))
        return ("-w", words[1], perms, dict(pairs).get("-k", ""))
    syscalls, fields = set(), set()
    for flag, value in pairs:
        if flag == "-S":
            syscalls.update(value.split(","))
        elif flag == "-F":
            fields.add(re.sub(r"(=)(unset|4294967295)$", r"\1-1", value))
        elif flag == "-k":
            fields.add(f"key={value}")
    return ("-a", words[1], frozenset(syscalls or {"all"}), frozenset(fields))


def audit_problems(planned, loaded, sudo_exe):
    """What keeps keel's audit rules (planned) from holding in the kernel (loaded: auditctl -l).

    Rule by rule: auditctl stops at the first rule the kernel refuses, so every rule after it is
    missing too, and another file's rules with the same keys must not stand in for keel's. The sudo
    rule must watch the file `sudo` runs: an audit path rule matches that file, not a link to it.
    """
    have = {}
    for rule in filter(None, map(audit_rule, loaded.splitlines())):
        have[rule] = have.get(rule, 0) + 1
    problems = []
    for line in planned.splitlines():
        rule = audit_rule(line)
        if rule is None:
            continue
        if have.get(rule, 0) > 0:
            have[rule] -= 1
        else:
            problems.append(f"not loaded: {line.strip()}")
    watched = sorted({m[1] for line in planned.splitlines() if "sudo-exec" in line for m in [re.search(r"-F path=(\S+)", line)] if m})
    if sudo_exe not in watched:
        problems.append(f"sudo runs {sudo_exe}, which keel's sudo-exec rule does not watch ({', '.join(watched) or 'no such rule'})")
    return problems


def check_audit():
    try:
        with open(AUDIT_RULES, encoding="utf-8") as f:
            planned = f.read()
    except OSError as e:
        return report("failed", "audit", f"{AUDIT_RULES}: {e.strerror}")
    rc, loaded, err = run("auditctl", "-l")
    if rc != 0:
        return report("failed", "audit", f"auditctl -l failed: {err.strip()}")
    sudo_exe = os.path.realpath(SUDO)
    problems = audit_problems(planned, loaded, sudo_exe)
    rc, status, err = run("auditctl", "-s")
    if not re.search(r"^enabled [12]$", status, re.M):
        problems.append(f"auditing is not enabled: {(status or err).strip()[:120]}")
    if problems:
        report("failed", "audit", "; ".join(problems))
    else:
        total = sum(1 for line in planned.splitlines() if audit_rule(line))
        report("ok", "audit", f"all {total} of keel's rules loaded, auditing enabled, sudo-exec watches {sudo_exe}")


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


def read_conf(path=HOST_CONF):
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
    path = HOST_CONF
    try:
        conf = read_conf(path)
    except OSError as e:
        print(f"keel-verify: cannot read {path}: {e.strerror}; keel writes it on pulumi up (the tools step)", file=sys.stderr)
        return 3
    missing = [k for k in ("ssh_ports", "unit", "env_file", "tools_dir", "deploy_user") if not conf.get(k)]
    if missing or not re.fullmatch(r"[0-9]+(,[0-9]+)*", conf.get("ssh_ports", "")):
        print(f"keel-verify: {path} lacks {', '.join(missing) or 'a valid ssh_ports'}; run pulumi up with this keel", file=sys.stderr)
        return 3
    ports = [int(p) for p in conf["ssh_ports"].split(",")]
    check_sshd(ports, conf["deploy_user"])
    check_listeners(ports)
    check_ufw()
    check_fail2ban()
    check_metadata_guard()
    check_sysctl()
    check_audit()
    check_engine(conf["unit"])
    check_env_file(conf["env_file"])
    check_health(os.path.join(conf["tools_dir"], "keel-health"))
    for status, name, evidence in results:
        print(f"{status}\t{name}\t{evidence}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
