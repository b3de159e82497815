/**
 * A service loads only what it uses: following the imports of each service's entry points (main.ts and its
 * telemetry.ts) through the repository's own modules, the services without a database reach no Postgres driver,
 * no migration tool and no job queue.
 */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { ROOT } from "./support.js";

/** The packages every module reachable from `entries` imports, with the first module that does. */
function packagesReachedFrom(entries: string[]): Map<string, string> {
  const packages = new Map<string, string>();
  const seen = new Set<string>();
  const queue = entries.map((e) => join(ROOT, e));
  while (queue.length > 0) {
    const file = queue.shift()!;
    if (seen.has(file)) continue;
    seen.add(file);
    const source = readFileSync(file, "utf8");
    // Static imports and re-exports, and dynamic imports with a literal specifier; `import type` loads nothing.
    for (const match of source.matchAll(/(?:^|\n)\s*(?:import|export)\s+(type\s+)?(?:[^"';]*?\s+from\s+)?["']([^"']+)["']|import\(\s*["']([^"']+)["']\s*\)/g)) {
      const specifier = match[2] ?? match[3];
      if (match[1] || !specifier) continue;
      if (specifier.startsWith(".")) {
        const target = resolve(dirname(file), specifier.replace(/\.js$/, ".ts"));
        if (existsSync(target)) queue.push(target);
      } else {
        const name = specifier.startsWith("@") ? specifier.split("/").slice(0, 2).join("/") : specifier.split("/")[0]!;
        if (!packages.has(name)) packages.set(name, relative(ROOT, file));
      }
    }
  }
  return packages;
}

const entries = (service: string) => [`services/${service}/main.ts`, `services/${service}/telemetry.ts`];
const DATABASE_PACKAGES = ["pg", "node-pg-migrate", "graphile-worker"];

test.each(["email", "image", "client"])("the %s service reaches no database package", (service) => {
  const reached = packagesReachedFrom(entries(service));
  expect(reached.size).toBeGreaterThan(5);
  expect(DATABASE_PACKAGES.filter((p) => reached.has(p)).map((p) => `${p} (imported by ${reached.get(p)})`)).toEqual([]);
});

test("the walk finds the database packages where they are used", () => {
  expect(packagesReachedFrom(entries("job")).has("graphile-worker")).toBe(true);
  expect(packagesReachedFrom(entries("user")).has("pg")).toBe(true);
});
