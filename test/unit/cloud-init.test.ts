import { readFileSync } from "node:fs";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import Ajv from "ajv-draft-04";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { parseConfig, type KeelConfig } from "../../config";
import { IMAGES } from "../../images";
import { stableJson } from "../../plan/hash";
import { layoutBundle } from "../../plan/hostPlan";
import type { Bundle } from "../../plan/types";
import { REPO_ROOT } from "../../plan/static";
import { toolFiles, TOOLS } from "../../plan/tools";
import { firstBootPackages, HARDENING_PATHS, hardeningFiles } from "../../plan/hardening";
import { DEFAULT_REPO_PACKAGES } from "../../local/vm/image";
import { cloudConfig, enableUnlessEnabled, EARLY_FILES, FIRST_BOOT_BUNDLE, firstBootBundle, gzipBase64, renderCloudConfig, USER_DATA_MAX_BYTES } from "../../cloud-init/userData";
import { imagePython } from "../support/stack";

const ADMIN_KEYS = [
  "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINqq0Bv8sC7o5PLFDEsS8SQAds+XBFfF5FEvGdrrefNn admin1@example",
  "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOcBI0mC9MGwYXOO5rE3Cf0j8sx+6JbpeR0+mJzhHtJj admin2@example",
  "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAID6Jo2OsOiQ3/oA8fYh+kh6clNI1vAcL7EiBFbPI8wBG admin3@example",
];
const RETIRED_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICX/0xYEIijD3s9PJpxOuNLeUVkwH7Y6UKNDi6KFhkFV old-laptop@example";
const CIDRS = ["203.0.113.7/32", "198.51.100.0/24", "192.0.2.128/25", "2001:db8::/48", "2001:db8:1234::/64", "198.18.0.0/15"];

/** A stand-in host key with the shape and size of a real one (unit tests never use it as a key). */
const HOST_KEY = {
  privateKey: `-----BEGIN OPENSSH PRIVATE KEY-----\n${"a2VlbC11bml0LXRlc3QtZml4dHVyZS1ub3QtYS1rZXk".repeat(8).match(/.{1,70}/g)!.join("\n")}\n-----END OPENSSH PRIVATE KEY-----\n`,
  publicKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk7kvufDdUXvtRBtElVeOYlPIgpquanTZLYBczxc9Vf keel-host",
};

function config(overrides: Record<string, string> = {}): KeelConfig {
  return parseConfig({
    "keel:adminKeys": JSON.stringify(ADMIN_KEYS),
    "keel:retiredKeys": JSON.stringify([RETIRED_KEY]),
    "keel:allowedSshCidrs": JSON.stringify(CIDRS),
    "keel:repoUrl": "git@github.com:example/engine.git",
    "keel:repoRef": "0123456789abcdef0123456789abcdef01234567",
    "keel:pythonVersion": imagePython(overrides),
    "keel:startCommand": "python -m engine",
    ...overrides,
  });
}

type Doc = Record<string, any>;
const doc = (cfg: KeelConfig): Doc => parse(renderCloudConfig(cfg, HOST_KEY));
const writeFile = (d: Doc, path: string) => d.write_files.find((f: Doc) => f.path === path);
const decoded = (f: Doc): string => {
  expect(f.encoding).toBe("gz+b64");
  return gunzipSync(Buffer.from(f.content, "base64")).toString("utf8");
};
/** The first-boot bundle keel-place converges first in runcmd, as cloud-init writes it. */
const bundleOf = (d: Doc): Bundle => JSON.parse(decoded(writeFile(d, FIRST_BOOT_BUNDLE)));
/** What the first boot writes at `path`: by cloud-init itself (write_files) or by keel-place from the first-boot bundle. */
const placed = (d: Doc, path: string): { owner: string; permissions: string; text: string } => {
  const f = writeFile(d, path);
  if (f) return { owner: f.owner, permissions: f.permissions, text: decoded(f) };
  const b = bundleOf(d).files.find((x) => x.path === path);
  if (!b) throw new Error(`the first boot writes no ${path}`);
  return { owner: `${b.owner}:${b.group}`, permissions: b.mode, text: b.content };
};
const fileText = (d: Doc, path: string): string => placed(d, path).text;
const runcmd = (d: Doc): string[] => d.runcmd.map((c: string | string[]) => (Array.isArray(c) ? c.join(" ") : c));

