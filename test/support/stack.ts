import { join } from "node:path";
import { IMAGE_FACTS, type Image } from "../../images";
import { readStackFile } from "../../plan/stackFile";

export const REPO = join(__dirname, "..", "..");

/** Public keys from the checked-in stack files (test keys; their private halves were discarded). */
export const ADMIN_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINpzgnwZh5ywx8tiek0lsVZw1cOAxPtCo80isgK9oh64 alice@ops-laptop";
export const OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF5XdL/xgzAh0FU7i8672uDW9JrkMtgcaXYmVIpCfH0z old-admin@2025";

/** The system Python of `keel:image` in `overrides` (default ubuntu-24.04): keel:pythonVersion must match it. */
export function imagePython(overrides: Record<string, string>): string {
  return IMAGE_FACTS[(overrides["keel:image"] ?? "ubuntu-24.04") as Image]?.python ?? "3.12";
}

/**
 * The smallest valid raw stack config, as the Pulumi engine hands it over (strings, JSON for lists),
 * with `overrides`. keel:pythonVersion follows the image unless `overrides` sets it.
 */
export function minimalRaw(overrides: Record<string, string> = {}): Record<string, string> {
  return {
    "keel:adminKeys": JSON.stringify([ADMIN_KEY]),
    "keel:allowedSshCidrs": JSON.stringify(["203.0.113.10/32"]),
    "keel:repoUrl": "git@github.com:example-org/engine.git",
    "keel:repoRef": "3f9c2a1d4b5e6f708192a3b4c5d6e7f8091a2b3c",
    "keel:pythonVersion": imagePython(overrides),
    "keel:startCommand": "python -m engine",
    ...overrides,
  };
}

/** A canary secret: tests assert it appears nowhere but where secrets belong. */
export const CANARY = "canary-7f3d9e1b-secret-value";

/**
 * A checked-in stack's config as the Pulumi engine hands it to the program, plus the secrets a real
 * stack holds encrypted (set with `pulumi config set --secret`, which needs the CLI).
 */
export function stackConfig(stack: string): { raw: Record<string, string>; secretKeys: string[] } {
  const { raw, secretKeys } = readStackFile(join(REPO, `Pulumi.${stack}.yaml`));
  raw["hcloud:token"] = "test-hcloud-token";
  raw["keel:secretEnv"] = JSON.stringify({ ENGINE_API_KEY: CANARY, ENGINE_DB_KEY: "second-secret" });
  return { raw, secretKeys: [...secretKeys, "hcloud:token", "keel:secretEnv"] };
}
