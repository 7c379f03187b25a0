import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { ConfigError, configSchema, parseConfig } from "../../config";
import { stackConfig, REPO, ADMIN_KEY, OTHER_KEY, minimalRaw } from "../support/stack";

/** Minimal valid raw config, as the Pulumi engine hands it over (strings, JSON for lists). */
const minimal = minimalRaw;

function problems(raw: Record<string, string>, isSecret?: (k: string) => boolean): string[] {
  try {
    parseConfig(raw, isSecret);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as ConfigError).problems;
  }
  throw new Error("expected the config to be rejected");
}

describe("stack config", () => {
  it("fills every default and derives the rest", () => {
    const cfg = parseConfig(minimal());
    expect(cfg).toMatchObject({
      location: "fsn1",
      serverType: "cx23",
      image: "ubuntu-24.04",
      ipv4: true,
      hetznerBackups: false,
      protect: true,
      sshPort: 22,
      deployUser: "deploy",
      appName: "engine",
      dbFile: "engine.db",
      timezone: "UTC",
      backupRetention: 14,
      retiredKeys: [],
      secretEnvNames: [],
    });
    // GitHub URLs get GitHub's published host key pinned: no trust on first use.
    expect(cfg.gitKnownHosts).toEqual([expect.stringMatching(/^github\.com ssh-ed25519 AAAA/)]);
  });

  it("keeps a version like 3.10 as text (the engine hands scalars over as strings), and refuses one that is not the image's Python", () => {
    // "3.10" read as a number would be 3.1; the message shows the text as set.
    expect(problems(minimal({ "keel:pythonVersion": "3.10" }))).toEqual([
      'keel:pythonVersion: keel:image ubuntu-24.04 ships Python 3.12; found "3.10". fix: test the engine on Python 3.12, then pulumi config set keel:pythonVersion 3.12 (keel\'s images ship Python 3.12 on ubuntu-24.04, 3.14 on ubuntu-26.04, 3.11 on debian-12, 3.13 on debian-13)',
    ]);
    // Set to a new image, the Python left behind: both ways out are commands.
    expect(problems(minimal({ "keel:image": "ubuntu-26.04", "keel:pythonVersion": "3.12" }))).toEqual([
      'keel:pythonVersion: keel:image ubuntu-26.04 ships Python 3.14; found "3.12". fix: test the engine on Python 3.14, then pulumi config set keel:pythonVersion 3.14; or, to stay on Python 3.12, pulumi config set keel:image ubuntu-24.04',
    ]);
  });

  it("accepts Ubuntu 26.04 with its Python 3.14", () => {
    const cfg = parseConfig(minimal({ "keel:image": "ubuntu-26.04", "keel:pythonVersion": "3.14" }));
    expect([cfg.image, cfg.pythonVersion]).toEqual(["ubuntu-26.04", "3.14"]);
  });

  it("accepts both checked-in stack files", () => {
    for (const stack of ["prod", "staging"]) {
      const { raw, secretKeys } = stackConfig(stack);
      const cfg = parseConfig(raw, (k) => secretKeys.includes(k));
      expect(cfg.adminKeys.length).toBeGreaterThan(0);
    }
    const secret = (k: string) => k === "keel:secretEnv" || k === "hcloud:token";
    expect(parseConfig(stackConfig("prod").raw, secret).protect).toBe(true);
    expect(parseConfig(stackConfig("staging").raw, secret).protect).toBe(false);
  });

  it("accepts arm server types and Debian images", () => {
    const cfg = parseConfig(minimal({ "keel:serverType": "cax11", "keel:image": "debian-13" }));
    expect([cfg.serverType, cfg.image]).toEqual(["cax11", "debian-13"]);
  });

  it("names the key, the expected form, the value found and the fix for each problem", () => {
    const found = problems(minimal({ "keel:adminKeys": JSON.stringify([ADMIN_KEY, "ssh-rsa AAAAB3NzaC1yc2E bob"]) }));
    expect(found).toEqual([
      "keel:adminKeys[1]: expected an ED25519 public key line: 'ssh-ed25519 AAAAC3Nza… comment'; found \"ssh-rsa AAAAB3NzaC1yc2E bob\". fix: pulumi config set --path 'keel:adminKeys[1]' <value>  (or edit Pulumi.<stack>.yaml)",
    ]);
  });

  it("reports every problem at once, in one error", () => {
    const raw = minimal({
      "keel:location": "mars1",
      "keel:serverType": "cx22",
      "keel:ipv4": "maybe",
      "keel:sshPort": "70000",
      "keel:allowedSshCidrs": JSON.stringify(["203.0.113.10/33"]),
      "keel:timezone": "Mars/Olympus",
      "keel:deployUser": "root",
    });
    let message = "";
    try {
      parseConfig(raw);
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toMatch(/^keel: invalid stack config \(7 problems\):/);
    expect(message).toContain('keel:location: expected one of fsn1, nbg1, hel1, ash, hil, sin; found "mars1"');
    expect(message).toContain('keel:serverType: expected a server type Hetzner still sells (e.g. cx23; cx22 and older are retired); found "cx22"');
    expect(message).toContain('keel:ipv4: expected a boolean; found "maybe"');
    expect(message).toContain("keel:sshPort: expected a number <= 65535; found 70000");
    expect(message).toContain(`keel:allowedSshCidrs[0]: expected a CIDR such as 203.0.113.7/32 or 2001:db8::/48 (the prefix length must be 0 to 32 after a '/'); found "203.0.113.10/33"`);
    expect(message).toContain('keel:timezone: expected an IANA time zone such as UTC or Europe/Berlin; found "Mars/Olympus"');
    expect(message).toContain(`keel:deployUser: expected a name of its own, not a system or reserved name (a user, group or unit that the image or keel's first boot already has); found "root"`);
  });

  it("refuses an EU-only server type outside the EU, before anything is ordered", () => {
    for (const [serverType, location] of [["cx23", "ash"], ["cax11", "sin"], ["cx33", "hil"]]) {
      expect(problems(minimal({ "keel:serverType": serverType, "keel:location": location }))).toEqual([
        expect.stringMatching(new RegExp(`^keel:serverType: ${serverType} \\(a ca?x\\* type\\) is sold in fsn1, nbg1 and hel1 only; keel:location is ${location}\\. fix: `)),
      ]);
    }
    expect(parseConfig(minimal({ "keel:serverType": "cpx21", "keel:location": "ash" })).location).toBe("ash");
    expect(parseConfig(minimal({ "keel:serverType": "cx23", "keel:location": "hel1" })).serverType).toBe("cx23");
  });

  it("refuses an IPv6-only server that must clone from GitHub (no IPv6 there)", () => {
    for (const repoUrl of ["git@github.com:example-org/engine.git", "ssh://git@github.com/example-org/engine.git"]) {
      expect(problems(minimal({ "keel:ipv4": "false", "keel:repoUrl": repoUrl }))).toEqual([
        expect.stringMatching(/^keel:ipv4: false, but keel:repoUrl is on github\.com, which serves git over IPv4 only: .* fix: pulumi config set keel:ipv4 true/),
      ]);
    }
    expect(parseConfig(minimal({ "keel:ipv4": "false", "keel:repoUrl": "file:///srv/engine.git" })).ipv4).toBe(false);
  });

  it("says which required key is missing and what it is for", () => {
    const raw = minimal();
    delete raw["keel:repoRef"];
    expect(problems(raw)).toEqual([
      "keel:repoRef: required, found nothing (the key is not set): The pinned 40-character commit to deploy. fix: pulumi config set keel:repoRef <value>  (or edit Pulumi.<stack>.yaml)",
    ]);
  });

  it("requires at least one admin key and one CIDR", () => {
    const found = problems(minimal({ "keel:adminKeys": "[]", "keel:allowedSshCidrs": "[]" }));
    expect(found).toEqual([
      expect.stringMatching(/^keel:adminKeys: expected at least one admin key; found \[\]/),
      expect.stringMatching(/^keel:allowedSshCidrs: expected at least one CIDR; found \[\]/),
    ]);
  });

  it("rejects an unknown key instead of ignoring a typo", () => {
    expect(problems(minimal({ "keel:sshport": "2222" }))).toEqual([expect.stringMatching(/^keel:sshport: unknown key\. Known keys: .*sshPort.*fix: pulumi config rm keel:sshport/)]);
  });

  it("rejects a secret given in plaintext, and never echoes a secret value", () => {
    const plaintext = problems(minimal({ "keel:secretEnv": JSON.stringify({ API_KEY: "hunter2-canary" }) }));
    expect(plaintext).toEqual([expect.stringMatching(/^keel:secretEnv: must be a secret, found a plaintext value\. fix: pulumi config rm keel:secretEnv/)]);
    expect(plaintext.join("\n")).not.toContain("hunter2-canary");

    const badShape = problems(minimal({ "keel:secretEnv": JSON.stringify({ "api-key": "hunter2-canary", EMPTY: "" }) }), (k) => k === "keel:secretEnv");
    expect(badShape).toHaveLength(2);
    expect(badShape[0]).toMatch(/^keel:secretEnv\.api-key: expected an environment variable name/);
    expect(badShape[1]).toMatch(/^keel:secretEnv\.EMPTY: expected a non-empty single-line string; found another value \(not shown\)/);
    expect(badShape.join("\n")).not.toContain("hunter2-canary");
  });

  // The unit's EnvironmentFile= reaches its "+" commands, which run as root (the session backups).
  it("refuses secretEnv names that change how programs run: the loader's, the shell's, the locale's, keel's own", () => {
    const names = ["LD_PRELOAD", "LD_LIBRARY_PATH", "PATH", "BASH_ENV", "ENV", "SHELLOPTS", "PS4", "IFS", "TMPDIR", "GCONV_PATH", "LC_ALL", "KEEL_OPS_LOCK_WAIT", "BASH_FUNC_X%%"];
    const found = problems(minimal({ "keel:secretEnv": JSON.stringify(Object.fromEntries(names.map((n) => [n, "hunter2-canary"]))) }), (k) => k === "keel:secretEnv");
    expect(found.filter((p) => p.includes("which changes how programs run"))).toHaveLength(names.length - 1); // BASH_FUNC_X%% is no name at all
    expect(found.join("\n")).toContain("keel:secretEnv.LD_PRELOAD: expected a name of the engine's own; found LD_PRELOAD");
    expect(found.join("\n")).not.toContain("hunter2-canary");
    expect(parseConfig(minimal({ "keel:secretEnv": JSON.stringify({ PATHFINDER_KEY: "x", MY_PATH: "y" }) }), (k) => k === "keel:secretEnv").secretEnvNames).toEqual(["MY_PATH", "PATHFINDER_KEY"]);
  });

  it("takes the secret variable names from the secret, sorted", () => {
    const cfg = parseConfig(minimal({ "keel:secretEnv": JSON.stringify({ ZED: "1", API_KEY: "2" }) }), (k) => k === "keel:secretEnv");
    expect(cfg.secretEnvNames).toEqual(["API_KEY", "ZED"]);
  });

  it("rejects a non-secret key set as a secret (it would be hidden from review)", () => {
    expect(problems(minimal(), (k) => k === "keel:repoUrl")).toEqual([expect.stringMatching(/^keel:repoUrl: is not a secret setting/)]);
  });

  it("requires pinned known_hosts for a git host other than GitHub", () => {
    expect(problems(minimal({ "keel:repoUrl": "git@git.example.com:org/engine.git" }))).toEqual([
      expect.stringMatching(/^keel:gitKnownHosts: expected the git host's known_hosts lines for "git@git.example.com:org\/engine.git"; found nothing/),
    ]);
  });

  it("refuses a retired key that is still an admin key", () => {
    expect(problems(minimal({ "keel:retiredKeys": JSON.stringify([ADMIN_KEY.replace(/ \S+$/, " renamed")]) }))).toEqual([
      expect.stringMatching(/^keel:retiredKeys: the key .* is also in keel:adminKeys/),
    ]);
    expect(parseConfig(minimal({ "keel:retiredKeys": JSON.stringify([OTHER_KEY]) })).retiredKeys).toEqual([OTHER_KEY]);
  });

  it("refuses appName and deployUser names the image or keel already has, and a deployUser equal to appName", () => {
    expect(problems(minimal({ "keel:appName": "keel-health" }))).toEqual([expect.stringMatching(/^keel:appName: expected a name of its own, not a system or reserved name \(keel's own units and paths use keel and keel-\*\)/)]);
    expect(parseConfig(minimal({ "keel:deployUser": "keel-ops-team" })).deployUser).toBe("keel-ops-team");
    for (const name of ["root", "ssh", "keel", "daemon", "sshd", "systemd", "systemd-network", "systemd-anything", "debian", "ubuntu", "backup", "dpkg", "apt", "pam", "rescue"]) {
      for (const key of ["appName", "deployUser"]) {
        expect(problems(minimal({ [`keel:${key}`]: name })), `${key} ${name}`).toEqual([expect.stringMatching(new RegExp(`^keel:${key}: expected a name of its own, not a system or reserved name \\(.+\\); found "${name}"`))]);
      }
    }
    expect(problems(minimal({ "keel:appName": "ops", "keel:deployUser": "ops" }))).toEqual([
      "keel:deployUser: must differ from keel:appName (ops): the engine would run as the user that has sudo. fix: pulumi config set keel:deployUser deploy, or pick another keel:appName",
    ]);
    expect(parseConfig(minimal({ "keel:appName": "billing", "keel:deployUser": "ops" }))).toMatchObject({ appName: "billing", deployUser: "ops" });
  });

  it("refuses a malformed CIDR (IPv6 too) and one with host bits set, naming the network meant", () => {
    const cidrProblems = (cidr: string) => problems(minimal({ "keel:allowedSshCidrs": JSON.stringify([cidr]) }));
    expect(cidrProblems("203.0.113.7/24")).toEqual([
      `keel:allowedSshCidrs[0]: expected a CIDR such as 203.0.113.7/32 or 2001:db8::/48 (host bits are set; the network is 203.0.113.0/24 (or use /32 for the one address)); found "203.0.113.7/24". fix: pulumi config set --path 'keel:allowedSshCidrs[0]' <value>  (or edit Pulumi.<stack>.yaml)`,
    ]);
    expect(cidrProblems("2001:db8::1/48")).toEqual([expect.stringContaining("(host bits are set; the network is 2001:db8::/48 (or use /128 for the one address))")]);
    expect(cidrProblems("::ffff:203.0.113.7/128")).toEqual([expect.stringContaining("(an IPv4 address written as IPv6: UFW would put it in ip6tables, where no IPv4 client ever matches; write it as 203.0.113.7/32)")]);
    for (const bad of ["2001:db8:::1/64", "2001:db8::g/64", "::1::2/128", "fe80::1%eth0/128", "1.2.3/24", "01.2.3.4/32", "1.2.3.4", "1.2.3.4/33", "2001:db8::/129", "1.2.3.4/08"]) {
      expect(cidrProblems(bad), bad).toEqual([expect.stringMatching(/^keel:allowedSshCidrs\[0\]: expected a CIDR such as .* \((.* is not an IPv4 or IPv6 address|the prefix length must be 0 to (32|128) after a '\/')\); found /)]);
    }
    for (const good of ["203.0.113.7/32", "10.0.0.0/8", "0.0.0.0/0", "2001:db8::/48", "::/0", "2001:db8:0:1::7/128", "::ffff:0:0/96"]) {
      expect(parseConfig(minimal({ "keel:allowedSshCidrs": JSON.stringify([good]) })).allowedSshCidrs, good).toEqual([good]);
    }
  });

  it("refuses a repoUrl outside the SSH and file forms, or with characters a shell or git would act on", () => {
    for (const bad of [
      "ssh://-oProxyCommand=touch${IFS}x/repo.git",
      "git@github.com:org/$(id).git",
      "git@github.com:org/repo.git;reboot",
      "git@-oProxyCommand=x:repo.git",
      "git@github.com:-u/repo.git",
      "ssh://git@github.com/org/../../etc/passwd",
      "https://github.com/org/repo.git",
      "ssh://github.com/org/repo.git",
      "git@github.com:org/repo git",
      "git@github.com:../repo.git",
      "file:///../etc/passwd",
      "file:///..",
      "ssh://git@github.com/../x.git",
      "ssh://git@git.example.org:65536/engine.git",
    ]) {
      expect(problems(minimal({ "keel:repoUrl": bad })), bad).toEqual([expect.stringMatching(/^keel:repoUrl: expected git@host:org\/repo\.git, ssh:\/\/user@host\[:port\]\/org\/repo\.git or file:\/\/\/path/)]);
    }
    for (const good of ["git@github.com:org/repo.git", "ssh://git@git.example.org:2222/team/engine.git", "git@git.example.org:~team/engine", "file:///srv/engine.git"]) {
      const extra: Record<string, string> = /github\.com|file:/.test(good) ? {} : { "keel:gitKnownHosts": JSON.stringify(["git.example.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"]) };
      expect(parseConfig(minimal({ "keel:repoUrl": good, ...extra })).repoUrl).toBe(good);
    }
  });

  it("refuses a plaintext hcloud:token (a plain pulumi up loads no policy pack), never showing it", () => {
    const found = problems(minimal({ "hcloud:token": "plaintext-token-canary" }));
    expect(found).toEqual([expect.stringMatching(/^hcloud:token: must be a secret, found a plaintext value \(not shown\)\. fix: pulumi config rm hcloud:token, then pulumi config set --secret hcloud:token/)]);
    expect(found.join("\n")).not.toContain("plaintext-token-canary");
    expect(parseConfig(minimal({ "hcloud:token": "secret" }), (k) => k === "hcloud:token").appName).toBe("engine");
  });

  it("takes minFreeDiskGiB in whole GiB, as the Pulumi CLI checks a key Pulumi.yaml declares integer", () => {
    // pulumi/pulumi v3.248.0 sdk/go/common/workspace/project.go ValidateConfigValue refuses 7.5 for
    // an integer key before the program runs; keel says so itself, naming the key.
    expect(problems(minimal({ "keel:minFreeDiskGiB": "7.5" }))).toEqual([expect.stringMatching(/^keel:minFreeDiskGiB: expected a whole number; found 7\.5\. fix: pulumi config set keel:minFreeDiskGiB /)]);
    expect(parseConfig(minimal({ "keel:minFreeDiskGiB": "7" })).minFreeDiskGiB).toBe(7);
  });

  it("refuses a privileged SSH port other than 22", () => {
    expect(problems(minimal({ "keel:sshPort": "80" }))).toEqual([expect.stringMatching(/^keel:sshPort: expected 22 or a port from 1024 to 65535; found 80/)]);
  });

  it("refuses an unpinned ref", () => {
    expect(problems(minimal({ "keel:repoRef": "main" }))).toEqual([expect.stringMatching(/^keel:repoRef: expected a full 40-character commit SHA/)]);
  });

  it("declares the same defaults in Pulumi.yaml as in the schema", () => {
    const project = parseYaml(readFileSync(join(REPO, "Pulumi.yaml"), "utf8")) as { config: Record<string, { default?: unknown }> };
    const cfg = parseConfig(minimal()) as unknown as Record<string, unknown>;
    for (const [key, decl] of Object.entries(project.config)) {
      expect(key in configSchema.shape, `Pulumi.yaml declares ${key}, which the schema does not know`).toBe(true);
      if (decl.default !== undefined) expect(decl.default, `default of ${key}`).toEqual(cfg[key]);
    }
  });

  it("documents every key in docs/CONFIG.md", () => {
    const doc = readFileSync(join(REPO, "docs", "CONFIG.md"), "utf8");
    const derived = ["secretEnvNames", "alertWebhook"];
    for (const key of [...Object.keys(configSchema.shape).filter((k) => !derived.includes(k)), "secretEnv", "alertWebhookUrl"]) {
      expect(doc, `docs/CONFIG.md documents ${key}`).toContain(`| \`${key}\` |`);
    }
  });

  it("takes the alert webhook only as a secret https URL, never echoing it", () => {
    const url = "https://hooks.example.com/T000/canary-webhook";
    expect(parseConfig(minimal({ "keel:alertWebhookUrl": url }), (k) => k === "keel:alertWebhookUrl").alertWebhook).toBe(true);
    expect(parseConfig(minimal()).alertWebhook).toBe(false);
    const plaintext = problems(minimal({ "keel:alertWebhookUrl": url }));
    expect(plaintext).toEqual([expect.stringMatching(/^keel:alertWebhookUrl: must be a secret, found a plaintext value\. fix: pulumi config rm keel:alertWebhookUrl, then pulumi config set --secret keel:alertWebhookUrl/)]);
    const http = problems(minimal({ "keel:alertWebhookUrl": "http://hooks.example.com/canary-webhook" }), (k) => k === "keel:alertWebhookUrl");
    expect(http).toEqual([expect.stringMatching(/^keel:alertWebhookUrl: expected an https:\/\/ URL; found another value \(not shown\)/)]);
    expect([...plaintext, ...http].join("\n")).not.toContain("canary-webhook");
  });

  it("refuses a disk warning level at or above the critical one", () => {
    expect(problems(minimal({ "keel:healthDiskWarnPercent": "95", "keel:healthDiskCritPercent": "90" }))).toEqual([
      expect.stringMatching(/^keel:healthDiskWarnPercent: expected less than keel:healthDiskCritPercent \(90\); found 95/),
    ]);
  });
});
