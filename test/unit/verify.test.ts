// keel verify's on-host half (scripts/host/keel-verify) states what the plan places: the env
// file's owner, group and mode, the engine unit's highest exposure and the sysctl file. Each is
// written in Python because the script runs on the host on its own; these tests keep it equal to
// the plan's TypeScript source.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { HARDENING_PATHS } from "../../plan/hardening";
import { parseConfig } from "../../config";
import { MAX_ENGINE_EXPOSURE } from "../../plan/engine";
import { HTTPS_PATHS, HTTPS_PORTS, MAX_CADDY_EXPOSURE } from "../../plan/https";
import { HTTPS_PORTS as POLICY_HTTPS_PORTS } from "../../policy/policies";
import { envFileBundle } from "../../plan/secrets";
import { REPO, stackConfig } from "../support/stack";
import { TOOLS } from "../../plan/tools";

const SCRIPT = readFileSync(join(REPO, TOOLS.verify), "utf8");
const constant = (name: string) => new RegExp(`^${name} = (.+)$`, "m").exec(SCRIPT)?.[1];

describe("keel-verify and the plan", () => {
  it("checks the env file for the owner, group and mode the secrets step places", () => {
    const { raw, secretKeys } = stackConfig("prod");
    const cfg = parseConfig(raw, (k) => secretKeys.includes(k));
    const [file] = envFileBundle(cfg, "A=1\n").files;
    expect(/^ENV_FILE_OWNER, ENV_FILE_GROUP, ENV_FILE_MODE = "(\w+)", "(\w+)", 0o([0-7]+)$/m.exec(SCRIPT)?.slice(1)).toEqual([file.owner, file.group, file.mode.replace(/^0/, "")]);
  });

  it("holds the engine unit to the plan's highest exposure, and reads the sysctl, UFW and audit files hardening places", () => {
    expect(Number(constant("MAX_EXPOSURE"))).toBe(MAX_ENGINE_EXPOSURE);
    expect(constant("SYSCTL_FILE")).toBe(JSON.stringify(HARDENING_PATHS.sysctl));
    expect(constant("UFW_CONF")).toBe(JSON.stringify(HARDENING_PATHS.ufwConf));
    expect(constant("AUDIT_RULES")).toBe(JSON.stringify(HARDENING_PATHS.auditRules));
  });

  it("holds keel:https's Caddy to the plan's Caddyfile and highest exposure; keel-https reads the UFW file hardening places", () => {
    expect(Number(constant("MAX_CADDY_EXPOSURE"))).toBe(MAX_CADDY_EXPOSURE);
    expect(constant("CADDYFILE")).toBe(JSON.stringify(HTTPS_PATHS.caddyfile));
    const tool = readFileSync(join(REPO, TOOLS.https), "utf8");
    expect(/^UFW_CONF = (".*")$/m.exec(tool)?.[1]).toBe(JSON.stringify(HARDENING_PATHS.ufwConf));
    expect(/^CADDYFILE = (".*")$/m.exec(tool)?.[1]).toBe(JSON.stringify(HTTPS_PATHS.caddyfile));
    expect(/^CADDY_HOME = (".*")$/m.exec(tool)?.[1]).toBe(JSON.stringify(HTTPS_PATHS.caddyHome));
    // The ports: one list in the plan, the same in the policy pack and ufw-apply's check.
    expect(POLICY_HTTPS_PORTS).toEqual(HTTPS_PORTS.map(String));
    expect(readFileSync(join(REPO, "cloud-init/files/ufw-apply.sh"), "utf8")).toContain(`[[ $value == ${HTTPS_PORTS[0]} || $value == ${HTTPS_PORTS[1]} ]]`);
  });
});