describe("renderCloudConfig", () => {
  it("is deterministic: the same config and key give the same bytes", () => {
    const a = renderCloudConfig(config(), HOST_KEY);
    const b = renderCloudConfig(structuredClone(config()), { ...HOST_KEY });
    expect(b).toBe(a);
    expect(a.startsWith("#cloud-config\n")).toBe(true);
  });

  it("emits YAML that reads back as exactly the cloud-config data (host key bytes included)", () => {
    const cfg = config();
    const d = doc(cfg);
    expect(d).toEqual(cloudConfig(cfg, HOST_KEY));
    expect(d.ssh_keys.ed25519_private).toBe(HOST_KEY.privateKey);
  });

  it("stays under Hetzner's 32 KiB user-data limit with several admin keys and CIDRs, on every image", () => {
    for (const image of IMAGES) {
      const size = Buffer.byteLength(renderCloudConfig(config({ "keel:image": image, "keel:sshPort": "2222" }), HOST_KEY));
      expect(size).toBeLessThan(USER_DATA_MAX_BYTES);
    }
  });

  it("refuses user-data Hetzner would reject, saying what makes it large", () => {
    const many = Array.from({ length: 300 }, (_, i) => ADMIN_KEYS[i % 3].replace(/ \S+$/, ` admin${i}@example`));
    expect(() => renderCloudConfig(config({ "keel:adminKeys": JSON.stringify(many) }), HOST_KEY)).toThrow(
      /over Hetzner's limit of 32768; fewer keel:adminKeys or keel:allowedSshCidrs/,
    );
  });

  it("refuses a host key that is not an OpenSSH ED25519 key pair", () => {
    expect(() => renderCloudConfig(config(), { ...HOST_KEY, privateKey: "-----BEGIN RSA PRIVATE KEY-----\nx\n" })).toThrow(/OpenSSH private key/);
    expect(() => renderCloudConfig(config(), { ...HOST_KEY, publicKey: "ecdsa-sha2-nistp256 AAAA" })).toThrow(/ED25519 key in OpenSSH form/);
  });
});

describe("cloud-config schema (cloud-init 26.1, what Ubuntu 24.04 runs)", () => {
  const schema = JSON.parse(readFileSync(join(REPO_ROOT, "test", "fixtures", "cloud-init", "cloud-config-schema-v1.json"), "utf8"));
  const ajv = new Ajv({ allErrors: true, strict: false, validateFormats: false });
  // A key the schema marks deprecated makes cloud-init report a warning, and `cloud-init status`
  // exit 2: treat it as invalid here.
  ajv.addKeyword({ keyword: "deprecated", schemaType: "boolean", validate: (deprecated: boolean) => !deprecated });
  const validate = ajv.compile(schema);

  for (const image of IMAGES) {
    it(`accepts the user-data for ${image}, with no deprecated key`, () => {
      const ok = validate(doc(config({ "keel:image": image })));
      expect(validate.errors ?? []).toEqual([]);
      expect(ok).toBe(true);
    });
  }

  it("would catch a deprecated key (the check can fail)", () => {
    const d = doc(config());
    d.users[0]["lock-passwd"] = true;
    expect(validate(d)).toBe(false);
  });
});

