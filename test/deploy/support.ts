/** Helpers of the deployment tests: paths, running the real tools (promtool, kubectl, ImageMagick), YAML files. */
import { accessSync, constants, cpSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { parse as parseYaml, parseAllDocuments } from "yaml";
import { ROOT } from "../support/promql.js";

export { ROOT };

import { run, type RunResult } from "../support/run.js";

export { run, type RunResult };

/** The absolute path of `command` on PATH, or undefined. */
export function which(command: string): string | undefined {
  for (const dir of (process.env["PATH"] ?? "").split(delimiter)) {
    const candidate = join(dir, command);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** A fresh copy of `dir` (relative to the repository root) in a temporary directory. */
export function tempCopy(dir: string): string {
  const target = mkdtempSync(join(tmpdir(), "mcsv-deploy-"));
  cpSync(join(ROOT, dir), target, { recursive: true });
  return target;
}

/** One YAML document, YAML 1.1 merge keys (`<<: *anchor`) resolved as Docker Compose does. */
export function readYaml<T>(path: string): T {
  return parseYaml(readFileSync(join(ROOT, path), "utf8"), { merge: true }) as T;
}

/** Every document of a multi-document YAML stream (kubectl output); throws on the first YAML error. */
export function parseYamlStream<T>(text: string): T[] {
  return parseAllDocuments(text).map((doc) => {
    if (doc.errors.length > 0) throw doc.errors[0];
    return doc.toJS() as T;
  }).filter((doc) => doc !== null);
}
