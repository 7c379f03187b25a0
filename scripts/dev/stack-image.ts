// `ts-node --transpile-only scripts/dev/stack-image.ts STACK IMAGE`: sets keel:image and that
// image's Python (keel:pythonVersion, images.ts) in Pulumi.STACK.yaml, the rest of the file as
// it is. The staging workflow's `image` input runs it before `pulumi up -s staging`, so the
// acceptance run can prove an image the checked-in stack file does not name (docs/CI.md).
import * as fs from "node:fs";
import * as path from "node:path";
import { parseDocument } from "yaml";
import { IMAGE_FACTS, IMAGES, type Image } from "../../images";

/** The stack file's text with keel:image set to `image` and keel:pythonVersion to its Python. */
export function withImage(text: string, image: Image): string {
  const doc = parseDocument(text);
  if (doc.errors.length) throw new Error(`not YAML: ${doc.errors[0].message}`);
  if (!doc.has("config")) throw new Error("no config: block");
  doc.setIn(["config", "keel:image"], image);
  doc.setIn(["config", "keel:pythonVersion"], IMAGE_FACTS[image].python);
  return doc.toString({ lineWidth: 0 });
}

if (require.main === module) {
  const [stack, image] = process.argv.slice(2);
  if (!stack || !/^[a-z0-9-]+$/.test(stack) || !(IMAGES as readonly string[]).includes(image ?? "")) {
    console.error(`usage: stack-image.ts STACK IMAGE (IMAGE one of ${IMAGES.join(", ")}); got ${JSON.stringify(process.argv.slice(2))}`);
    process.exit(2);
  }
  const file = path.join(__dirname, "..", "..", `Pulumi.${stack}.yaml`);
  try {
    fs.writeFileSync(file, withImage(fs.readFileSync(file, "utf8"), image as Image));
  } catch (e) {
    console.error(`stack-image.ts: ${path.basename(file)}: ${(e as Error).message}; nothing changed`);
    process.exit(1);
  }
  console.log(`stack-image.ts: Pulumi.${stack}.yaml: keel:image ${image}, keel:pythonVersion ${IMAGE_FACTS[image as Image].python}`);
}
