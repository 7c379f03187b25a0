// The hardening checks both hardening VM files make (test/vm/hardening.test.ts on Debian 12 with
// SSH on 22, test/vm/hardening-trixie.test.ts on Debian 13 with keel:sshPort 2222): the first
// converge over SSH, then what an auditor checks on a hardened host, written once and
// parameterised by the host (image, SSH port, allowed CIDRs all come from its stack config).
import { describe, expect, it, beforeAll } from "vitest";
import { sshPorts, type KeelConfig } from "../../../config";
import { runSteps, type StepRun } from "../../../local/runSteps";
import { isHostKeyFailure, type ExecResult, type Vm } from "../../../local/vm";
import { firstBootPackages, HARDENING_PATHS, kexAlgorithms, modprobeConf, sysctlConf } from "../../../plan/hardening";
import { buildHostPlan, layoutBundle } from "../../../plan/hostPlan";
import { readStatic } from "../../../plan/static";
import {
  attackerNamespace,
  connectToMetadata,
  expectBanAndUnban,
  expectHardeningVerified,
  expectNamesItself,
  expectSshOverStaticIpv6,
  IPV6_CLIENT_CIDR,
  keelVerifyOnHost,
  metadataGuardCount,
  parallelLogins,
  probeFromAttacker,
  removeAttackerNamespace,
  sctpSocketError,
  sysctlSettings,
  sysctlValues,
  ufwStatus,
  useAttacker,
} from "./hardeningChecks";
import { asRoot, MINUTE, sh, shellQuote, sshWith, tryAsRoot, type KeyPair } from "./keelVm";

/** A first-booted host under test, as its file's beforeAll made it. */
export interface HardenedHost {
  readonly vm: Vm;
  /** The test's own directory (known_hosts files). */
  readonly tmp: string;
  /** The stack as last converged: its image, SSH port, CIDRs and keys are what the checks expect. */
  readonly cfg: KeelConfig;
  readonly admin: KeyPair;
  readonly hostKey: KeyPair;
  /** A host key the host does not have: pinning it must fail. */
  readonly wrongHostKey: KeyPair;
}

/** One SSH login as `user` (the deploy user by default) running `echo keel-ok`. */
export function sshAs(host: HardenedHost, key: KeyPair, opts: { user?: string; options?: string[]; hostKey?: KeyPair } = {}): Promise<ExecResult> {
  return sshWith(
    host.vm,
    host.tmp,
    { user: opts.user ?? host.cfg.deployUser, identityFile: key.file, hostPublicKey: (opts.hostKey ?? host.hostKey).publicKey, options: opts.options },
    "echo keel-ok",
  );
}

/**
 * The steps a `pulumi up` runs first on a first-booted host (ready, tools, packages, layout,
 * admin-keys and every harden-* step), run over SSH as the engine would. The first boot made the
 * hardening and the layout: keel-place finds every harden-* and layout file already as planned, and
 * keel-packages finds every first-boot package installed.
 */
export async function convergeFirstBootedHost(vm: Vm, cfg: KeelConfig): Promise<StepRun[]> {
  const wanted = ["ready", "tools", "packages", "layout", "admin-keys"];
  const steps = buildHostPlan(cfg).steps.filter((s) => wanted.includes(s.name) || s.name.startsWith("harden-"));
  expect(steps.filter((s) => s.name.startsWith("harden-")).length).toBeGreaterThanOrEqual(9);
  const runs = await runSteps(vm, steps, {});
  for (const run of runs.filter((r) => r.name.startsWith("harden-") || r.name === "layout")) {
    expect(run.stdout, run.name).toMatch(/^keel-place: 0 changed, \d+ \S+ already as planned\n$/);
  }
  expect(runs.find((r) => r.name === "packages")!.stdout).toBe(`keel-packages: all ${firstBootPackages(cfg.image).length} packages installed, nothing to do\n`);
  return runs;
}

/** How `ufw status` shows an allowed CIDR: a single address (/32, /128) bare. */
/** A CIDR as `ufw status` shows it: a single address without its prefix length. */
const ufwSource = (cidr: string) => (cidr.includes(":") ? cidr.replace(/\/128$/, "") : cidr.replace(/\/32$/, ""));

/** Each host's `sshd -T` at its first round: a reboot changes nothing in it. */
const sshdConfigs = new WeakMap<Vm, string>();

/**
 * The checks that must hold on a hardened host after its first converge and after every reboot.
 * `round` picks the attacker's addresses (useAttacker): fail2ban remembers an earlier round's.
 */
