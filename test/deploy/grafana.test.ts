/**
 * Grafana as code: the provisioned data sources link metrics, traces and logs both ways, and the dashboards are valid
 * Grafana JSON whose every query parses as PromQL, uses a provisioned data source, and reads only metrics that the
 * services really register (their prom-client registry, loaded in process) or recording rules that the rules define.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { initMetrics, registry } from "../../services/shared/metrics.js";
import {
  collectExpressions,
  dashboardExpressions,
  datasourceUid,
  metricNamesIn,
  panelsOf,
  promqlSyntaxErrors,
  recordedNames,
  recordingRulesIn,
  type Dashboard,
} from "../support/promql.js";
import { ROOT, readYaml } from "./support.js";

interface Datasource {
  name: string;
  type: string;
  uid: string;
  url: string;
  isDefault?: boolean;
  jsonData?: Record<string, any>;
}

const DATASOURCES_FILE = "grafana/provisioning/datasources/datasources.yaml";
const datasources = readYaml<{ apiVersion: number; datasources: Datasource[] }>(DATASOURCES_FILE).datasources;
const byUid = new Map(datasources.map((d) => [d.uid, d]));
const DASHBOARD_FILES = readdirSync(join(ROOT, "grafana/dashboards")).filter((f) => f.endsWith(".json"));
const dashboards = DASHBOARD_FILES.map((file) => ({ file, dashboard: JSON.parse(readFileSync(join(ROOT, "grafana/dashboards", file), "utf8")) as Dashboard & Record<string, any> }));

/** Grafana expands $VAR/${VAR} from the environment in provisioning files, and `$$` stands for a literal `$`. */
const unescapeDollars = (value: string) => value.replaceAll("$$", "$");

describe("data sources", () => {
  test("Prometheus, Tempo and Loki with fixed uids, Prometheus the default", () => {
    expect(datasources.map((d) => [d.uid, d.type, d.url]).sort()).toEqual([
      ["loki", "loki", "http://loki:3100"],
      ["prometheus", "prometheus", "http://prometheus:9090"],
      ["tempo", "tempo", "http://tempo:3200"],
    ]);
    expect(datasources.filter((d) => d.isDefault).map((d) => d.uid)).toEqual(["prometheus"]);
  });

  test("every literal $ is escaped, so Grafana's environment expansion cannot eat ${__value.raw} or $__tags", () => {
    const text = readFileSync(join(ROOT, DATASOURCES_FILE), "utf8");
    const body = text.split("\n").filter((line) => !line.trimStart().startsWith("#")).join("\n");
    expect(body.replaceAll("$$", "")).not.toContain("$");
  });

  test("exemplars on Prometheus histograms open the trace in Tempo", () => {
    const destinations = byUid.get("prometheus")!.jsonData!["exemplarTraceIdDestinations"] as Array<{ name: string; datasourceUid: string }>;
    expect(destinations).toEqual([expect.objectContaining({ name: "trace_id", datasourceUid: "tempo" })]);
  });

  test("a trace opens its service's logs filtered by trace id, its metrics, and the service graph", () => {
    const tempo = byUid.get("tempo")!.jsonData!;
    expect(tempo["tracesToLogsV2"]).toEqual(expect.objectContaining({ datasourceUid: "loki", filterByTraceID: true, tags: [{ key: "service.name", value: "service" }] }));
    expect(byUid.has(tempo["tracesToLogsV2"].datasourceUid)).toBe(true);
    expect(tempo["tracesToMetrics"].datasourceUid).toBe("prometheus");
    expect(tempo["serviceMap"]).toEqual({ datasourceUid: "prometheus" });
    expect(tempo["nodeGraph"]).toEqual({ enabled: true });
    for (const query of tempo["tracesToMetrics"].queries as Array<{ query: string }>) {
      // Grafana replaces $__tags with service="<service.name>" before the query runs.
      const expr = unescapeDollars(query.query).replace("$__tags", 'service="image-svc"');
      expect({ expr, errors: promqlSyntaxErrors(expr) }).toEqual({ expr, errors: [] });
      expect(metricNamesIn(expr).every((name) => name.startsWith("mcsv_rpc_duration_seconds"))).toBe(true);
    }
  });

  test("a trace_id in a log line opens the trace in Tempo", () => {
    const [field, ...others] = byUid.get("loki")!.jsonData!["derivedFields"] as Array<{ matcherRegex: string; datasourceUid: string; url: string }>;
    expect(others).toEqual([]);
    expect(field!.datasourceUid).toBe("tempo");
    expect(unescapeDollars(field!.url)).toBe("${__value.raw}");
    // A line as services/shared/logger.ts writes it (winston's json format: JSON without spaces).
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    const line = JSON.stringify({ level: "info", message: "conversion done", service: "image-svc", timestamp: "2026-11-22T03:40:26.123Z", trace_id: traceId, span_id: "00f067aa0ba902b7" });
    expect(new RegExp(field!.matcherRegex).exec(line)?.[1]).toBe(traceId);
  });

  test("dashboards are provisioned from the folder that compose mounts", () => {
    const providers = readYaml<{ providers: Array<{ type: string; options: { path: string } }> }>("grafana/provisioning/dashboards/dashboards.yaml").providers;
    expect(providers).toEqual([expect.objectContaining({ type: "file", options: expect.objectContaining({ path: "/etc/grafana/dashboards" }) })]);
  });
});

