/**
 * Migrations are expand-only, so that a rolling update is safe: during it the old pods run against the new schema
 * (the pre-deploy job applies it first). A migration that removes or narrows what code may still use (dropping a
 * table or column, renaming, changing a type, adding NOT NULL, dropping a default) is a contract step, allowed only
 * with a `-- Contract:` note that says which release stopped using what it removes, and how to deploy it.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT } from "../../scripts/lib/system.js";

/** Statements that old code can trip over. */
const CONTRACTING = [
  /\bdrop\s+table\b/i,
  /\bdrop\s+column\b/i,
  /\brename\s+(to|column)\b/i,
  /\balter\s+column\s+\w+\s+(set\s+data\s+)?type\b/i,
  /\bset\s+not\s+null\b/i,
  /\bdrop\s+default\b/i,
];

/** The statements of a migration's Up part, comments removed. */
function upStatements(sql: string): string {
  const up = sql.split(/^--\s*Down Migration/im)[0]!;
  return up
    .split("\n")
    .map((line) => line.replace(/--.*$/, ""))
    .join("\n");
}

const migrations = ["user", "job"].flatMap((service) => {
  const dir = join(ROOT, "services", service, "migrations");
  return readdirSync(dir)
    .filter((file) => file.endsWith(".sql"))
    .map((file) => ({ file: `services/${service}/migrations/${file}`, sql: readFileSync(join(dir, file), "utf8") }));
});

test("every migration is expand-only, or says why and how it contracts", () => {
  const unannounced = migrations.flatMap(({ file, sql }) => {
    const found = CONTRACTING.filter((pattern) => pattern.test(upStatements(sql)));
    return found.length > 0 && !/^--\s*Contract:\s*\S/m.test(sql) ? [`${file}: ${found.map(String).join(", ")}`] : [];
  });
  expect(unannounced).toEqual([]);
});

test("the check sees a contracting statement, and not one in a comment or in the Down part", () => {
  const probe = (sql: string) => CONTRACTING.some((pattern) => pattern.test(upStatements(sql)));
  expect(probe("-- Up Migration\nalter table t drop column c;\n")).toBe(true);
  expect(probe("-- Up Migration\nalter table t alter column c set not null;\n")).toBe(true);
  expect(probe("-- Up Migration\n-- we never drop column c here\nalter table t add column d int;\n-- Down Migration\nalter table t drop column d;\n")).toBe(false);
});
