// Runs index.ts the way `pulumi up` does, in a fresh node process: ts-node registered exactly as
// @pulumi/pulumi's cmd/run/run.js registers it (project tsconfig, type-checked, run.js's default
// compiler options overridden by ours), then the program `require`d as CommonJS — under Pulumi's
// mock runtime instead of an engine. Prints one JSON line: resource types/names and the outputs.
// Usage: node test/support/pulumi-child.js <stack>
"use strict";
const path = require("path");
const repo = path.join(__dirname, "..", "..");
const tsutils = require("@pulumi/pulumi/tsutils");

const tsConfigPath = path.join(repo, "tsconfig.json");
const { tsnodeRequire, typescriptRequire } = tsutils.typeScriptRequireStrings();
require(tsnodeRequire).register({
  compiler: typescriptRequire,
  transpileOnly: undefined,
  project: tsConfigPath,
  skipProject: false,
  compilerOptions: { target: "ES2020", module: "nodenext", moduleResolution: "nodenext", sourceMap: "true", ...tsutils.loadTypeScriptCompilerOptions(tsConfigPath) },
});

async function main() {
  const stack = process.argv[2];
  const { installMocks, promiseOf, runInStack } = require("./mocks");
  const { stackConfig } = require("./stack");
  const { raw, secretKeys } = stackConfig(stack);
  await installMocks(stack, raw, secretKeys);
  const { outputs: program, registered: resources } = await runInStack(async () => ({ ...require(path.join(repo, "index.ts")) }));
  const outputs = {};
  for (const [name, value] of Object.entries(program)) outputs[name] = await promiseOf(value);
  await Promise.all(resources.map((r) => promiseOf(r.resource.urn)));
  process.stdout.write(JSON.stringify({ resources: resources.map((r) => `${r.type} ${r.name}`), outputs }) + "\n");
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack ? e.stack : e) + "\n");
  process.exit(1);
});
