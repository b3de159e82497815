/**
 * `npm run generate`: regenerates gen/ (the TypeScript of @mcsv/sdk) and openapi/ (OpenAPI 3.1) from proto/ with
 * buf.gen.yaml, and services/shared/grpc/gen/ (the gRPC reflection and health protocols) from proto-grpc/ with
 * buf.gen.grpc.yaml; it deletes generated files whose proto source is gone.
 *
 * `tsx scripts/generate.ts --out <dir>` writes <dir>/gen, <dir>/openapi and <dir>/services/shared/grpc/gen instead and
 * leaves the repository alone: the freshness gate (test/contract/gates.test.ts) compares that output with the
 * committed files.
 */
import { execFileSync } from "node:child_process";
import { cpSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { generatedFiles } from "./lib/generated-files.js";

const root = fileURLToPath(new URL("..", import.meta.url));

const { values } = parseArgs({ options: { out: { type: "string" } } });
const out = values.out === undefined ? mkdtempSync(join(tmpdir(), "mcsv-generate-")) : resolve(values.out);
for (const template of ["buf.gen.yaml", "buf.gen.grpc.yaml"]) {
  execFileSync(join(root, "node_modules/.bin/buf"), ["generate", "--template", template, "--output", out], {
    cwd: root,
    stdio: "inherit",
  });
}

if (values.out === undefined) {
  const fresh = new Set(generatedFiles(out));
  for (const stale of generatedFiles(root).filter((file) => !fresh.has(file))) {
    rmSync(join(root, stale));
    console.log(`removed stale ${stale}`);
  }
  for (const file of fresh) cpSync(join(out, file), join(root, file));
  rmSync(out, { recursive: true, force: true });
  console.log(`generated ${fresh.size} files into gen/, openapi/ and services/shared/grpc/gen/ (${relative(process.cwd(), root) || "."})`);
}