describe("the deploy user", () => {
  const d = doc(config());
  const user = d.users[0];

  it("is the only user, with exactly the admin keys and no retired key", () => {
    expect(d.users).toHaveLength(1);
    expect(user.name).toBe("deploy");
    expect(user.ssh_authorized_keys).toEqual(ADMIN_KEYS);
    expect(renderCloudConfig(config(), HOST_KEY)).not.toContain(RETIRED_KEY.split(" ")[1]);
  });

  it("has no password, reads the journal, and may sudo only keel's tools", () => {
    expect(user.lock_passwd).toBe(true);
    expect(user.groups).toEqual(["systemd-journal"]);
    // The rule is keel's sudoers file, not cloud-init's: first boot and `pulumi up` write the same one.
    expect(user.sudo).toBeUndefined();
    const d = doc(config({ "keel:deployUser": "ops" }));
    expect(placed(d, HARDENING_PATHS.sudoers)).toMatchObject({ owner: "root:root", permissions: "0440" });
    const rules = fileText(d, HARDENING_PATHS.sudoers).split("\n").filter((l) => l && !l.startsWith("#"));
    expect(rules).toEqual(["Defaults ignore_dot", "Defaults umask=0077", "Defaults noexec", "ops ALL=(root) NOPASSWD:EXEC: /usr/local/sbin/keel-*"]);
  });

  it("takes the name from keel:deployUser", () => {
    expect(doc(config({ "keel:deployUser": "ops" })).users[0].name).toBe("ops");
  });

  it("leaves root without SSH and passwords off", () => {
    expect(d.disable_root).toBe(true);
    expect(d.ssh_pwauth).toBe(false);
    expect(d.allow_public_ssh_keys).toBe(false);
  });
});

describe("the host key", () => {
  it("is the program's ED25519 key, and no other key is kept", () => {
    const d = doc(config());
    expect(d.ssh_keys).toEqual({ ed25519_private: HOST_KEY.privateKey, ed25519_public: HOST_KEY.publicKey });
    expect(d.ssh_deletekeys).toBe(true);
    expect(d.ssh_genkeytypes).toEqual(["ed25519"]);
    expect(runcmd(d)).toContain("find /etc/ssh -maxdepth 1 -name ssh_host_* ! -name ssh_host_ed25519_key* -delete");
  });

  it("is protected after first boot: metadata root-only, cloud-init's copies and logs root-only", () => {
    const cmds = runcmd(doc(config()));
    expect(cmds).toContain("systemctl enable --no-reload keel-metadata-guard.service");
    expect(cmds).toContain("find /var/lib/cloud/instances -type f -exec chmod go-rwx {} +");
    expect(cmds).toContain("find /var/log -maxdepth 1 -name cloud-init*.log -type f -exec chmod 0600 {} +");
  });
});

describe("write_files", () => {
  const cfg = config();
  const d = doc(cfg);

  it("comes from keel-place, the hardening files needed before packages and sshd, and the first-boot bundle, nothing else", () => {
    const place = toolFiles().filter((f) => f.path === "/usr/local/sbin/keel-place");
    const early = hardeningFiles(cfg).filter((f) => EARLY_FILES.includes(f.path));
    expect(early.map((f) => f.path).sort()).toEqual([...EARLY_FILES].sort());
    expect(d.write_files.map((f: Doc) => f.path)).toEqual([...place, ...early].map((f) => f.path).concat(FIRST_BOOT_BUNDLE));
    for (const f of [...place, ...early]) {
      const { content, ...meta } = writeFile(d, f.path);
      expect(meta).toEqual({ path: f.path, owner: `${f.owner}:${f.group}`, permissions: f.mode, encoding: "gz+b64" });
      expect(content).toBe(gzipBase64(f.content));
    }
  });

  it("writes every hardening file with the hardening steps' bytes, owner and mode, in write_files or the bundle", () => {
    for (const f of hardeningFiles(cfg)) {
      expect(placed(d, f.path), f.path).toEqual({ owner: `${f.owner}:${f.group}`, permissions: f.mode, text: f.content });
    }
  });

  it("installs keel-place byte for byte, root-owned and executable", () => {
    const place = writeFile(d, "/usr/local/sbin/keel-place");
    expect(fileText(d, place.path)).toBe(readFileSync(join(REPO_ROOT, TOOLS.place), "utf8"));
    expect(place.permissions).toBe("0755");
    expect(place.owner).toBe("root:root");
  });

  it("hands keel-place the layout step's bundle with the other hardening files and the bounded modes, and runs it first", () => {
    const bundle = writeFile(d, FIRST_BOOT_BUNDLE);
    expect(fileText(d, bundle.path)).toBe(stableJson(firstBootBundle(cfg)) + "\n");
    expect(bundle.permissions).toBe("0600");
    const layout = layoutBundle(cfg);
    const b = bundleOf(d);
    expect(b.users).toEqual(layout.users);
    expect(b.dirs).toEqual([...(layout.dirs ?? []), { path: "/etc/sudoers.d", owner: "root", group: "root", mode: "0750" }]);
    expect(b.modes).toEqual(expect.arrayContaining([...(layout.modes ?? []), { path: HARDENING_PATHS.sshdConfig, owner: "root", mode: "0600" }]));
    expect(b.check).toBeUndefined();
    expect(b.onChange).toBeUndefined();
    expect(b.files.map((f) => f.path).sort()).toEqual(hardeningFiles(cfg).map((f) => f.path).filter((p) => !EARLY_FILES.includes(p)).sort());
    expect(runcmd(d).slice(0, 2)).toEqual(["set -eu", `/usr/local/sbin/keel-place < ${FIRST_BOOT_BUNDLE}`]);
  });
});