export function hardenedHostChecks(host: () => HardenedHost, when: string, round: number): void {
  describe(when, () => {
    beforeAll(() => useAttacker(round));

    it("lets the deploy user in with the pinned ED25519 host key and no other; never root; offers no password", async () => {
      const { vm, admin, hostKey, wrongHostKey } = host();
      expect((await sshAs(host(), admin)).stdout).toBe("keel-ok\n");
      const wrong = await sshAs(host(), admin, { hostKey: wrongHostKey });
      expect(isHostKeyFailure(wrong), wrong.stderr).toBe(true);
      const root = await sshAs(host(), admin, { user: "root" });
      expect(root.code).toBe(255);
      expect(root.stderr).toContain("Permission denied (publickey).");
      const password = await sshAs(host(), admin, { options: ["-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password,keyboard-interactive"] });
      expect(password.code).toBe(255);
      expect(password.stderr).toContain("Permission denied (publickey).");
      expect((await asRoot(vm, "ls /etc/ssh | grep '^ssh_host_'")).trim().split("\n")).toEqual(["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"]);
      expect((await asRoot(vm, "cat /etc/ssh/ssh_host_ed25519_key.pub")).split(" ").slice(0, 2)).toEqual(hostKey.publicKey.split(" ").slice(0, 2));
    }, 5 * MINUTE);

    it("lets a burst of 10 parallel logins from the operator's address through (what pulumi up does)", async () => {
      // ConnectTimeout 60 rather than the runner's 15: under TCG on a busy machine ten sshd forks at
      // once can take longer than 15 s to send their banners; a rate limit stalls for far longer.
      const since = (await sh(host().vm, "date +%s")).trim();
      const logins = await parallelLogins(() => sshAs(host(), host().admin, { options: ["-o", "ConnectTimeout=60"] }), 10);
      const failed = logins.some((l) => l.code !== 0);
      // A failure shows what sshd said meanwhile of refusals and ends (MaxStartups, PerSourcePenalties,
      // LoginGraceTime), out of the ~10 lines per login it writes at LogLevel VERBOSE.
      const refusals = "startups|penalt|drop|timeout|refus|error|fatal|closed|disconnect";
      const sshdLog = failed ? (await tryAsRoot(host().vm, `journalctl --no-pager -o short-iso --since @${since} _COMM=sshd _COMM=sshd-session | grep -aEi '${refusals}' | tail -n 80`)).stdout : "";
      expect(logins.map((l) => l.code), `${JSON.stringify(logins)}\n${sshdLog}`).toEqual(Array(10).fill(0));
    }, 5 * MINUTE);

    // keel verify's own checks (the operator's command, issue 16): sshd's effective config, the
    // listeners by executable, UFW's exact rules and the kernel's INPUT policy, fail2ban's jail, the
    // metadata guard's rule, every sysctl value, keel's audit rules loaded. The tests below add what
    // needs a root-only hook.
    it("passes keel verify's checks of the hardening, run on the host as the operator runs them", async () => {
      const { vm, cfg } = host();
      const checks = await expectHardeningVerified(vm);
      expect(checks.get("sshd-config")!.evidence).toContain(`port(s) ${cfg.sshPort},`);
      expect(checks.get("listeners")!.evidence).toContain(`only sshd on ${cfg.sshPort}`);
      expect(checks.get("ufw")!.evidence).toContain(`exactly the ${sshPorts(cfg).length * cfg.allowedSshCidrs.length} planned SSH rule(s)`);
    }, 20 * MINUTE);

    it("runs sshd with keys only, the deploy user only, the image's post-quantum hybrid first", async () => {
      const { vm, cfg } = host();
      const config = await asRoot(vm, "sshd -T");
      const value = (k: string) => config.match(new RegExp(`^${k} (.*)$`, "m"))?.[1];
      expect({
        ports: [...config.matchAll(/^port (.*)$/gm)].map((m) => m[1]),
        permitrootlogin: value("permitrootlogin"),
        passwordauthentication: value("passwordauthentication"),
        kbdinteractiveauthentication: value("kbdinteractiveauthentication"),
        authenticationmethods: value("authenticationmethods"),
        allowusers: value("allowusers"),
        kexalgorithms: value("kexalgorithms"),
        hostkeyalgorithms: value("hostkeyalgorithms"),
        disableforwarding: value("disableforwarding"),
        loglevel: value("loglevel"),
        maxsessions: value("maxsessions"),
      }).toEqual({
        ports: sshPorts(cfg).map(String),
        permitrootlogin: "no",
        passwordauthentication: "no",
        kbdinteractiveauthentication: "no",
        authenticationmethods: "publickey",
        allowusers: cfg.deployUser,
        kexalgorithms: kexAlgorithms(cfg.image).join(","),
        hostkeyalgorithms: "ssh-ed25519",
        disableforwarding: "yes",
        loglevel: "VERBOSE",
        maxsessions: "2",
      });
      // A reboot changes nothing in the effective configuration.
      if (!sshdConfigs.has(vm)) sshdConfigs.set(vm, config);
      expect(config).toBe(sshdConfigs.get(vm));
    }, 5 * MINUTE);

    it("has UFW active: deny incoming and routed, allow outgoing, only the SSH port from the allowed CIDRs", async () => {
      const { vm, cfg } = host();
      const ufw = await ufwStatus(vm);
      expect(ufw.status).toBe("active");
      // ufw prints "disabled (routed)" where the kernel forwards nothing (net.ipv4.ip_forward = 0).
      expect(ufw.defaults).toBe("deny (incoming), allow (outgoing), disabled (routed)");
      const rules = sshPorts(cfg).flatMap((port) => cfg.allowedSshCidrs.map((cidr) => ({ to: `${port}/tcp`, action: "ALLOW IN", from: ufwSource(cidr), comment: "keel-ssh" })));
      expect(ufw.rules).toEqual(rules);
    }, 5 * MINUTE);

    it("drops what else would listen beyond loopback (keel verify's listeners check says only sshd listens)", async () => {
      // A stray service on 0.0.0.0:8080: reachable on loopback, dropped for a source outside.
      const { vm, cfg } = host();
      await attackerNamespace(vm);
      const server = (await asRoot(vm, "nohup timeout 120 python3 -c 'import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((\"0.0.0.0\", 8080)); s.listen(); time.sleep(120)' >/dev/null 2>&1 & echo $!")).trim();
      try {
        await sh(vm, "for i in $(seq 50); do bash -c 'exec 3<>/dev/tcp/127.0.0.1/8080' 2>/dev/null && exit 0; sleep 0.2; done; exit 1");
        expect(await probeFromAttacker(vm, 8080, 6)).toBe("exit 124");
        expect(await probeFromAttacker(vm, cfg.sshPort)).toBe("banner");
      } finally {
        await asRoot(vm, `kill ${server} 2>/dev/null || true`);
        await removeAttackerNamespace(vm);
      }
    }, 5 * MINUTE);

    it("runs fail2ban's sshd jail: bans a source after failed logins, then unbans it", async () => {
      const { vm, cfg, hostKey } = host();
      expect((await sh(vm, "systemctl is-active fail2ban")).trim()).toBe("active");
      expect(await asRoot(vm, "fail2ban-client status")).toMatch(/Jail list:\s+sshd\s*$/m);
      await expectBanAndUnban(vm, cfg.sshPort, hostKey.publicKey);
    }, 10 * MINUTE);

    it("keeps the metadata endpoint for root: non-root connections are rejected by the guard's rule", async () => {
      const { vm } = host();
      expect((await sh(vm, "systemctl is-active keel-metadata-guard.service")).trim()).toBe("active");
      const start = await metadataGuardCount(vm);
      const deploy = await connectToMetadata(vm, "deploy");
      expect(deploy).toMatch(/exit 1$/);
      const afterDeploy = await metadataGuardCount(vm);
      expect(afterDeploy, `${deploy}\n${await asRoot(vm, "ip route get 169.254.169.254; nft list ruleset")}`).toBeGreaterThan(start);
      expect(await connectToMetadata(vm, "nobody")).toMatch(/exit 1$/);
      const afterNobody = await metadataGuardCount(vm);
      expect(afterNobody).toBeGreaterThan(afterDeploy);
      // Root's SYN passes the guard (and goes nowhere: the VM's network is restricted).
      await connectToMetadata(vm, "root");
      expect(await metadataGuardCount(vm)).toBe(afterNobody);
    }, 5 * MINUTE);

    it("keeps the user-data, cloud-init's logs and the host private key root-only", async () => {
      const { vm, hostKey } = host();
      expect((await asRoot(vm, "stat -c '%a %U:%G %n' /var/lib/cloud/instance/user-data.txt /var/log/cloud-init.log /var/log/cloud-init-output.log")).trim().split("\n")).toEqual([
        "600 root:root /var/lib/cloud/instance/user-data.txt",
        "600 root:adm /var/log/cloud-init.log",
        "600 root:adm /var/log/cloud-init-output.log",
      ]);
      const read = await vm.exec("cat /var/lib/cloud/instance/user-data.txt");
      expect(read.code).not.toBe(0);
      expect(read.stderr).toContain("Permission denied");
      // A line of the private key: the deploy user finds it in no file and not in the journal.
      const keyLine = hostKey.privateKey.trim().split("\n").sort((a, b) => b.length - a.length)[0];
      expect(keyLine.length).toBeGreaterThanOrEqual(60);
      const dirs = "/etc /var /run /tmp /home /opt /srv";
      const exclude = "--exclude-dir=keel-offline-repo --exclude-dir=journal";
      // The line goes to grep on stdin, never in a command line: sudo logs the command lines it runs
      // to the journal, so a probe with the key in its argv would itself leak it there.
      const find = `grep -rlsF -f - ${exclude} ${dirs}`;
      expect((await vm.exec(find, { stdin: keyLine, timeoutMs: 10 * MINUTE })).stdout).toBe("");
      expect((await sh(vm, "key=$(cat); journalctl --no-pager -o cat | grep -cF -- \"$key\" || true", { stdin: keyLine, timeoutMs: 5 * MINUTE })).trim()).toBe("0");
      // Root does find it, in files no one else may read.
      const holders = (await asRoot(vm, `${find} | xargs -r stat -c '%a %U %n'`, { stdin: keyLine, timeoutMs: 10 * MINUTE })).trim().split("\n");
      expect(holders.map((l) => l.split(" ")[2])).toContain("/etc/ssh/ssh_host_ed25519_key");
      for (const line of holders) expect(line).toMatch(/^[4-7]00 root \//);
    }, 25 * MINUTE);

    it("applies every sysctl setting, keeps core dumps off and the journal on disk", async () => {
      const { vm, cfg } = host();
      const wantedSysctl = sysctlSettings(sysctlConf(cfg));
      expect(Object.keys(wantedSysctl).length).toBeGreaterThan(30);
      expect(await sysctlValues(vm, Object.keys(wantedSysctl))).toEqual(wantedSysctl);
      // A glob sets the key of every interface: the one the host came up with included, not only
      // "all" and "default" (which these keys read from no existing interface).
      const globs = [...sysctlConf(cfg).matchAll(/^net\.ipv6\.conf\.\*\.([a-z_]+) = (\S+)$/gm)];
      expect(globs.length).toBe(6);
      for (const [, key, value] of globs) {
        const values = await asRoot(vm, `cd /proc/sys/net/ipv6/conf && for i in *; do printf '%s %s\\n' "$i" "$(cat "$i/${key}")"; done`);
        const byInterface = Object.fromEntries(values.trim().split("\n").map((l) => l.split(" ")));
        expect(Object.keys(byInterface).filter((i) => !["all", "default", "lo"].includes(i)).length, key).toBeGreaterThan(0);
        for (const i of Object.keys(byInterface)) expect(`${i} ${key} ${byInterface[i]}`).toBe(`${i} ${key} ${value}`);
      }
      expect((await sh(vm, "ulimit -Hc; ulimit -Sc")).trim()).toBe("0\n0");
      expect((await sh(vm, "test -d /var/log/journal/$(cat /etc/machine-id) && journalctl --list-boots --no-pager | wc -l")).trim()).toMatch(/^[1-9]\d*$/);
    }, 5 * MINUTE);

    it("serves SSH over static IPv6 through the gateway fe80::1 and takes nothing from router advertisements", async () => {
      const { vm, cfg, admin, hostKey } = host();
      expect(cfg.allowedSshCidrs).toContain(IPV6_CLIENT_CIDR);
      await expectSshOverStaticIpv6(vm, { port: cfg.sshPort, user: cfg.deployUser, privateKey: admin.privateKey, hostPublicKey: hostKey.publicKey });
    }, 5 * MINUTE);

    it("runs sudo with umask 0077 and no exec except for keel's tools; keeps sshd_config and the deploy user's start-up files from others", async () => {
      const { vm, cfg } = host();
      // Every step of the converge ran through this sudoers file; sudo reads it as planned.
      expect(await asRoot(vm, "visudo -c >/dev/null && echo parsed")).toBe("parsed\n");
      const listed = await sh(vm, "sudo -l");
      expect(listed).toMatch(/\bignore_dot\b/);
      expect(listed).toMatch(/\bumask=0?077\b/);
      expect(listed).toMatch(/\bnoexec\b/);
      // sudo lists the rule's tags in an order of its own.
      expect(listed).toMatch(/^\s*\(root\) (EXEC: NOPASSWD:|NOPASSWD: EXEC:) \/usr\/local\/sbin\/keel-\*$/m);
      // A rule without EXEC: (root's own) runs its command, which cannot start another program,
      // with the union of the caller's umask and 0077.
      const noexec = await tryAsRoot(vm, "sudo -u nobody /bin/sh -c 'umask; /bin/true && echo started'");
      expect(noexec.stdout.trim()).toBe("0077");
      expect(noexec.stderr).toMatch(/Permission denied/);
      // A server first booted by an older keel keeps cloud-init's rule for the deploy user, without
      // EXEC:. keel's file sorts after it and sudo uses the last rule that matches: keel's tools
      // still start their programs (keel-verify runs sshd -T, ss, nft...).
      const oldRule = "/etc/sudoers.d/90-cloud-init-users";
      await asRoot(vm, `test ! -e ${oldRule} && umask 0337 && printf '%s\\n' ${shellQuote(`${cfg.deployUser} ALL=(root) NOPASSWD: /usr/local/sbin/keel-*`)} > ${oldRule} && visudo -c -q`);
      try {
        expect((await keelVerifyOnHost(vm)).get("sshd-config")?.status).toBe("ok");
      } finally {
        await asRoot(vm, `rm -f ${oldRule}`);
      }
      expect(await asRoot(vm, `stat -c '%a %U' ${HARDENING_PATHS.sshdConfig} /etc/sudoers.d`)).toBe("600 root\n750 root\n");
      const initFiles = await sh(vm, `cd /home/${cfg.deployUser} && stat -c '%a %n' .bashrc .profile`);
      expect(initFiles).toBe("640 .bashrc\n640 .profile\n");
    }, 5 * MINUTE);

    it("keeps root's password locked: keel verify fails on one set by hand, and the root-access step locks it again", async () => {
      const { vm, cfg } = host();
      // The first character of root's password field: "!" locked, "*" none; "$" a hash.
      const rootPassword = async () => (await asRoot(vm, "awk -F: '$1 == \"root\" { print substr($2, 1, 1) }' /etc/shadow")).trim();
      expect(["!", "*"]).toContain(await rootPassword());
      expect((await keelVerifyOnHost(vm)).get("passwords")?.status).toBe("ok");
      // As through Hetzner's console: a password that works. On stdin, never in a command line.
      await asRoot(vm, "chpasswd", { stdin: `root:keel-test-${Date.now()}\n` });
      expect(await rootPassword()).toBe("$");
      const found = (await keelVerifyOnHost(vm)).get("passwords");
      expect(found?.status).toBe("failed");
      expect(found?.evidence).toMatch(/^root: a password that works/);
      // Names only: no crypt hash ($y$…, $6$…) in what keel verify prints.
      expect(found?.evidence).not.toMatch(/\$[0-9a-z]{1,2}\$/);
      const step = buildHostPlan(cfg).steps.filter((s) => s.name === "harden-root-access");
      const [run] = await runSteps(vm, step, {});
      expect(run.stdout).toMatch(/^changed password of root locked$/m);
      expect(await rootPassword()).toBe("!");
      expect((await keelVerifyOnHost(vm)).get("passwords")?.status).toBe("ok");
    }, 5 * MINUTE);

    it("loads none of the kernel modules keel rules out, even when asked; an SCTP socket is refused", async () => {
      const { vm, cfg } = host();
      const modules = modprobeConf(cfg)
        .split("\n")
        .flatMap((l) => l.match(/^install (\S+) \/bin\/true$/)?.[1] ?? []);
      expect(modules.length).toBeGreaterThanOrEqual(13);
      // modprobe runs the install command (/bin/true) instead of loading; /proc/modules uses underscores.
      const loaded = await asRoot(vm, `for m in ${modules.join(" ")}; do modprobe "$m"; done; cut -d' ' -f1 /proc/modules`);
      const names = new Set(loaded.trim().split("\n"));
      expect(modules.filter((m) => names.has(m.replace(/-/g, "_")))).toEqual([]);
      // An unprivileged socket would autoload the module; the protocol stays unsupported.
      expect(await sctpSocketError(vm)).toContain("Protocol not supported");
    }, 5 * MINUTE);

    it("audits with keel's rules: the deploy's sudo calls are on record", async () => {
      const { vm, cfg } = host();
      expect((await sh(vm, "systemctl is-active auditd")).trim()).toBe("active");
      const rules = (await asRoot(vm, "auditctl -l")).split("\n");
      for (const rule of ["-w /etc/keel -p wa -k keel", "-w /usr/local/sbin -p wa -k keel", "-w /etc/sudoers -p wa -k sudoers", "-w /etc/ssh -p wa -k sshd"]) {
        expect(rules).toContain(rule);
      }
      // The converge steps ran `sudo keel-place …` as the deploy user (audit uid: the login's user);
      // the operator reads that through keel-ops, the runbook's root side.
      const events = (await sh(vm, "sudo keel-ops audit sudo-exec week-ago")).split(/^----$/m);
      const place = events.filter((e) => /^type=EXECVE .* a0=sudo a1=\/usr\/local\/sbin\/keel-place( |$)/m.test(e));
      expect(place.length).toBeGreaterThan(0);
      for (const e of place) expect(e).toMatch(new RegExp(`^type=SYSCALL .* auid=${cfg.deployUser} .*exe=/usr/bin/sudo .*key=sudo-exec`, "m"));
      // A write under /etc/ssh is on record with the user who logged in, though root made it.
      const probe = `keel-audit-probe-${Date.now()}`;
      await asRoot(vm, `touch /etc/ssh/${probe} && rm /etc/ssh/${probe}`);
      expect(await sh(vm, "sudo keel-ops audit sshd recent")).toMatch(new RegExp(`name=/etc/ssh/${probe} [\\s\\S]*auid=${cfg.deployUser} `));
    }, 5 * MINUTE);

    it("shows the banner on the console and to network logins, and times idle login shells out", async () => {
      const { vm } = host();
      const banner = readStatic("cloud-init/files/banner.txt");
      expect(await sh(vm, "cat /etc/issue")).toBe(banner);
      expect(await sh(vm, "cat /etc/issue.net")).toBe(banner);
      // A login shell gets TMOUT, read-only; the non-login shell of a pulumi step does not.
      expect((await sh(vm, "bash -lc 'echo $TMOUT; readonly -p | grep -cw TMOUT; bash -c \"echo \\$TMOUT\"; ulimit -c'")).trim().split("\n")).toEqual(["600", "1", "600", "0"]);
      // dash, the other login shell, reads the file too and skips what only bash has, silently.
      expect(await sh(vm, "sh -lc 'echo ok' 2>&1")).toBe("ok\n");
      expect((await sh(vm, "echo \"[${TMOUT:-}]\"")).trim()).toBe("[]");
    }, 5 * MINUTE);

    it("names itself in /etc/hosts, so sudo (every remote step) looks nothing up and warns of nothing", async () => {
      await expectNamesItself(host().vm);
    }, 5 * MINUTE);

    it("keeps time, updates and the engine's layout as planned", async () => {
      const { vm, cfg } = host();
      expect((await sh(vm, "timedatectl show -p Timezone --value")).trim()).toBe("UTC");
      expect((await sh(vm, "systemctl is-active systemd-timesyncd; systemctl is-enabled apt-daily-upgrade.timer unattended-upgrades")).trim().split("\n")).toEqual(["active", "enabled", "enabled"]);
      expect(await sh(vm, "apt-config dump Unattended-Upgrade::Automatic-Reboot APT::Periodic::Unattended-Upgrade APT::Install-Recommends")).toBe(
        'Unattended-Upgrade::Automatic-Reboot "true";\nAPT::Periodic::Unattended-Upgrade "1";\nAPT::Install-Recommends "false";\n',
      );
      // The first boot installed no Recommends: the largest of them (libglib2.0-0's MIME database,
      // which pulls in libxml2 and ICU) is absent; what keel needs of them it names (python3-gi).
      // (dpkg lists a package it has heard of but never installed as "un": only "ii" is installed.)
      expect(await sh(vm, "dpkg-query -W -f='${db:Status-Abbrev} ${Package}\\n' shared-mime-info 'libicu[0-9]*' python3-gi 2>/dev/null | grep '^ii' || true")).toBe("ii  python3-gi\n");
      const dirs = layoutBundle(cfg).dirs ?? [];
      const stat = await asRoot(vm, `stat -c '%n %U:%G 0%a' ${dirs.map((d) => d.path).join(" ")}`);
      expect(stat.trim().split("\n")).toEqual(dirs.map((d) => `${d.path} ${d.owner}:${d.group} ${d.mode}`));
    }, 5 * MINUTE);
  });
}
