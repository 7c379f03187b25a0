// The files generated from one source each (issue "one source per contract"): Pulumi.yaml's config
// block from config.ts's schema, docs/CONFIG.md's key tables from configDocs.ts (with the defaults
// from the schema), keel-host-conf's keys from plan/hostConf.ts. `npm run gen` writes them (scripts/dev/gen.ts); test/unit/generated.test.ts
// fails when a committed file differs from what this renders.
import { stringify } from "yaml";
import type { z } from "zod";
import { configSchema } from "../../config";
import { CONFIG_DOC } from "../../configDocs";
import { IMAGE_FACTS } from "../../images";
import { HEALTH_CHECKS, type HealthCheck } from "../../plan/healthChecks";
import { HOST_CONF_KEYS, HOST_CONF_KINDS } from "../../plan/hostConf";
import { DECISIONS } from "../../compliance/decisions";

interface KeyShape {
  /** The value's own schema, without its default or optional wrapper. */
  readonly inner: z.ZodType;
  /** zod's type of the value: string, enum, boolean, number, array, record. */
  readonly type: string;
  readonly int: boolean;
  readonly required: boolean;
  readonly hasDefault: boolean;
  readonly defaultValue?: unknown;
  readonly description?: string;
}

/** What the schema says of one key: its value's type, whether it is required, its default. */
export function keyShape(key: string): KeyShape {
  const schema = (configSchema.shape as Record<string, z.ZodType>)[key];
  if (!schema) throw new Error(`config.ts has no key ${key}`);
  const def = (schema as unknown as { def: { type: string; innerType?: z.ZodType; defaultValue?: unknown } }).def;
  const inner = def.type === "default" || def.type === "optional" ? def.innerType! : schema;
  const innerDef = inner as unknown as { def: { type: string }; isInt?: boolean };
  return {
    inner,
    type: innerDef.def.type,
    int: innerDef.isInt === true,
    required: def.type !== "default" && def.type !== "optional",
    hasDefault: def.type === "default",
    defaultValue: def.type === "default" ? def.defaultValue : undefined,
    description: schema.description,
  };
}

const PULUMI_TYPES: Record<string, string> = { string: "string", enum: "string", boolean: "boolean" };

/**
 * The keys Pulumi.yaml declares: every scalar key that is required or has a default. The CLI
 * requires every stack to set a declared key that has no default (pulumi/pulumi v3.248.0,
 * sdk/go/common/workspace/config.go L311-320), so an optional key without a default is not
 * declared, nor are lists, objects and the keys config.ts derives.
 */
export function declaredKeys(): string[] {
  return Object.keys(configSchema.shape).filter((key) => {
    const s = keyShape(key);
    return (s.required || s.hasDefault) && s.type !== "array" && s.type !== "record";
  });
}

function pulumiType(key: string): string {
  const s = keyShape(key);
  if (s.type === "number") {
    // Pulumi.yaml's types are array, integer, string, boolean and object (sdk/go/common/workspace/project.go L49-55).
    if (!s.int) throw new Error(`config.ts: ${key} is a number that is not an integer; Pulumi.yaml can only declare integers`);
    return "integer";
  }
  const t = PULUMI_TYPES[s.type];
  if (!t) throw new Error(`config.ts: ${key} has a type (${s.type}) Pulumi.yaml cannot declare`);
  return t;
}

/**
 * zod does not check a `.default()` against its schema, and the CLI refuses a whole project whose
 * declared default does not fit its type (pulumi/pulumi v3.248.0 sdk/go/common/workspace/project.go
 * Project.Validate): refuse it here first.
 */
function checkDefault(key: string, type: string, value: unknown): void {
  const fits = type === "integer" ? Number.isInteger(value) : type === "boolean" ? typeof value === "boolean" : typeof value === "string";
  if (!fits || !keyShape(key).inner.safeParse(value).success) throw new Error(`config.ts: ${key}'s default ${JSON.stringify(value)} is not a valid ${type} for its own schema`);
}

const PULUMI_YAML_HEAD = `# Generated whole by \`npm run gen\` (scripts/dev/generated.ts): the config block from config.ts's
# schema, the rest from generated.ts. Edit those, never this file.
name: keel
description: One boring, hardened Hetzner Cloud VPS for one Python service with an SQLite database.
runtime:
  name: nodejs
  options:
    typescript: true
# Scalar keys with their defaults, as config.ts has them. Lists, objects and secrets are set per
# stack: see docs/CONFIG.md. A key declared here without a default is one the Pulumi CLI requires
# every stack to set (pulumi/pulumi v3.248.0, sdk/go/common/workspace/config.go L311-320), so
# optional keys without a default (dbFile, migrateFrom, migrateFallbackDir, gitKnownHosts, ...) are
# not declared: config.ts reads them.
`;

