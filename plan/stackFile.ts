import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";

/** Placeholder for a secret read from a stack file without the Pulumi CLI to decrypt it. */
export const REDACTED = "<redacted>";

function hasSecure(value: unknown): boolean {
  if (value === null || typeof value !== "object") return false;
  if ("secure" in (value as object)) return true;
  return Object.values(value as object).some(hasSecure);
}

function redact(value: unknown): unknown {
  if (value === null || typeof value !== "object") return value;
  if (Array.isArray(value)) return value.map(redact);
  if ("secure" in (value as object)) return REDACTED;
  return Object.fromEntries(Object.entries(value as object).map(([k, v]) => [k, redact(v)]));
}

/**
 * Reads `Pulumi.<stack>.yaml` the way the engine hands config to a program: string values, JSON for
 * lists and objects. Encrypted values (`secure:`) cannot be decrypted without the CLI: their keys are
 * reported as secret and their values replaced by REDACTED, which is all a plan render needs.
 */
export function readStackFile(path: string): { raw: Record<string, string>; secretKeys: string[] } {
  const file = (parseYaml(readFileSync(path, "utf8")) ?? {}) as { config?: Record<string, unknown> };
  const raw: Record<string, string> = {};
  const secretKeys: string[] = [];
  for (const [key, value] of Object.entries(file.config ?? {})) {
    if (hasSecure(value)) secretKeys.push(key);
    const plain = redact(value);
    raw[key] = typeof plain === "string" ? plain : JSON.stringify(plain);
  }
  return { raw, secretKeys };
}
