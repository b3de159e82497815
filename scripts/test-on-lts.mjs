#!/usr/bin/env node
/**
 * Runs the end-to-end workflow and document tests again on the current Node.js LTS (Node 20, which the machines here ship, has
 * reached its end of life): the `node` package from the npm registry brings that version, and the test system starts
 * the five services with the same binary (the test checks it). Part of `npm test`.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const LTS = "24";
const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const node = execFileSync("npx", ["-y", "-p", `node@${LTS}`, "node", "-p", "process.execPath"], { cwd: root, encoding: "utf8" }).trim();
const version = execFileSync(node, ["--version"], { encoding: "utf8" }).trim();
if (!version.startsWith(`v${LTS}.`)) throw new Error(`expected Node ${LTS}, got ${version} from ${node}`);
process.stderr.write(`[test] the workflow and document tests again, on Node ${version}\n`);
const result = spawnSync(node, [join(root, "node_modules/.bin/jest"), "--runInBand", "test/e2e/workflows.test.ts", "test/e2e/documents.test.ts"], {
  cwd: root,
  stdio: "inherit",
  env: { ...process.env, NODE_OPTIONS: "--experimental-vm-modules --no-warnings=ExperimentalWarning" },
});
process.exit(result.status ?? 1);