describe("sshd drop-in", () => {
  const dropIn = (image: string, port = "22") => fileText(doc(config({ "keel:image": image, "keel:sshPort": port })), HARDENING_PATHS.sshdDropIn);
  const kex = (text: string) => text.match(/^KexAlgorithms (.*)$/m)![1].split(",");

  it("is read before cloud-init's and the image's drop-ins", () => {
    expect(HARDENING_PATHS.sshdDropIn).toBe("/etc/ssh/sshd_config.d/00-keel.conf");
  });

  it("allows keys only, the deploy user only, no root and no forwarding", () => {
    const text = dropIn("ubuntu-24.04");
    for (const line of [
      "AuthenticationMethods publickey",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "PermitRootLogin no",
      "AllowUsers deploy",
      "MaxAuthTries 6",
      "LoginGraceTime 20",
      "MaxStartups 20:30:60",
      "AllowTcpForwarding no",
      "AllowAgentForwarding no",
      "X11Forwarding no",
      "PermitTunnel no",
      "LogLevel VERBOSE",
      "ClientAliveInterval 300",
      "ClientAliveCountMax 2",
      "HostKey /etc/ssh/ssh_host_ed25519_key",
      "HostKeyAlgorithms ssh-ed25519",
      "Ciphers chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes128-gcm@openssh.com",
      "MACs hmac-sha2-512-etm@openssh.com,hmac-sha2-256-etm@openssh.com",
      "Port 22",
    ]) {
      expect(text.split("\n")).toContain(line);
    }
    expect(text.match(/^HostKey /gm)).toHaveLength(1);
  });

  it("offers post-quantum key exchange first, only where the image's OpenSSH has it, and always curve25519-sha256", () => {
    expect(kex(dropIn("debian-12"))).toEqual(["sntrup761x25519-sha512@openssh.com", "curve25519-sha256", "curve25519-sha256@libssh.org"]);
    expect(kex(dropIn("ubuntu-24.04"))).toEqual(["sntrup761x25519-sha512@openssh.com", "curve25519-sha256", "curve25519-sha256@libssh.org"]);
    for (const image of ["debian-13", "ubuntu-26.04"]) {
      expect(kex(dropIn(image)), image).toEqual([
        "mlkem768x25519-sha256",
        "sntrup761x25519-sha512",
        "sntrup761x25519-sha512@openssh.com",
        "curve25519-sha256",
        "curve25519-sha256@libssh.org",
      ]);
    }
  });

  it("exempts the admin CIDRs from OpenSSH 9.8+ per-source penalties (Debian 13 and Ubuntu 26.04; older sshd would refuse the keyword)", () => {
    expect(dropIn("debian-13")).toContain(`PerSourcePenaltyExemptList ${CIDRS.join(",")}`);
    expect(dropIn("ubuntu-26.04")).toContain(`PerSourcePenaltyExemptList ${CIDRS.join(",")}`);
    expect(dropIn("ubuntu-26.04")).toContain("keel:image = ubuntu-26.04 with OpenSSH 10.2");
    expect(dropIn("debian-12")).not.toContain("PerSourcePenalty");
    expect(dropIn("ubuntu-24.04")).not.toContain("PerSourcePenalty");
  });

  it("listens on keel:sshPort", () => {
    expect(dropIn("debian-12", "2222").split("\n")).toContain("Port 2222");
  });
});

