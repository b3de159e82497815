/**
 * `npm run build`: the production build in dist/, what deploy/Dockerfile runs. The services compiled to JavaScript
 * (tsc), with the files they read beside them (migrations, templates, the OpenAPI documents, the ImageMagick policy)
 * and the web console bundled once, so that `node dist/services/<name>/main.js` runs with the production
 * dependencies alone: no tsx, no esbuild. The SDK (gen/) is built to gen/dist by its own workspace.
 */
import { cpSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { ROOT } from "./lib/system.js";
import { bundleConsole } from "../services/user/console-bundle.js";

const OUT = join(ROOT, process.env["MCSV_BUILD_DIR"] ?? "dist");

function run(command: string, args: string[]): void {
  const result = spawnSync(command, args, { cwd: ROOT, stdio: "inherit" });
  if (result.status !== 0) throw new Error(`${command} ${args.join(" ")} failed with exit code ${result.status ?? result.signal}`);
}

rmSync(OUT, { recursive: true, force: true });
run("npm", ["run", "build", "--workspace", "gen"]);
run(join(ROOT, "node_modules/.bin/tsc"), ["-p", "tsconfig.build.json", "--outDir", OUT]);

/** What the compiled services read at run time, relative to the repository, each to the same place under OUT. */
const assets = [
  ...["user", "job"].map((service) => `services/${service}/migrations`),
  "services/email/templates",
  "services/client/templates",
  "openapi",
  "deploy/imagemagick",
  "console/index.html",
];
for (const asset of assets) cpSync(join(ROOT, asset), join(OUT, asset), { recursive: true });
for (const file of await bundleConsole(join(ROOT, "console"))) writeFileSync(join(OUT, "console", file.name), file.contents);
process.stderr.write(`[build] ${OUT}: ${readdirSync(join(OUT, "services")).join(", ")} and their files\n`);
