#!/usr/bin/env node
// @ts-check
/**
 * Sets this machine up for one of keel's two developer commands, then gets out of the way:
 *
 *   node scripts/dev/setup.js test|demo      (npm test and npm run demo run it first)
 *
 * It installs the Debian packages the command needs that are missing (one apt-get line, from
 * scripts/dev/debian-packages.txt) and runs `npm ci` when node_modules is missing or does not
 * match package-lock.json. Both commands need root (debootstrap, chroot, sshd, network
 * namespaces): as another user it changes nothing and prints the exact command to run instead.
 * It decides everything before it changes anything, so a refusal leaves the machine as it was.
 *
 * Plain Node.js with no dependencies: it runs before node_modules exists.
 * Exit codes: 0 ready; 1 refused or an install failed (the message says what to do); 2 usage.
 */
"use strict";
const { spawnSync } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");

const REPO = path.join(__dirname, "..", "..");
const PACKAGE_LIST = path.join(__dirname, "debian-packages.txt");
const COMMANDS = /** @type {const} */ (["test", "demo"]);
/** What each command is, in the words an operator types. */
const NPM_COMMAND = { test: "npm test", demo: "npm run demo" };
/** sudo's default secure_path on Debian: a node found here is found by `sudo npm` too. */
const SUDO_PATH = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/**
 * Services that packages on the list enable for the next boot. The tests start their own sshd and
 * fail2ban on loopback, so a developer's machine should not start them at boot because the set-up
 * installed them (an sshd with Debian's defaults accepts passwords).
 * @type {Record<string, string[]>}
 */
const SERVICES_LEFT_OFF = { "openssh-server": ["ssh.service"], fail2ban: ["fail2ban.service"] };
/** cloud-init is installed for `cloud-init schema`; this file keeps it from running at boot. */
const CLOUD_INIT_DISABLED = "/etc/cloud/cloud-init.disabled";

/**
 * @typedef {"test" | "demo"} Command
 * @typedef {{ state: "ok" } | { state: "missing" | "stale", reason: string }} NodeModules
 * @typedef {{
 *   command: Command,
 *   root: boolean,
 *   dpkg: boolean,
 *   packages: string[],
 *   missingPackages: string[],
 *   nodeModules: NodeModules,
 *   nodeDir: string,
 * }} Facts
 * @typedef {{ kind: "apt", packages: string[] } | { kind: "npm-ci", reason: string }} Action
 * @typedef {{ ok: true, actions: Action[], summary: string } | { ok: false, message: string }} Decision
 */

/**
 * The packages `command` needs, from the list's text (`PACKAGE COMMAND...` lines).
 * @param {string} text
 * @param {Command} command
 * @returns {string[]}
 */
