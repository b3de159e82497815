/**
 * graphile-worker is a dispatcher used through its public API alone (issue 12): no SQL of the services names its
 * tables or views, whose names and shapes change between versions. Its public SQL functions are allowed.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { ROOT } from "./support.js";

const PUBLIC_FUNCTIONS = new Set(["add_job", "add_jobs", "complete_jobs", "permanently_fail_jobs", "reschedule_jobs", "remove_job", "force_unlock_workers"]);

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (name === "node_modules" || name === "gen") return [];
    if (statSync(path).isDirectory()) return sources(path);
    return /\.(ts|sql)$/.test(name) ? [path] : [];
  });
}

test("the services name only graphile-worker's public SQL functions", () => {
  const uses = sources(join(ROOT, "services")).flatMap((path) =>
    [...readFileSync(path, "utf8").matchAll(/graphile_worker\.([a-z_]+)/g)].map((m) => ({ file: relative(ROOT, path), name: m[1]! })),
  );
  expect(uses.length).toBeGreaterThan(0);
  expect(uses.filter((u) => !PUBLIC_FUNCTIONS.has(u.name))).toEqual([]);
  // One module dispatches; the rest of the job service goes through it.
  expect([...new Set(uses.filter((u) => u.file.endsWith(".ts")).map((u) => u.file))]).toEqual(["services/job/dispatcher.ts"]);
});