/** Pulumi.yaml, whole. */
export function renderPulumiYaml(): string {
  const config: Record<string, Record<string, unknown>> = {};
  for (const key of declaredKeys()) {
    const s = keyShape(key);
    if (!s.description) throw new Error(`config.ts: ${key} has no description (.describe(...)), which Pulumi.yaml shows`);
    const type = pulumiType(key);
    if (s.hasDefault) checkDefault(key, type, s.defaultValue);
    config[key] = { type, ...(s.hasDefault ? { default: s.defaultValue } : {}), description: s.description };
  }
  return PULUMI_YAML_HEAD + stringify({ config }, { lineWidth: 0 });
}

/** The default column of docs/CONFIG.md: the row's own text, else what the schema says. */
function defaultCell(row: { key: string; default?: string }): string {
  if (row.default !== undefined) return row.default;
  const s = keyShape(row.key);
  if (s.required) return "required";
  if (!s.hasDefault) return "none";
  return `\`${typeof s.defaultValue === "string" ? s.defaultValue : JSON.stringify(s.defaultValue)}\``;
}

const TABLE_START = (heading: string) => `<!-- generated by npm run gen from configDocs.ts: ${heading} -->`;
const TABLE_END = "<!-- end of generated table -->";

/** A section's table of docs/CONFIG.md, its lines. */
function renderTable(section: (typeof CONFIG_DOC)[number]): string[] {
  const rows = section.rows.map((r) => `| \`${r.key}\` | ${defaultCell(r)} | ${r.what} |`);
  return ["| key | default | what |", "|---|---|---|", ...rows];
}

const IMAGES_START = "<!-- generated by npm run gen from images.ts -->";

/** docs/CONFIG.md's table of images, its lines: what keel relies on in each (images.ts) and how it is proven. */
function renderImagesTable(): string[] {
  const rows = Object.entries(IMAGE_FACTS).map(
    ([image, f]) => `| \`${image}\` | ${f.openssh} | ${f.python} | ${f.systemd} | ${f.timeSync.package} | ${f.sshSocket ? "ssh.socket (keel disables it)" : "ssh.service"} | ${f.provenBy} |`,
  );
  return ["| image | OpenSSH | Python (`pythonVersion`) | systemd | time client | sshd from | proven by |", "|---|---|---|---|---|---|---|", ...rows];
}

/** docs/CONFIG.md with each section's table as configDocs.ts renders it; the prose around them as it is. */
export function renderConfigDoc(current: string): string {
  const marked = [...current.matchAll(/<!-- generated by npm run gen from configDocs\.ts: (.*) -->/g)].map((m) => m[1]);
  const sections = CONFIG_DOC.map((s) => s.heading);
  if (marked.join("\n") !== sections.join("\n")) {
    throw new Error(`docs/CONFIG.md: its generated tables (${marked.join(", ")}) are not configDocs.ts's sections (${sections.join(", ")}), one each in that order`);
  }
  const tables = CONFIG_DOC.reduce((out, section) => replaceDocBlock("docs/CONFIG.md", out, TABLE_START(section.heading), renderTable(section)), current);
  return replaceDocBlock("docs/CONFIG.md", tables, IMAGES_START, renderImagesTable());
}

/**
 * Where the block from `startMarker` to `endMarker` is in `text`: the start marker there once, and
 * the first end marker after it with no other generated block's start in between, so a lost end
 * marker stops the generator instead of letting it overwrite what lies up to the next block's end.
 */
function oneBlock(file: string, text: string, startMarker: string, endMarker: string): [number, number] {
  const i = text.indexOf(startMarker);
  if (i < 0 || text.indexOf(startMarker, i + 1) >= 0) throw new Error(`${file}: the marker ${startMarker.trim()} must be there once`);
  const j = text.indexOf(endMarker, i + startMarker.length);
  if (j < 0) throw new Error(`${file}: no ${endMarker.trim()} after ${startMarker.trim()}`);
  if (/generated by npm run gen from/.test(text.slice(i + startMarker.length, j))) throw new Error(`${file}: another generated block starts inside ${startMarker.trim()}; its end marker is missing`);
  return [i, j];
}

/**
 * A block of a script that `npm run gen` writes: the lines between `# <generated by npm run gen
 * from SOURCE>` and `# </generated>`, replaced by `body`; the rest of the file as it is.
 */
function replaceScriptBlock(file: string, current: string, source: string, body: string[]): string {
  const start = `# <generated by npm run gen from ${source}>\n`;
  const end = "# </generated>\n";
  const [i, j] = oneBlock(file, current, start, end);
  return current.slice(0, i + start.length) + body.map((l) => `${l}\n`).join("") + current.slice(j);
}

/** keel-host-conf with host.conf's keys and kinds from plan/hostConf.ts. */
export function renderHostConfReader(current: string): string {
  const keys = Object.entries(HOST_CONF_KEYS).map(([k, kind]) => `    ${JSON.stringify(k)}: ${JSON.stringify(kind)},`);
  const kinds = Object.entries(HOST_CONF_KINDS).map(([k, v]) => `    ${JSON.stringify(k)}: (${JSON.stringify(v.pattern)}, ${JSON.stringify(v.what)}),`);
  return replaceScriptBlock("scripts/host/keel-host-conf", current, "plan/hostConf.ts", ["KEYS = {", ...keys, "}", "KINDS = {", ...kinds, "}"]);
}

