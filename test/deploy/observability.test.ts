/**
 * Tempo, Loki and Alloy configuration, checked against each other, against the compose stack and against a log line
 * that the services' real logger writes inside a span: the OTLP port the services send to is the one Tempo listens on,
 * Tempo's span metrics reach Prometheus, Alloy's pipeline is well-formed, reads the fields the logger writes, labels only
 * low-cardinality ones and pushes where Loki listens, and Grafana's derived field finds the trace id in that line.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Writable } from "node:stream";
import { ROOT_CONTEXT, context, trace, type Context, type ContextManager } from "@opentelemetry/api";
import winston from "winston";
import { createLogger } from "../../services/shared/logger.js";
import { ROOT, readYaml } from "./support.js";

const alloy = readFileSync(join(ROOT, "deploy/alloy/config.alloy"), "utf8");
const compose = readYaml<{ name: string; services: Record<string, { volumes?: string[]; environment?: Record<string, string> }> }>("deploy/docker-compose.yml");
const datasources = readYaml<{ datasources: Array<{ uid: string; url: string; jsonData?: any }> }>("grafana/provisioning/datasources/datasources.yaml").datasources;

/** Alloy source with comments removed and string contents emptied, so that only its structure is left. */
function alloyStructure(source: string): string {
  let out = "";
  for (let i = 0; i < source.length; i++) {
    const char = source[i]!;
    if (char === "/" && source[i + 1] === "/") {
      while (i < source.length && source[i] !== "\n") i++;
      out += "\n";
    } else if (char === '"') {
      for (i++; i < source.length && source[i] !== '"'; i++) if (source[i] === "\\") i++;
      out += '""';
    } else {
      out += char;
    }
  }
  return out;
}

