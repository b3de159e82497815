/**
 * The web console at /console/: a static page (console/) that calls this gateway, same origin, through @mcsv/sdk.
 *
 * From a checkout, the bundle is built in memory by esbuild the first time the console is asked for, then served
 * from memory: the console's TypeScript stays its only source (no build step to forget, no committed bundle to go
 * stale), and only a gateway whose console is opened pays the few hundred milliseconds, once. The production build
 * (scripts/build.ts) writes the bundle beside the page instead, and the image carries no esbuild.
 *
 * Every answer carries a strict Content-Security-Policy: the page has no inline script or style, and talks only to
 * its own origin.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { AnyResponse } from "../shared/listener.js";
import type { PageHandler } from "../shared/server.js";
import { bundleConsole, type BundledFile } from "./console-bundle.js";

export const DEFAULT_CONSOLE_DIR = fileURLToPath(new URL("../../console/", import.meta.url));

export const CONSOLE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' blob: data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

const CONSOLE_HEADERS = {
  "content-security-policy": CONSOLE_CSP,
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  // Small files, and a new gateway may serve a new console: always revalidate.
  "cache-control": "no-cache",
};

export interface ConsoleOptions {
  /** Grafana's base URL (GRAFANA_URL): the page links each trace to Grafana's Explore view. */
  grafanaUrl?: string | undefined;
  /** GATEWAY_MAX_IMAGE_BYTES: the page refuses larger images before sending them. */
  maxImageBytes: number;
  /** Where the console's sources live (tests). */
  dir?: string;
}

interface Asset {
  type: string;
  body: Buffer;
}

/** What the production build writes beside index.html. */
export const PREBUILT = ["console.js", "console.css"];

const TYPES: Record<string, string> = {
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
};

/** The bundle's files: prebuilt beside the page (the production build), or else bundled now from the sources. */
async function bundledFiles(dir: string): Promise<BundledFile[]> {
  try {
    return await Promise.all(PREBUILT.map(async (name) => ({ name, contents: await readFile(join(dir, name)) })));
  } catch {
    return bundleConsole(dir);
  }
}

/** The page, its bundle and stylesheet, and its settings, by name under /console/. */
async function consoleAssets(options: ConsoleOptions): Promise<Map<string, Asset>> {
  const dir = options.dir ?? DEFAULT_CONSOLE_DIR;
  const [bundle, html] = await Promise.all([bundledFiles(dir), readFile(join(dir, "index.html"))]);
  const assets = new Map<string, Asset>([["index.html", { type: "text/html; charset=utf-8", body: html }]]);
  for (const file of bundle) {
    assets.set(file.name, { type: TYPES[file.name.slice(file.name.lastIndexOf("."))] ?? "application/octet-stream", body: Buffer.from(file.contents) });
  }
  const settings = { maxImageBytes: options.maxImageBytes, ...(options.grafanaUrl ? { grafanaUrl: options.grafanaUrl } : {}) };
  assets.set("config.json", { type: "application/json", body: Buffer.from(JSON.stringify(settings)) });
  return assets;
}

function send(res: AnyResponse, status: number, headers: Record<string, string>, body: Buffer | string, head: boolean): void {
  res.writeHead(status, { ...CONSOLE_HEADERS, ...headers, "content-length": Buffer.byteLength(body) });
  if (head) res.end();
  else res.end(body);
}

export function consolePages(options: ConsoleOptions): PageHandler {
  let assets: Promise<Map<string, Asset>> | undefined;
  return async (req, res) => {
    const path = (req.url ?? "/").split("?")[0]!;
    if (path !== "/console" && !path.startsWith("/console/")) return false;
    if (req.method !== "GET" && req.method !== "HEAD") {
      send(res, 405, { allow: "GET, HEAD", "content-type": "text/plain; charset=utf-8" }, "the console answers GET and HEAD only\n", false);
      return true;
    }
    const head = req.method === "HEAD";
    if (path === "/console") {
      send(res, 301, { location: "/console/" }, "", head);
      return true;
    }
    // A failed build is not cached: the next request tries again (and the server logs this one's error).
    assets ??= consoleAssets(options).catch((error: unknown) => {
      assets = undefined;
      throw error;
    });
    const asset = (await assets).get(path.slice("/console/".length) || "index.html");
    if (!asset) send(res, 404, { "content-type": "text/plain; charset=utf-8" }, "no such file in the console\n", head);
    else send(res, 200, { "content-type": asset.type }, asset.body, head);
    return true;
  };
}
