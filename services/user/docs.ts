/**
 * Swagger UI at /docs: swagger-ui-dist's static files, with an initializer that lists the OpenAPI document of each
 * of the five services, served from the repository's openapi/ directory at /docs/openapi/<service>.yaml.
 */
import { createReadStream } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseDocument } from "yaml";
import type { AnyResponse } from "../shared/listener.js";
import type { PageHandler } from "../shared/server.js";
import { SERVICE_KEYS } from "../shared/topology.js";

export const DEFAULT_OPENAPI_DIR = fileURLToPath(new URL("../../openapi/", import.meta.url));

const swaggerUiDir = dirname(createRequire(import.meta.url).resolve("swagger-ui-dist/package.json"));

/** The files of swagger-ui-dist that the page loads, and their types; nothing else of the package is served. */
const ASSETS: Record<string, string> = {
  "index.html": "text/html; charset=utf-8",
  "index.css": "text/css; charset=utf-8",
  "swagger-ui.css": "text/css; charset=utf-8",
  "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
  "swagger-ui-standalone-preset.js": "text/javascript; charset=utf-8",
  "oauth2-redirect.html": "text/html; charset=utf-8",
  "oauth2-redirect.js": "text/javascript; charset=utf-8",
  "favicon-16x16.png": "image/png",
  "favicon-32x32.png": "image/png",
};

function initializer(): string {
  const urls = SERVICE_KEYS.map((key) => ({ url: `./openapi/${key}.yaml`, name: `${key[0]!.toUpperCase()}${key.slice(1)}Service` }));
  return `window.onload = function () {
  window.ui = SwaggerUIBundle({
    urls: ${JSON.stringify(urls)},
    "urls.primaryName": "UserService",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: "StandaloneLayout",
  });
};
`;
}

const COMMON_HEADERS = { "x-content-type-options": "nosniff", "referrer-policy": "no-referrer" };

async function sendFile(res: AnyResponse, path: string, contentType: string, head: boolean, cacheControl: string): Promise<boolean> {
  let size: number;
  try {
    const info = await stat(path);
    if (!info.isFile()) return false;
    size = info.size;
  } catch {
    return false;
  }
  res.writeHead(200, { ...COMMON_HEADERS, "content-type": contentType, "content-length": size, "cache-control": cacheControl });
  if (head) {
    res.end();
    return true;
  }
  await new Promise<void>((resolve, reject) => {
    const stream = createReadStream(path);
    stream.once("error", reject);
    res.once("close", () => resolve());
    stream.pipe(res);
  });
  return true;
}

/**
 * The gateway's own document as this gateway serves it: its first server is the page's own origin, so that Swagger
 * UI's "Try it out" calls the gateway that served it, whatever its address (the committed document names the local
 * default, which stays as the second choice).
 */
async function gatewayDocument(openapiDir: string): Promise<string | undefined> {
  let text: string;
  try {
    text = await readFile(join(openapiDir, "user.yaml"), "utf8");
  } catch {
    return undefined;
  }
  const doc = parseDocument(text);
  const servers = (doc.toJS() as { servers?: unknown[] }).servers ?? [];
  doc.set("servers", [{ url: "/", description: "This gateway" }, ...servers]);
  return doc.toString({ lineWidth: 0 });
}

export function docsPages(openapiDir: string = DEFAULT_OPENAPI_DIR): PageHandler {
  const script = initializer();
  return async (req, res) => {
    if (req.method !== "GET" && req.method !== "HEAD") return false;
    const head = req.method === "HEAD";
    const path = (req.url ?? "/").split("?")[0]!;
    if (path === "/docs") {
      res.writeHead(301, { ...COMMON_HEADERS, location: "/docs/" });
      res.end();
      return true;
    }
    if (!path.startsWith("/docs/")) return false;
    const name = path.slice("/docs/".length) || "index.html";
    if (name === "swagger-initializer.js") {
      res.writeHead(200, { ...COMMON_HEADERS, "content-type": "text/javascript; charset=utf-8", "content-length": Buffer.byteLength(script), "cache-control": "no-cache" });
      if (head) res.end();
      else res.end(script);
      return true;
    }
    const spec = /^openapi\/([a-z]+)\.yaml$/.exec(name);
    if (spec) {
      if (!(SERVICE_KEYS as string[]).includes(spec[1]!)) return false;
      if (spec[1] !== "user") return sendFile(res, join(openapiDir, `${spec[1]}.yaml`), "application/yaml; charset=utf-8", head, "no-cache");
      const text = await gatewayDocument(openapiDir);
      if (text === undefined) return false;
      res.writeHead(200, { ...COMMON_HEADERS, "content-type": "application/yaml; charset=utf-8", "content-length": Buffer.byteLength(text), "cache-control": "no-cache" });
      if (head) res.end();
      else res.end(text);
      return true;
    }
    const type = ASSETS[name];
    return type ? sendFile(res, join(swaggerUiDir, name), type, head, "public, max-age=3600") : false;
  };
}