/** A check's doc text with each `{keel:KEY}` written as the key and its default from config.ts. */
function withDefaults(text: string): string {
  return text.replace(/\{keel:([A-Za-z]+)\}/g, (_, key: string) => `\`keel:${key}\` (default ${String(keyShape(key).defaultValue)})`);
}

/** keel-health with its CHECKS from plan/healthChecks.ts. */
export function renderHealthScript(current: string): string {
  return replaceScriptBlock("scripts/host/keel-health", current, "plan/healthChecks.ts", [`CHECKS = (${HEALTH_CHECKS.map((c) => JSON.stringify(c.name)).join(", ")})`]);
}

const CHECKS_START = (part: string) => `<!-- generated by npm run gen from plan/healthChecks.ts: ${part} -->`;

/** `current` with the lines of the generated block that starts with `startMarker` replaced by `body`; its markers kept. */
function replaceDocBlock(file: string, current: string, startMarker: string, body: string[]): string {
  const [start, end] = oneBlock(file, current, startMarker, TABLE_END);
  return current.slice(0, start) + [startMarker, ...body, TABLE_END].join("\n") + current.slice(end + TABLE_END.length);
}

/** docs/RUNBOOK.md with the health checks' table and their JSON details from plan/healthChecks.ts. */
export function renderRunbookDoc(current: string): string {
  const code = (s: string) => `\`${s}\``;
  const table = [
    "| check | what it looks at | degraded (exit 1) | down (exit 2) |",
    "|---|---|---|---|",
    ...HEALTH_CHECKS.map((c) => `| ${code(c.name)} | ${withDefaults(c.looksAt)} | ${withDefaults(c.degraded)} | ${withDefaults(c.down)} |`),
  ];
  const details = HEALTH_CHECKS.map((c) => `- ${code(c.name)}: ${Object.entries(c.details).map(([k, v]) => `${code(k)} — ${v}`).join("; ")}`);
  const withTable = replaceDocBlock("docs/RUNBOOK.md", current, CHECKS_START("checks"), table);
  return replaceDocBlock("docs/RUNBOOK.md", withTable, CHECKS_START("details"), details);
}

/**
 * The JSON schema of `keel-health --json` (JSON Schema 2020-12): the report's fields, every check by
 * name, and each check's details by field. A check's details hold only what it could find (a
 * missing DB has no size), so no detail is required; one not listed is refused.
 */
export function renderHealthSchema(): string {
  const status = { enum: ["ok", "degraded", "down", "unknown"] };
  const check = (c: HealthCheck) => ({
    type: "object",
    required: ["status", "summary", "todo", "details"],
    additionalProperties: false,
    properties: {
      status,
      summary: { type: "string" },
      todo: { type: ["string", "null"], description: "what to do; null when ok" },
      details: { type: "object", additionalProperties: false, properties: Object.fromEntries(Object.entries(c.details).map(([k, v]) => [k, { description: v }])) },
    },
  });
  const schema = {
    $schema: "https://json-schema.org/draft/2020-12/schema",
    $comment: "generated by npm run gen from plan/healthChecks.ts; docs/RUNBOOK.md \"JSON\"",
    title: "keel-health --json",
    type: "object",
    required: ["version", "host", "app", "time", "status", "exit_code", "checks"],
    additionalProperties: false,
    properties: {
      version: { const: 1 },
      host: { type: "string" },
      app: { type: "string" },
      time: { type: "string", description: "UTC, YYYY-MM-DDTHH:MM:SSZ" },
      status: { enum: ["healthy", "degraded", "down"] },
      exit_code: { enum: [0, 1, 2] },
      checks: {
        type: "object",
        description: "the checks run (all, or those --only names), in this order",
        additionalProperties: false,
        properties: Object.fromEntries(HEALTH_CHECKS.map((c) => [c.name, check(c)])),
      },
    },
  };
  return JSON.stringify(schema, null, 2) + "\n";
}

const DECISIONS_START = "<!-- generated by npm run gen from compliance/decisions.ts: decisions -->";

/**
 * docs/COMPLIANCE.md with the table of the rules keel does not apply, from compliance/decisions.ts
 * (the list the tailoring file is rendered from); rules that share a reason share a row.
 */
export function renderComplianceDoc(current: string): string {
  const rows = new Map<string, { kind: string; reason: string; rules: string[] }>();
  for (const d of DECISIONS) {
    const key = `${d.kind}: ${d.reason}`;
    if (!rows.has(key)) rows.set(key, { kind: d.kind, reason: d.reason, rules: [] });
    rows.get(key)!.rules.push(d.rule);
  }
  const table = [
    "| rule(s) | decision | reason |",
    "|---|---|---|",
    ...[...rows.values()].map((r) => `| ${r.rules.map((rule) => `\`${rule}\``).join(", ")} | ${r.kind} | ${r.reason.replace(/\|/g, "\\|")} |`),
  ];
  return replaceDocBlock("docs/COMPLIANCE.md", current, DECISIONS_START, table);
}
