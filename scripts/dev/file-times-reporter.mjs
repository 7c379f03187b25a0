// A vitest reporter for scripts/dev/test.js: each test file's wall time as vitest's own summary line
// shows it (TestModule.diagnostic().duration: collecting, hooks and tests, a VM's boot in beforeAll
// included), written as JSON to the file named by KEEL_FILE_TIMES. The JSON reporter's start and end
// times leave the hooks out, which for a VM file is most of it.
import * as fs from "node:fs";

export default class FileTimesReporter {
  /** @param {import("vitest/node").TestModule[]} modules */
  onTestRunEnd(modules) {
    const out = process.env.KEEL_FILE_TIMES;
    if (!out) return;
    const files = modules.map((m) => ({ file: m.moduleId, seconds: m.diagnostic().duration / 1000, passed: m.state() === "passed" }));
    fs.writeFileSync(out, `${JSON.stringify(files, null, 2)}\n`);
  }
}
