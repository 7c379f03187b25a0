/**
 * What the Pulumi CLI checks of a stack's config against the project's `config:` declarations
 * before it runs the program (`pulumi preview`, `up` and `destroy` alike), re-stated from its
 * source at the version keel pins (pulumi/pulumi v3.248.0; docs/LIFECYCLE.md cites the others):
 *
 * - sdk/go/common/workspace/config.go L311-320: a project-namespaced key declared with neither
 *   `default` nor `value`, and not set by the stack, is missing; L29-63: every missing key in one
 *   error, "Stack '<stack>' is missing configuration value(s) 'a', 'b' and 'c'", keys as declared,
 *   sorted; pkg/cmd/pulumi/operations/up.go L195-205 and preview.go L487-497 prefix
 *   "validating stack config: ".
 * - config.go L163-172 (parseConfigKey): a declared key without a namespace is `<project>:<key>`.
 * - project.go L469-499 (RewriteShorthandConfigValues): a bare value under a project key is its
 *   `default`.
 * - project.go L743-813 and config.go L105-157: explicitly typed keys are checked against the
 *   stack's value — integer (parses as an integer), boolean ("true"/"false"), string (any scalar),
 *   array (a list, `items` required), object (a map) — with "Stack '<stack>' with configuration key
 *   '<key>' must be of type '<type>'".
 *
 * Mocks show what the program asks for; this shows what the CLI refuses, so a test can prove that a
 * real operator's first `pulumi preview` gets past it.
 */
import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";

interface Declaration {
  readonly type?: string;
  readonly default?: unknown;
  readonly value?: unknown;
  readonly items?: { readonly type?: string };
}

function declarations(projectFile: string): { name: string; config: Record<string, Declaration> } {
  const project = parseYaml(readFileSync(projectFile, "utf8")) as { name: string; config?: Record<string, unknown> };
  const config: Record<string, Declaration> = {};
  for (const [key, decl] of Object.entries(project.config ?? {})) {
    const namespaced = !key.includes(":") || key.startsWith(`${project.name}:`);
    // The shorthand: a bare value is the default of a project key, the value of another's.
    config[key] = decl !== null && typeof decl === "object" && !Array.isArray(decl) ? (decl as Declaration) : namespaced ? { default: decl } : { value: decl };
  }
  return { name: project.name, config };
}

function fullKey(project: string, key: string): string {
  return key.includes(":") ? key : `${project}:${key}`;
}

/** config.go L29-50: 'a', 'b' and 'c'. */
function formatMissingKeys(keys: string[]): string {
  const quoted = keys.map((k) => `'${k}'`);
  return quoted.length === 1 ? quoted[0] : `${quoted.slice(0, -1).join(", ")} and ${quoted[quoted.length - 1]}`;
}

function hasType(type: string, items: string | undefined, value: unknown): boolean {
  switch (type) {
    case "integer":
      return (typeof value === "number" && Number.isInteger(value)) || (typeof value === "string" && /^[+-]?\d+$/.test(value));
    case "boolean":
      return typeof value === "boolean" || value === "true" || value === "false";
    case "string":
      return value === null || typeof value !== "object";
    case "array":
      return Array.isArray(value) && items !== undefined && value.every((v) => hasType(items, undefined, v));
    case "object":
      return value !== null && typeof value === "object" && !Array.isArray(value);
    default:
      return false;
  }
}

/**
 * The error the CLI stops with for this stack file, or undefined when it goes on to run the
 * program. Secret (`secure:`) values count as set, as the CLI decrypts them first.
 */
export function cliConfigError(projectFile: string, stackFile: string, stack: string): string | undefined {
  const { name, config } = declarations(projectFile);
  const stackConfig = ((parseYaml(readFileSync(stackFile, "utf8")) ?? {}) as { config?: Record<string, unknown> }).config ?? {};
  const set = new Map(Object.entries(stackConfig).map(([k, v]) => [fullKey(name, k), v]));
  const missing: string[] = [];
  for (const [key, decl] of Object.entries(config)) {
    const full = fullKey(name, key);
    if (!full.startsWith(`${name}:`)) continue; // another namespace: never required
    const value = set.get(full);
    if (value === undefined) {
      if (decl.default === undefined && decl.value === undefined) missing.push(key);
      continue;
    }
    const secure = value !== null && typeof value === "object" && "secure" in (value as object);
    if (decl.type && !secure && !hasType(decl.type, decl.items?.type, value)) {
      const type = decl.type === "array" ? `array<${decl.items?.type ?? "?"}>` : decl.type;
      return `validating stack config: Stack '${stack}' with configuration key '${key}' must be of type '${type}'`;
    }
  }
  if (missing.length === 0) return undefined;
  missing.sort();
  return `validating stack config: Stack '${stack}' is missing configuration ${missing.length === 1 ? "value" : "values"} ${formatMissingKeys(missing)}`;
}

/** Project keys declared with neither `default` nor `value`: the CLI requires them of every stack. */
export function requiredDeclarations(projectFile: string): string[] {
  const { config } = declarations(projectFile);
  return Object.entries(config)
    .filter(([, d]) => d.default === undefined && d.value === undefined)
    .map(([k]) => k)
    .sort();
}