describe("custom SSH port", () => {
  const restartAt = (cmds: string[]) => cmds.indexOf("systemctl restart ssh.service");

  it("on Ubuntu 24.04 and 26.04 replaces socket activation (ssh.socket listens on 22) with sshd as a service", () => {
    for (const image of ["ubuntu-24.04", "ubuntu-26.04"]) {
      const cmds = runcmd(doc(config({ "keel:image": image, "keel:sshPort": "2222" })));
      // Disabled where the image has the unit (a release without it has nothing listening for it).
      const disable = cmds.indexOf("! systemctl cat ssh.socket >/dev/null 2>&1 || systemctl disable --now ssh.socket");
      const enable = cmds.indexOf("systemctl enable ssh.service");
      expect(disable, image).toBeGreaterThan(0);
      expect(enable, image).toBeGreaterThan(disable);
      expect(restartAt(cmds), image).toBeGreaterThan(enable);
    }
  });

  it("on Debian restarts the plain ssh.service and leaves sockets alone", () => {
    for (const image of ["debian-12", "debian-13"]) {
      const cmds = runcmd(doc(config({ "keel:image": image, "keel:sshPort": "2222" })));
      expect(cmds.some((c) => c.includes("ssh.socket"))).toBe(false);
      expect(restartAt(cmds)).toBeGreaterThan(0);
    }
  });

  it("opens the same port in UFW and watches it in fail2ban", () => {
    const d = doc(config({ "keel:sshPort": "2222" }));
    expect(fileText(d, HARDENING_PATHS.ufwConf).split("\n")).toContain("port 2222");
    expect(fileText(d, HARDENING_PATHS.fail2banJail).split("\n")).toContain("port = 2222");
  });
});