/** Top-level Alloy components, `kind "label" {` at the start of a line, as kind.label (e.g. loki.process.mcsv). */
function components(source: string): string[] {
  const code = source
    .split("\n")
    .filter((line) => !line.trimStart().startsWith("//"))
    .join("\n");
  return [...code.matchAll(/^([a-z_]+(?:\.[a-z_]+)+)\s+"([\w-]+)"\s*\{/gm)].map((m) => `${m[1]}.${m[2]}`);
}

/** One log line as services/shared/logger.ts writes it, inside a span with the given ids. */
async function loggedLine(traceId: string, spanId: string): Promise<{ raw: string; json: Record<string, unknown> }> {
  // The global context manager, as the OpenTelemetry SDK installs it in a running service.
  const storage = new AsyncLocalStorage<Context>();
  const manager: ContextManager = {
    active: () => storage.getStore() ?? ROOT_CONTEXT,
    with: (ctx, fn, thisArg, ...args) => storage.run(ctx, () => fn.call(thisArg, ...args)),
    bind: (_ctx, target) => target,
    enable() {
      return this;
    },
    disable() {
      return this;
    },
  };
  context.setGlobalContextManager(manager);
  const lines: string[] = [];
  const logger = createLogger("image-svc", { format: "json" });
  logger.clear().add(new winston.transports.Stream({ stream: new Writable({ write: (chunk: Buffer, _enc, done) => (lines.push(chunk.toString()), done()) }) }));
  const span = trace.wrapSpanContext({ traceId, spanId, traceFlags: 1 });
  context.with(trace.setSpan(ROOT_CONTEXT, span), () => logger.info("conversion done", { stage: "pdf" }));
  await new Promise((resolve) => setImmediate(resolve));
  context.disable();
  expect(lines).toHaveLength(1);
  const raw = lines[0]!.trim();
  return { raw, json: JSON.parse(raw) as Record<string, unknown> };
}

describe("Tempo", () => {
  const tempo = readYaml<any>("deploy/tempo/tempo.yaml");

  test("receives OTLP over HTTP on the port the services export to, on every interface", () => {
    const endpoint = compose.services["user"]!.environment!["OTEL_EXPORTER_OTLP_ENDPOINT"]!;
    const port = new URL(endpoint).port;
    expect(tempo.distributor.receivers.otlp.protocols.http.endpoint).toBe(`0.0.0.0:${port}`);
    expect(new URL(endpoint).hostname).toBe("tempo");
  });

  test("serves Grafana on the port the data source names, and keeps its data in the mounted volume", () => {
    const url = new URL(datasources.find((d) => d.uid === "tempo")!.url);
    expect(String(tempo.server.http_listen_port)).toBe(url.port);
    const mount = compose.services["tempo"]!.volumes!.find((v) => v.startsWith("tempo-data:"))!.split(":")[1]!;
    const paths = [tempo.storage.trace.wal.path, tempo.storage.trace.local.path, tempo.metrics_generator.storage.path, tempo.metrics_generator.traces_storage.path];
    for (const path of paths) expect(path.startsWith(`${mount}/`)).toBe(true);
  });

  test("generates the service graph and span metrics into Prometheus, with exemplars", () => {
    expect(tempo.overrides.defaults.metrics_generator.processors).toEqual(expect.arrayContaining(["service-graphs", "span-metrics", "local-blocks"]));
    expect(tempo.metrics_generator.storage.remote_write).toEqual([{ url: "http://prometheus:9090/api/v1/write", send_exemplars: true }]);
  });
});

describe("Loki", () => {
  const loki = readYaml<any>("deploy/loki/loki.yaml");

  test("listens where Grafana and Alloy expect it, keeps structured metadata, stores in the mounted volume", () => {
    const url = new URL(datasources.find((d) => d.uid === "loki")!.url);
    expect(String(loki.server.http_listen_port)).toBe(url.port);
    expect(alloy).toContain(`url = "http://${url.hostname}:${url.port}/loki/api/v1/push"`);
    expect(loki.limits_config.allow_structured_metadata).toBe(true);
    expect(loki.schema_config.configs.at(-1)).toEqual(expect.objectContaining({ store: "tsdb", schema: "v13" }));
    const mount = compose.services["loki"]!.volumes!.find((v) => v.startsWith("loki-data:"))!.split(":")[1]!;
    expect(loki.common.path_prefix).toBe(mount);
    for (const path of Object.values(loki.common.storage.filesystem) as string[]) expect(path.startsWith(`${mount}/`)).toBe(true);
    expect(loki.auth_enabled).toBe(false);
  });
});

describe("Alloy", () => {
  test("is well-formed: balanced braces, every referenced component defined", () => {
    const structure = alloyStructure(alloy);
    let depth = 0;
    for (const char of structure) {
      if (char === "{") depth++;
      if (char === "}") depth--;
      expect(depth).toBeGreaterThanOrEqual(0);
    }
    expect(depth).toBe(0);
    const defined = components(alloy);
    expect(defined).toEqual(["discovery.docker.containers", "discovery.relabel.containers", "loki.source.docker.containers", "loki.process.mcsv", "loki.write.local"]);
    const references = [...structure.matchAll(/=\s*\[?\s*((?:discovery|loki)\.[a-z_.]+)\.(targets|rules|receiver)\b/g)].map((m) => m[1]!);
    expect(references.length).toBeGreaterThanOrEqual(4);
    for (const reference of references) expect(defined).toContain(reference);
  });

  test("reads this compose project's containers through the socket that compose mounts read-only", () => {
    expect(alloy).toContain(`"com.docker.compose.project=${compose.name}"`);
    expect(alloy.match(/host\s*=\s*"unix:\/\/\/var\/run\/docker.sock"/g)).toHaveLength(2);
    expect(compose.services["alloy"]!.volumes).toContain("/var/run/docker.sock:/var/run/docker.sock:ro");
  });

  test("parses the fields the services' logger writes: service and level as labels, trace and span ids as metadata", async () => {
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    const { raw, json: line } = await loggedLine(traceId, "00f067aa0ba902b7");
    expect(line).toEqual(expect.objectContaining({ service: "image-svc", level: "info", message: "conversion done", trace_id: traceId, span_id: "00f067aa0ba902b7" }));

    const block = (name: string) => new RegExp(`${name}\\s*\\{([\\s\\S]*?)\\n  \\}`).exec(alloy)?.[1] ?? "";
    const keys = (body: string) => [...body.matchAll(/^\s*(\w+)\s*=/gm)].map((m) => m[1]!).filter((k) => k !== "expressions" && k !== "values");
    const extracted = Object.fromEntries([...block("stage.json").matchAll(/(\w+)\s*=\s*"(\w+)"/g)].map((m) => [m[1]!, m[2]!]));
    for (const field of Object.values(extracted)) expect({ field, written: field in line }).toEqual({ field, written: true });
    expect(keys(block("stage.labels")).sort()).toEqual(["level", "service"]);
    expect(keys(block("stage.structured_metadata")).sort()).toEqual(["span_id", "trace_id"]);
    expect(block("stage.timestamp")).toMatch(/source\s*=\s*"timestamp"/);
    expect(new Date(String(line["timestamp"])).toISOString()).toBe(line["timestamp"]);

    // Grafana's derived field finds the trace id in the very same line (Loki → Tempo).
    const derived = datasources.find((d) => d.uid === "loki")!.jsonData.derivedFields[0];
    expect(new RegExp(derived.matcherRegex).exec(raw)?.[1]).toBe(traceId);
  });
});

test("retention is aligned: traces live as long as logs (every log line's trace link leads somewhere), metrics past the SLOs' 30 days", () => {
  const hours = (duration: string) => {
    const match = /^(\d+)(h|d)$/.exec(duration);
    if (!match) throw new Error(`not a duration in hours or days: ${duration}`);
    return Number(match[1]) * (match[2] === "d" ? 24 : 1);
  };
  const traces = hours(readYaml<any>("deploy/tempo/tempo.yaml").compactor.compaction.block_retention);
  const logs = hours(readYaml<any>("deploy/loki/loki.yaml").limits_config.retention_period);
  const flag = (compose.services["prometheus"] as unknown as { command: string[] }).command.find((c) => c.startsWith("--storage.tsdb.retention.time="))!;
  const metrics = hours(flag.split("=")[1]!);
  expect({ traces, logs }).toEqual({ traces: logs, logs });
  expect(metrics).toBeGreaterThanOrEqual(31 * 24);
});
