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
});