describe("dashboards", () => {
  test("overview, pipeline and node-runtime, each with a unique uid and title", () => {
    expect(DASHBOARD_FILES.sort()).toEqual(["node-runtime.json", "overview.json", "pipeline.json"]);
    const uids = dashboards.map((d) => d.dashboard.uid);
    expect(new Set(uids).size).toBe(uids.length);
    expect(new Set(dashboards.map((d) => d.dashboard.title)).size).toBe(uids.length);
  });

  test.each(DASHBOARD_FILES)("%s: Grafana dashboard JSON with unique panel ids, laid out without overlaps", (file) => {
    const dashboard = dashboards.find((d) => d.file === file)!.dashboard;
    expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(36);
    expect(dashboard.id ?? null).toBeNull(); // a provisioned dashboard must not carry a database id
    expect(typeof dashboard.uid).toBe("string");
    const panels = panelsOf(dashboard);
    expect(panels.length).toBeGreaterThan(5);
    const ids = panels.map((p) => p.id);
    expect(ids.every((id) => Number.isInteger(id))).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
    const boxes = panels.map((p) => ({ id: p.id, ...(p as any).gridPos })) as Array<{ id: number; x: number; y: number; w: number; h: number }>;
    for (const box of boxes) {
      expect(box.x + box.w).toBeLessThanOrEqual(24);
      for (const other of boxes) {
        if (other.id <= box.id) continue;
        const overlap = box.x < other.x + other.w && other.x < box.x + box.w && box.y < other.y + other.h && other.y < box.y + box.h;
        expect({ panels: [box.id, other.id], overlap }).toEqual({ panels: [box.id, other.id], overlap: false });
      }
    }
  });

  test.each(DASHBOARD_FILES)("%s: a multi-value `service` variable that every metric query applies", (file) => {
    const dashboard = dashboards.find((d) => d.file === file)!.dashboard;
    const variable = dashboard.templating?.list?.find((v) => v.name === "service");
    expect(variable).toEqual(expect.objectContaining({ type: "query", datasource: { type: "prometheus", uid: "prometheus" }, multi: true, includeAll: true }));
    for (const e of dashboardExpressions(dashboard, file).filter((e) => e.kind !== "variable")) {
      if (metricNamesIn(e.expr).length === 0) continue; // SLO panels read recording rules only
      expect({ where: e.where, filtersByService: e.expr.includes('service=~"$service"') }).toEqual({ where: e.where, filtersByService: true });
    }
  });

  test.each(DASHBOARD_FILES)("%s: every panel and query uses a provisioned data source", (file) => {
    const dashboard = dashboards.find((d) => d.file === file)!.dashboard;
    for (const panel of panelsOf(dashboard)) {
      if (panel.type === "row") continue;
      const panelUid = datasourceUid(panel.datasource);
      expect({ panel: panel.title, uid: panelUid, known: byUid.has(panelUid ?? "") }).toEqual({ panel: panel.title, uid: panelUid, known: true });
      expect(panel.targets?.length ?? 0).toBeGreaterThan(0);
      for (const target of panel.targets ?? []) {
        const uid = datasourceUid(target.datasource) ?? panelUid;
        expect({ panel: panel.title, uid, known: byUid.has(uid ?? "") }).toEqual({ panel: panel.title, uid, known: true });
      }
    }
  });
});

describe("every PromQL expression of the dashboards and rules", () => {
  const expressions = collectExpressions();

  test("parses without a syntax error", () => {
    expect(expressions.length).toBeGreaterThan(50);
    const broken = expressions.filter((e) => promqlSyntaxErrors(e.expr).length > 0).map((e) => `${e.file}: ${e.where}: ${promqlSyntaxErrors(e.expr)[0]!.context}`);
    expect(broken).toEqual([]);
  });

  test("reads only metrics that the services register", async () => {
    initMetrics("test-svc");
    const services = readdirSync(join(ROOT, "services"), { withFileTypes: true }).filter((d) => d.isDirectory() && readdirSync(join(ROOT, "services", d.name)).includes("metrics.ts"));
    for (const dir of services) await import(`../../services/${dir.name}/metrics.js`);
    // The sample names a scrape shows: histograms expose _bucket, _sum and _count.
    const exported = new Set(
      registry.getMetricsAsArray().flatMap((metric) => {
        const { name, type } = metric as unknown as { name: string; type: string };
        return type === "histogram" ? [`${name}_bucket`, `${name}_sum`, `${name}_count`] : type === "summary" ? [name, `${name}_sum`, `${name}_count`] : [name];
      }),
    );
    const unknown = expressions.flatMap((e) => metricNamesIn(e.expr).filter((name) => !exported.has(name)).map((name) => `${name} (${e.file}: ${e.where})`));
    expect(unknown).toEqual([]);
  });

  test("reads only recording rules that the rule files define", () => {
    const defined = new Set(recordedNames());
    const undefinedRules = expressions.flatMap((e) => recordingRulesIn(e.expr).filter((name) => !defined.has(name)).map((name) => `${name} (${e.file}: ${e.where})`));
    expect(undefinedRules).toEqual([]);
  });
});
