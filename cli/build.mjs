// Bundles the CLI into one file, dist/mcsv.mjs, with every dependency inside (the SDK from its TypeScript sources),
// so that the packed @mcsv/cli needs nothing but Node. `npm pack` runs it (prepack).
import { chmodSync } from "node:fs";
import { build } from "esbuild";

const outfile = new URL("dist/mcsv.mjs", import.meta.url).pathname;
await build({
  entryPoints: [new URL("main.ts", import.meta.url).pathname],
  outfile,
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  conditions: ["mcsv-source"],
  minify: true,
  legalComments: "linked",
  // Bundled CommonJS modules call require() for Node's built-ins; give them one.
  banner: { js: "#!/usr/bin/env node\nimport { createRequire as __mcsvRequire } from 'node:module'; const require = __mcsvRequire(import.meta.url);" },
  logLevel: "warning",
});
chmodSync(outfile, 0o755);