function packagesFor(text, command) {
  /** @type {string[]} */
  const out = [];
  for (const [index, raw] of text.split("\n").entries()) {
    const line = raw.replace(/#.*/, "").trim();
    if (!line) continue;
    const [name, ...commands] = line.split(/\s+/);
    const unknown = commands.filter((c) => !(/** @type {readonly string[]} */ (COMMANDS)).includes(c));
    if (!/^[a-z0-9][a-z0-9+.-]+$/.test(name) || commands.length === 0 || unknown.length > 0) {
      throw new Error(`${path.relative(REPO, PACKAGE_LIST)}:${index + 1}: expected "PACKAGE ${COMMANDS.join("|")}...", found ${JSON.stringify(raw)}`);
    }
    if (commands.includes(command)) out.push(name);
  }
  return out;
}

/**
 * Whether node_modules is what `npm ci` would make of package-lock.json. npm records what it
 * installed in node_modules/.package-lock.json (its "hidden lockfile"); every package there must be
 * the lockfile's, and every package of the lockfile must be there unless it is optional (npm
 * skips optional packages for other platforms).
 * @param {string} repo
 * @returns {NodeModules}
 */
function nodeModulesState(repo) {
  const dir = path.join(repo, "node_modules");
  if (!fs.existsSync(dir)) return { state: "missing", reason: "node_modules is missing" };
  /** @type {(file: string) => Record<string, Record<string, unknown>> | undefined} */
  const packagesOf = (file) => {
    try {
      return JSON.parse(fs.readFileSync(file, "utf8")).packages;
    } catch {
      return undefined;
    }
  };
  const wanted = packagesOf(path.join(repo, "package-lock.json"));
  if (!wanted) return { state: "stale", reason: "package-lock.json cannot be read" };
  const installed = packagesOf(path.join(dir, ".package-lock.json"));
  if (!installed) return { state: "stale", reason: "node_modules has no record of what npm installed in it" };
  const same = (/** @type {Record<string, unknown>} */ a, /** @type {Record<string, unknown>} */ b) =>
    a.version === b.version && a.resolved === b.resolved && a.integrity === b.integrity;
  for (const [name, entry] of Object.entries(wanted)) {
    if (name === "") continue; // the project itself
    const have = installed[name];
    if (!have) {
      if (entry.optional) continue;
      return { state: "stale", reason: `${name.replace(/^node_modules\//, "")} ${entry.version} is not installed` };
    }
    if (!same(entry, have)) return { state: "stale", reason: `${name.replace(/^node_modules\//, "")} is ${have.version}, package-lock.json wants ${entry.version}` };
  }
  const extra = Object.keys(installed).find((name) => !(name in wanted));
  if (extra) return { state: "stale", reason: `${extra.replace(/^node_modules\//, "")} is installed but not in package-lock.json` };
  return { state: "ok" };
}

/**
 * The packages of `names` that dpkg does not list as installed, given the output of
 * `dpkg-query -W -f '${Package} ${db:Status-Status}\n' NAMES…`.
 * @param {string[]} names
 * @param {string} dpkgOutput
 * @returns {string[]}
 */
function missingFrom(names, dpkgOutput) {
  const installed = new Set(
    dpkgOutput
      .split("\n")
      .map((l) => l.trim().split(/\s+/))
      .filter(([, status]) => status === "installed")
      .map(([name]) => name.replace(/:.*$/, "")),
  );
  return names.filter((n) => !installed.has(n));
}

/**
 * How to run `command` as root from here, exactly: `sudo npm test`, or with this node's
 * directory on sudo's PATH when sudo would not find it (nvm, a tarball in $HOME).
 * @param {Command} command
 * @param {string} nodeDir
 */
function asRootCommand(command, nodeDir) {
  const npm = NPM_COMMAND[command];
  if (SUDO_PATH.includes(nodeDir)) return `sudo ${npm}`;
  return `sudo env "PATH=${nodeDir}:${SUDO_PATH.join(":")}" ${npm}`;
}

/**
 * What to do, from the facts alone: refuse with a message, or the actions to take in order.
 * @param {Facts} facts
 * @returns {Decision}
 */
function decide(facts) {
  const npm = NPM_COMMAND[facts.command];
  /** @type {Action[]} */
  const actions = [];
  if (facts.missingPackages.length > 0) actions.push({ kind: "apt", packages: facts.missingPackages });
  if (facts.nodeModules.state !== "ok") actions.push({ kind: "npm-ci", reason: facts.nodeModules.reason });
  const todo = actions.map((a) => (a.kind === "apt" ? `install ${a.packages.length} Debian package(s): ${a.packages.join(" ")}` : `run npm ci (${a.reason})`));

  if (!facts.dpkg) {
    return {
      ok: false,
      message:
        `${npm} needs Debian (or a derivative): it installs what it needs with apt-get, and this machine has no dpkg.\n` +
        `On a Debian 12 or 13 machine, as root: ${npm}. The packages it would need: ${facts.packages.join(" ")}`,
    };
  }
  if (!facts.root) {
    const why = facts.command === "test"
      ? "the tests build a VM image with debootstrap and chroot, start sshd and make network namespaces"
      : "the demo builds its VM image with debootstrap and chroot";
    return {
      ok: false,
      message:
        `${npm} needs root: ${why}. Nothing was changed.\n` +
        (todo.length ? `As root it will first ${todo.join(", then ")}.\n` : "") +
        `Run: ${asRootCommand(facts.command, facts.nodeDir)}`,
    };
  }
  const summary = todo.length ? `setting up for ${npm}: ${todo.join("; ")}` : `ready for ${npm}: ${facts.packages.length} Debian packages present, node_modules matches package-lock.json`;
  return { ok: true, actions, summary };
}

/**
 * Reads the facts of this machine.
 * @param {Command} command
 * @returns {Facts}
 */
function readFacts(command) {
  const packages = packagesFor(fs.readFileSync(PACKAGE_LIST, "utf8"), command);
  const query = spawnSync("dpkg-query", ["-W", "-f", "${Package} ${db:Status-Status}\n", ...packages], { encoding: "utf8" });
  const dpkg = !query.error;
  return {
    command,
    root: typeof process.getuid === "function" && process.getuid() === 0,
    dpkg,
    packages,
    missingPackages: dpkg ? missingFrom(packages, query.stdout) : packages,
    nodeModules: nodeModulesState(REPO),
    nodeDir: path.dirname(process.execPath),
  };
}

/**
 * @param {string} file
 * @param {string[]} args
 * @param {NodeJS.ProcessEnv} [env]
 */
function run(file, args, env = process.env) {
  const r = spawnSync(file, args, { stdio: "inherit", env, cwd: REPO });
  if (r.error) throw new Error(`${file} could not start: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${[file, ...args].join(" ")} failed (exit ${r.status ?? r.signal})`);
}

/**
 * apt-get install, with no service started by the packages' maintainer scripts (policy-rc.d, as
 * Debian's own build tools do), then the services and cloud-init that they would start at the next
 * boot left off. Only what this run newly installed is touched.
 * @param {string[]} packages
 */
function aptInstall(packages) {
  const policy = "/usr/sbin/policy-rc.d";
  const ownPolicy = !fs.existsSync(policy);
  if (ownPolicy) fs.writeFileSync(policy, "#!/bin/sh\n# keel set-up: no service starts while packages install\nexit 101\n", { mode: 0o755 });
  try {
    const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
    run("apt-get", ["update", "-q"], env);
    run("apt-get", ["install", "-y", "-q", "--no-install-recommends", ...packages], env);
  } finally {
    if (ownPolicy) fs.rmSync(policy, { force: true });
  }
  const units = packages.flatMap((p) => SERVICES_LEFT_OFF[p] ?? []);
  if (units.length > 0) {
    // Works without a running systemd too (it edits the unit symlinks).
    const r = spawnSync("systemctl", ["disable", "--quiet", ...units], { stdio: "inherit" });
    process.stderr.write(r.status === 0 ? `setup: left ${units.join(", ")} off at boot (the tests start their own)\n` : `setup: could not disable ${units.join(", ")}; do it by hand if this machine should not run them\n`);
  }
  if (packages.includes("cloud-init")) {
    fs.writeFileSync(CLOUD_INIT_DISABLED, "keel set-up: cloud-init is here for `cloud-init schema`; it does not run at boot\n");
    process.stderr.write(`setup: wrote ${CLOUD_INIT_DISABLED} (cloud-init is installed for its schema check only)\n`);
  }
}

/** @param {string[]} argv */
function main(argv) {
  const command = /** @type {Command} */ (argv[0]);
  if (argv.length !== 1 || !COMMANDS.includes(command)) {
    process.stderr.write(`usage: node scripts/dev/setup.js ${COMMANDS.join("|")}\n`);
    return 2;
  }
  const decision = decide(readFacts(command));
  if (!decision.ok) {
    process.stderr.write(`setup: ${decision.message}\n`);
    return 1;
  }
  process.stderr.write(`setup: ${decision.summary}\n`);
  try {
    for (const action of decision.actions) {
      if (action.kind === "apt") aptInstall(action.packages);
      else run("npm", ["ci", "--no-audit", "--no-fund"]);
    }
  } catch (err) {
    process.stderr.write(`setup: ${/** @type {Error} */ (err).message}. Fix that and run ${NPM_COMMAND[command]} again.\n`);
    return 1;
  }
  return 0;
}

module.exports = { packagesFor, nodeModulesState, missingFrom, decide, asRootCommand, PACKAGE_LIST };

if (require.main === module) process.exit(main(process.argv.slice(2)));
