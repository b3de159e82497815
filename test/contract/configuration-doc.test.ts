/**
 * docs/configuration.md is the one reference of every environment variable: it is checked against the zod shapes
 * the services load (services/<service>/config.ts), both ways, service by service. A variable added to a schema
 * without a row, a row for a variable no service reads, or a wrong "Used by" cell fails here.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { clientEnvShape } from "../../services/client/config.js";
import { emailEnvShape } from "../../services/email/config.js";
import { imageEnvShape } from "../../services/image/config.js";
import { jobEnvShape } from "../../services/job/config.js";
import { userEnvShape } from "../../services/user/config.js";
import { ROOT } from "./support.js";

const SHAPES: Record<string, object> = {
  user: userEnvShape,
  job: jobEnvShape,
  email: emailEnvShape(),
  image: imageEnvShape,
  client: clientEnvShape,
};
const SERVICES = Object.keys(SHAPES);
/**
 * Read by `npm start` and the tools (scripts/), not by a service (the operator's token: services know its digest
 * only), or a family the services hand to a library unread.
 */
const NOT_A_SERVICE_VARIABLE = /^(MCSV_PG_PORT|MCSV_S3_PORT|MCSV_INTERNAL_TOKEN|OTEL_.*)$/;

interface Row {
  names: string[];
  usedBy: string[];
}

/** The variables of each table row (`A`, `B`; `_SUFFIX` continues the previous name's prefix) and its services. */
function rows(markdown: string): Row[] {
  return markdown
    .split("\n")
    .filter((line) => line.startsWith("| `"))
    .map((line) => {
      const cells = line.split("|").map((c) => c.trim());
      const names: string[] = [];
      for (const [, name] of cells[1]!.matchAll(/`([A-Z_][A-Z0-9_]*)`/g)) {
        const previous = names.at(-1);
        names.push(name!.startsWith("_") && previous ? previous.replace(/_[A-Z0-9]+$/, "") + name : name!);
      }
      const usedBy = cells[3]!.split(",").map((s) => s.trim()).flatMap((s) => (s === "all" ? SERVICES : SERVICES.includes(s) ? [s] : []));
      return { names, usedBy };
    });
}

const documented = rows(readFileSync(join(ROOT, "docs/configuration.md"), "utf8"));

test("every variable a service reads has a row, and the row names exactly the services that read it", () => {
  const problems: string[] = [];
  const all = new Set(SERVICES.flatMap((s) => Object.keys(SHAPES[s]!)));
  for (const name of all) {
    const readers = SERVICES.filter((s) => name in SHAPES[s]!);
    const row = documented.find((r) => r.names.includes(name));
    if (!row) problems.push(`${name} (read by ${readers.join(", ")}) has no row`);
    else if ([...row.usedBy].sort().join() !== [...readers].sort().join()) problems.push(`${name}: the row says ${row.usedBy.join(", ") || "no service"}, but ${readers.join(", ")} read it`);
  }
  expect(problems).toEqual([]);
});

test("every documented variable is read by a service (or by npm start)", () => {
  const known = new Set(SERVICES.flatMap((s) => Object.keys(SHAPES[s]!)));
  const unknown = documented.flatMap((r) => r.names).filter((name) => !known.has(name) && !NOT_A_SERVICE_VARIABLE.test(name));
  expect(unknown).toEqual([]);
  expect(documented.length).toBeGreaterThan(30);
});
