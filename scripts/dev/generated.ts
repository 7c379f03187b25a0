// The files generated from one source each (issue "one source per contract"): Pulumi.yaml's config
// block from config.ts's schema, docs/CONFIG.md's key tables from configDocs.ts (with the defaults
// from the schema). `npm run gen` writes them (scripts/dev/gen.ts); test/unit/generated.test.ts
// fails when a committed file differs from what this renders.
import { stringify } from "yaml";
import type { z } from "zod";
import { configSchema } from "../../config";
import { CONFIG_DOC } from "../../configDocs";
import { IMAGE_FACTS } from "../../plan/images";

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

function renderTable(section: (typeof CONFIG_DOC)[number]): string {
  const rows = section.rows.map((r) => `| \`${r.key}\` | ${defaultCell(r)} | ${r.what} |`);
  return [TABLE_START(section.heading), "| key | default | what |", "|---|---|---|", ...rows, TABLE_END].join("\n");
}

const IMAGES_START = "<!-- generated by npm run gen from plan/images.ts -->";

/** docs/CONFIG.md's table of images: what keel relies on in each (plan/images.ts) and how it is proven. */
function renderImagesTable(): string {
  const rows = Object.entries(IMAGE_FACTS).map(
    ([image, f]) => `| \`${image}\` | ${f.openssh} | ${f.python} | ${f.systemd} | ${f.timeSync.package} | ${f.sshSocket ? "ssh.socket (keel disables it)" : "ssh.service"} | ${f.provenBy} |`,
  );
  return [IMAGES_START, "| image | OpenSSH | Python (`pythonVersion`) | systemd | time client | sshd from | proven by |", "|---|---|---|---|---|---|---|", ...rows, TABLE_END].join("\n");
}

/** docs/CONFIG.md with each section's table as configDocs.ts renders it; the prose around them as it is. */
export function renderConfigDoc(current: string): string {
  const marked = [...current.matchAll(/<!-- generated by npm run gen from configDocs\.ts: (.*) -->/g)].map((m) => m[1]);
  const sections = CONFIG_DOC.map((s) => s.heading);
  if (marked.join("\n") !== sections.join("\n")) {
    throw new Error(`docs/CONFIG.md: its generated tables (${marked.join(", ")}) are not configDocs.ts's sections (${sections.join(", ")}), one each in that order`);
  }
  let out = current;
  for (const section of CONFIG_DOC) {
    const start = out.indexOf(TABLE_START(section.heading));
    const end = out.indexOf(TABLE_END, start);
    if (start < 0 || end < 0) throw new Error(`docs/CONFIG.md: no generated table for "${section.heading}" (its markers are missing)`);
    out = out.slice(0, start) + renderTable(section) + out.slice(end + TABLE_END.length);
  }
  const start = out.indexOf(IMAGES_START);
  const end = out.indexOf(TABLE_END, start);
  if (start < 0 || end < 0) throw new Error(`docs/CONFIG.md: no generated table of images (its marker ${IMAGES_START} is missing)`);
  return out.slice(0, start) + renderImagesTable() + out.slice(end + TABLE_END.length);
}
