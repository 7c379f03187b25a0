import { readFileSync } from "node:fs";
import { join } from "node:path";

/** The repository root (this file lives in plan/). */
export const REPO_ROOT = join(__dirname, "..");

/**
 * Reads a static file shipped in the repository (scripts/, cloud-init/files/). Static files live as
 * files so they can be linted and read as what they are; the plan embeds their exact bytes.
 */
export function readStatic(relativePath: string): string {
  return readFileSync(join(REPO_ROOT, relativePath), "utf8");
}