describe("firewall, fail2ban, updates, time and disk", () => {
  const d = doc(config({ "keel:timezone": "Europe/Berlin", "keel:minFreeDiskGiB": "7" }));
  const cmds = runcmd(d);

  it("allows SSH from the admin CIDRs only, with no rate limit", () => {
    const conf = fileText(d, HARDENING_PATHS.ufwConf);
    expect(conf.split("\n").filter((l: string) => l.startsWith("allow "))).toEqual(CIDRS.map((c) => `allow ${c}`));
    expect(cmds).toContain(`${HARDENING_PATHS.ufwApply} ${HARDENING_PATHS.ufwConf}`);
    expect(readFileSync(join(REPO_ROOT, "cloud-init", "files", "ufw-apply.sh"), "utf8")).not.toMatch(/ufw limit/);
  });

  it("never bans loopback or the admins' own networks, reads the journal and bans with nftables, incrementally", () => {
    const jail = fileText(d, HARDENING_PATHS.fail2banJail).split("\n");
    // 198.18.0.0/15 is broader than a /16: an allowed source, but not exempt from bans.
    expect(jail).toContain(`ignoreip = 127.0.0.1/8 ::1 ${CIDRS.filter((c) => c !== "198.18.0.0/15").join(" ")}`);
    expect(jail).toContain("backend = systemd");
    expect(jail).toContain("banaction = nftables-multiport");
    expect(jail).toContain("bantime.increment = true");
    expect(d.packages).toContain("python3-systemd");
    expect(cmds).toContain("fail2ban-client --test");
    expect(cmds).toContain("systemctl is-enabled --quiet fail2ban.service || systemctl enable fail2ban.service");
  });

  it("keeps Ubuntu 26.04's own time client, chrony with NTS: never installs systemd-timesyncd, which would make apt remove chrony", () => {
    const u = doc(config({ "keel:image": "ubuntu-26.04" }));
    expect(u.packages).toEqual(firstBootPackages("ubuntu-26.04"));
    expect(u.packages).toContain("chrony");
    expect(u.packages).not.toContain("systemd-timesyncd");
    const ucmds = runcmd(u);
    expect(ucmds).toContain(enableUnlessEnabled("chrony.service", { now: true }));
    expect(ucmds.filter((c) => c.includes("timesyncd"))).toEqual([]);
    // The other lists are the same but for the time client.
    expect(firstBootPackages("ubuntu-26.04").filter((p) => p !== "chrony")).toEqual(firstBootPackages("debian-13").filter((p) => p !== "systemd-timesyncd"));
  });

  it("updates and upgrades packages, installs exactly the package list, sets the time zone and NTP", () => {
    expect(d.package_update).toBe(true);
    expect(d.package_upgrade).toBe(true);
    expect(d.packages).toEqual(firstBootPackages("ubuntu-24.04"));
    expect(d.packages).toEqual([
      "auditd", "debsums", "fail2ban", "git", "nftables", "python3-gi", "python3-systemd", "python3-venv", "sqlite3", "systemd-timesyncd", "ufw", "unattended-upgrades",
    ]);
    expect(d.timezone).toBe("Europe/Berlin");
    expect(doc(config()).timezone).toBe("UTC");
    expect(cmds).toContain("{ systemctl is-enabled --quiet systemd-timesyncd.service && systemctl is-active --quiet systemd-timesyncd.service; } || systemctl enable --now systemd-timesyncd.service");
    expect(fileText(d, HARDENING_PATHS.aptUnattended)).toContain('Unattended-Upgrade::Automatic-Reboot "true";');
    expect(fileText(d, HARDENING_PATHS.aptPeriodic)).toContain('APT::Periodic::Unattended-Upgrade "1";');
    // No Recommends, from the first install on: written by write_files, which cloud-init runs in its
    // init stage, before package-update-upgrade-install (a final-stage module).
    expect(fileText(d, HARDENING_PATHS.aptNoRecommends)).toMatch(/^APT::Install-Recommends "false";$/m);
    expect(d.packages).toContain("python3-gi");
  });

  it("fails the first boot loudly, as its last command, when the disk has less than keel:minFreeDiskGiB free", () => {
    expect(cmds[0]).toBe("set -eu");
    expect(cmds.at(-1)).toBe(`${HARDENING_PATHS.checkFreeDisk} / 7`);
  });

  it("keeps the journal, capped, and turns core dumps off", () => {
    expect(fileText(d, HARDENING_PATHS.journald)).toMatch(/^Storage=persistent$[\s\S]*^SystemMaxUse=1G$/m);
    expect(fileText(d, HARDENING_PATHS.sysctl)).toMatch(/^kernel\.core_pattern = \|\/bin\/false$/m);
    expect(fileText(d, HARDENING_PATHS.coreLimits)).toMatch(/^\* hard core 0$/m);
    // Ubuntu's apport would replace the core_pattern at every boot; Debian has no apport.
    expect(cmds).toContain("systemctl mask apport.service");
    expect(runcmd(doc(config({ "keel:image": "ubuntu-26.04" })))).toContain("systemctl mask apport.service");
    expect(runcmd(doc(config({ "keel:image": "debian-12" }))).filter((c) => c.includes("apport"))).toEqual([]);
  });

  it("shows the login banner on SSH and the console", () => {
    const banner = readFileSync(join(REPO_ROOT, "cloud-init", "files", "banner.txt"), "utf8");
    expect(banner).toMatch(/^Authorized access only\./);
    expect(fileText(d, HARDENING_PATHS.sshBanner)).toBe(banner);
    expect(fileText(d, HARDENING_PATHS.consoleBanner)).toBe(banner);
    expect(fileText(d, HARDENING_PATHS.networkBanner)).toBe(banner);
    expect(HARDENING_PATHS.consoleBanner).toBe("/etc/issue");
    expect(HARDENING_PATHS.networkBanner).toBe("/etc/issue.net");
    expect(fileText(d, HARDENING_PATHS.sshdDropIn)).toContain(`Banner ${HARDENING_PATHS.sshBanner}`);
    // /etc/issue and /etc/issue.net are base-files conffiles: a changed conffile must never hold
    // back a security update (unattended-upgrades skips packages that would ask).
    expect(fileText(d, HARDENING_PATHS.aptUnattended)).toContain('Dpkg::Options { "--force-confdef"; "--force-confold"; };');
  });

  it("makes the modules a cloud server never needs unloadable; squashfs only where no snap needs it", () => {
    const lines = (image: string) => fileText(doc(config({ "keel:image": image })), HARDENING_PATHS.modprobe).split("\n").filter((l) => l && !l.startsWith("#"));
    const common = ["dccp", "sctp", "rds", "tipc", "usb-storage", "firewire-core", "firewire-ohci", "cramfs", "freevxfs", "jffs2", "hfs", "hfsplus", "udf"];
    for (const image of IMAGES) {
      for (const m of common) expect(lines(image), `${image} ${m}`).toContain(`install ${m} /bin/true`);
    }
    for (const m of ["usb-storage", "firewire-core", "firewire-ohci"]) expect(lines("debian-12")).toContain(`blacklist ${m}`);
    expect(lines("debian-12")).toContain("install squashfs /bin/true");
    expect(lines("ubuntu-24.04").filter((l) => l.includes("squashfs"))).toEqual([]);
    expect(lines("ubuntu-26.04").filter((l) => l.includes("squashfs"))).toEqual([]);
  });

  it("times idle login shells out, read-only, and keeps them from writing core files", () => {
    const profile = fileText(d, HARDENING_PATHS.loginShell).split("\n");
    expect(HARDENING_PATHS.loginShell).toMatch(/^\/etc\/profile\.d\/[a-z-]+\.sh$/);
    expect(profile).toEqual(expect.arrayContaining(["  declare -xr TMOUT=600", "ulimit -c 0"]));
  });

  it("records accounts, sudo, SSH, keel's tools and config, modules and the clock with auditd", () => {
    const rules = fileText(d, HARDENING_PATHS.auditRules).split("\n").filter((l) => l && !l.startsWith("#"));
    for (const watched of ["/etc/passwd", "/etc/shadow", "/etc/sudoers", "/etc/sudoers.d", "/etc/ssh", "/usr/local/sbin", "/usr/local/lib/keel", "/etc/keel", "/etc/systemd/system", "/etc/localtime"]) {
      expect(rules.some((r) => r.startsWith(`-w ${watched} -p wa -k `)), watched).toBe(true);
    }
    expect(rules).toContain("-a always,exit -F path=/usr/bin/sudo -F perm=x -F auid>=1000 -F auid!=unset -k sudo-exec");
    // An audit path rule matches the executable itself; Ubuntu 26.04's /usr/bin/sudo is a link to sudo-rs.
    const sudoRules = (image: string) => fileText(doc(config({ "keel:image": image })), HARDENING_PATHS.auditRules).split("\n").filter((l) => l.includes("sudo-exec"));
    expect(sudoRules("ubuntu-26.04")).toEqual([
      "-a always,exit -F path=/usr/lib/cargo/bin/sudo -F perm=x -F auid>=1000 -F auid!=unset -k sudo-exec",
      "-a always,exit -F path=/usr/bin/sudo.ws -F perm=x -F auid>=1000 -F auid!=unset -k sudo-exec",
    ]);
    for (const image of ["debian-12", "debian-13", "ubuntu-24.04"]) expect(sudoRules(image), image).toEqual([rules.find((r) => r.includes("sudo-exec"))]);
    expect(rules.some((r) => r.includes("-S init_module,finit_module,delete_module"))).toBe(true);
    // b64 only: valid on x86_64 (cx) and aarch64 (cax) alike; a rule auditctl rejects would fail the first boot.
    expect(rules.filter((r) => r.includes("arch=") && !r.includes("arch=b64"))).toEqual([]);
    // Auditing on (-e 1), never locked (-e 2): a locked rule set would need a reboot for every change pulumi up makes.
    expect(rules.filter((r) => r.startsWith("-e"))).toEqual(["-e 1"]);
    expect(d.packages).toContain("auditd");
    expect(cmds.indexOf(enableUnlessEnabled("auditd.service", { now: true }))).toBeLessThan(cmds.indexOf("augenrules --load"));
    expect(cmds.indexOf(enableUnlessEnabled("auditd.service", { now: true }))).toBeGreaterThan(0);
    expect(cmds.indexOf("augenrules --load")).toBeGreaterThan(0);
  });

  it("installs only packages the VM runner's image has, installed or in its offline repository", () => {
    const script = readFileSync(join(REPO_ROOT, "local", "vm", "build-image.sh"), "utf8");
    const base = script.match(/^base_packages=\(([^)]*)\)/m)![1].split(/\s+/).filter(Boolean);
    for (const image of ["debian-12", "debian-13"] as const) {
      for (const p of firstBootPackages(image)) expect([...DEFAULT_REPO_PACKAGES, ...base], `${image} ${p}`).toContain(p);
    }
  });
});
