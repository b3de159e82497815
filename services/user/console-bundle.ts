/**
 * The console's bundle: its TypeScript and CSS through esbuild, for the browser. The gateway builds it in memory when
 * it serves the console from its sources (a checkout); the production build (scripts/build.ts) writes it once, and
 * the image then carries the files and no esbuild (loaded here only when needed).
 */
import { join } from "node:path";

export interface BundledFile {
  /** console.js or console.css */
  name: string;
  contents: Uint8Array;
}

export async function bundleConsole(dir: string): Promise<BundledFile[]> {
  const { build } = await import("esbuild");
  const result = await build({
    entryPoints: [
      { in: join(dir, "main.ts"), out: "console" },
      { in: join(dir, "console.css"), out: "console" },
    ],
    bundle: true,
    write: false,
    outdir: "/console",
    format: "esm",
    platform: "browser",
    target: "es2022",
    minify: true,
    legalComments: "none",
    conditions: ["mcsv-source"],
    tsconfig: join(dir, "tsconfig.json"),
    logLevel: "silent",
  });
  return result.outputFiles.map((file) => ({ name: file.path.slice(file.path.lastIndexOf("/") + 1), contents: file.contents }));
}
