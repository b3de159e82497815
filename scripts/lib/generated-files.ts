/**
 * What `npm run generate` writes: gen/**\/*.ts (not dist/ or node_modules/), everything in openapi/, and the gRPC
 * protocols' TypeScript in services/shared/grpc/gen/.
 */
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";

/** The generated files under dir, relative to it, sorted. */
export function generatedFiles(dir: string): string[] {
  const walk = (sub: string): string[] =>
    !existsSync(join(dir, sub))
      ? []
      : readdirSync(join(dir, sub), { withFileTypes: true }).flatMap((entry) => {
          const path = join(sub, entry.name);
          if (entry.isDirectory()) return entry.name === "dist" || entry.name === "node_modules" ? [] : walk(path);
          return sub.startsWith("openapi") || entry.name.endsWith(".ts") ? [path] : [];
        });
  return [...walk("gen"), ...walk("openapi"), ...walk("services/shared/grpc/gen")].sort();
}
