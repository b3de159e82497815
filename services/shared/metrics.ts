/**
 * One prom-client registry per process, served at GET /metrics: the Node runtime defaults plus RED metrics for
 * every RPC (see interceptors.ts) and each service's business metrics. Labels stay low-cardinality.
 *
 * Histograms carry the trace id of a sampled span as an OpenMetrics exemplar (`# {trace_id="…"}`), so that a slow
 * bucket in Grafana links to a trace in Tempo. prom-client accepts exemplars only on an OpenMetrics registry, so the
 * shared registry is one; /metrics serves OpenMetrics when the scrape asks for it (Prometheus does) and the classic
 * text format otherwise. Observe histograms through `observeDuration` or `startDurationTimer`, never `observe`
 * directly: an exemplar-enabled histogram's `observe` takes an object, not (labels, value).
 */
import { trace, TraceFlags, type SpanContext } from "@opentelemetry/api";
import client from "prom-client";

type ContentType = typeof client.Registry.PROMETHEUS_CONTENT_TYPE | typeof client.Registry.OPENMETRICS_CONTENT_TYPE;

let defaultLabels: Record<string, string> = {};

/** A registry whose own `metrics()` renders through views as well, so that nothing renames the shared counters. */
class SharedRegistry extends client.Registry<client.OpenMetricsContentType> {
  constructor() {
    super();
    this.setContentType(client.Registry.OPENMETRICS_CONTENT_TYPE);
  }

  override async metrics(): Promise<string> {
    return (await renderMetrics(client.Registry.OPENMETRICS_CONTENT_TYPE)).body;
  }
}

export const registry = new SharedRegistry();

let started = false;

/** Labels every series with the service name and starts the runtime collectors (once per process). */
export function initMetrics(service: string): client.Registry<client.OpenMetricsContentType> {
  if (!started) {
    started = true;
    defaultLabels = { service };
    registry.setDefaultLabels(defaultLabels);
    client.collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 10 });
  }
  return registry;
}

/** Whether the scrape's Accept header prefers OpenMetrics to the classic text format (by q-value). */
export function prefersOpenMetrics(accept: string | undefined): boolean {
  let openMetrics = -1;
  let text = -1;
  for (const range of (accept ?? "").split(",")) {
    const [type = "", ...params] = range.split(";").map((part) => part.trim().toLowerCase());
    const q = Number(params.find((p) => p.startsWith("q="))?.slice(2) ?? 1);
    if (!(q > 0)) continue;
    if (type === "application/openmetrics-text") openMetrics = Math.max(openMetrics, q);
    else if (type === "text/plain" || type === "text/*" || type === "*/*") text = Math.max(text, q);
  }
  return openMetrics >= 0 && openMetrics >= text;
}

interface MetricView {
  name: string;
  help: string;
  type: unknown;
  aggregator: unknown;
  get(): Promise<unknown>;
  getForPromString?(): Promise<unknown>;
}

/**
 * A stand-in for `metric` in a per-scrape registry. prom-client's OpenMetrics rendering strips `_total` from the
 * name of each counter it renders (and adds it back to the samples); on a view that leaves the real metric alone,
 * so both formats always see the names the metrics were created with.
 */
function viewOf(metric: client.Metric): MetricView {
  const source = metric as unknown as MetricView;
  const view: MetricView = {
    name: source.name,
    help: source.help,
    type: source.type,
    aggregator: source.aggregator,
    get: async () => ({ ...((await source.get()) as object), name: view.name }),
  };
  if (typeof source.getForPromString === "function") {
    view.getForPromString = async () => ({ ...((await source.getForPromString!()) as object), name: view.name });
  }
  return view;
}

/** The exposition of every metric in the format asked for (see `prefersOpenMetrics`), with its content type. */
export async function renderMetrics(format: ContentType | { accept: string | undefined }): Promise<{ contentType: string; body: string }> {
  const contentType =
    typeof format === "string" ? format : prefersOpenMetrics(format.accept) ? client.Registry.OPENMETRICS_CONTENT_TYPE : client.Registry.PROMETHEUS_CONTENT_TYPE;
  const scrape = new client.Registry<ContentType>();
  scrape.setContentType(contentType);
  scrape.setDefaultLabels(defaultLabels);
  for (const metric of registry.getMetricsAsArray()) scrape.registerMetric(viewOf(metric as unknown as client.Metric) as unknown as client.Metric);
  return { contentType, body: await scrape.metrics() };
}

/** The exemplar labels for `span`: its trace id when it was sampled (an unsampled trace exists nowhere to link to). */
function exemplarOf(span: SpanContext | undefined): Record<string, string> | undefined {
  if (!span || (span.traceFlags & TraceFlags.SAMPLED) === 0 || !trace.isSpanContextValid(span)) return undefined;
  return { trace_id: span.traceId };
}

/**
 * Observes `seconds` in `histogram` with the trace id of `span` (by default the active span) as exemplar.
 * Works on histograms with and without exemplars enabled.
 */
export function observeDuration<T extends string>(
  histogram: client.Histogram<T>,
  labels: client.LabelValues<T>,
  seconds: number,
  span: SpanContext | undefined = trace.getActiveSpan()?.spanContext(),
): void {
  if (!(histogram as unknown as { enableExemplars?: boolean }).enableExemplars) return histogram.observe(labels, seconds);
  const exemplarLabels = exemplarOf(span) as client.LabelValues<T> | undefined;
  histogram.observe(exemplarLabels ? { labels, value: seconds, exemplarLabels } : { labels, value: seconds });
}

/**
 * Starts timing now, in the active span; the returned function observes the elapsed seconds (with `endLabels`
 * added) and returns them. The replacement for prom-client's `startTimer`, with exemplars.
 */
export function startDurationTimer<T extends string>(histogram: client.Histogram<T>, startLabels: client.LabelValues<T> = {}): (endLabels?: client.LabelValues<T>) => number {
  const started = performance.now();
  const span = trace.getActiveSpan()?.spanContext();
  return (endLabels = {}) => {
    const seconds = (performance.now() - started) / 1000;
    observeDuration(histogram, { ...startLabels, ...endLabels }, seconds, span);
    return seconds;
  };
}

const RPC_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export const rpcDuration = new client.Histogram({
  name: "mcsv_rpc_duration_seconds",
  help: "Duration of Connect RPCs, by side (server or client), RPC service, method and Connect code.",
  labelNames: ["side", "rpc_service", "rpc_method", "code"] as const,
  buckets: RPC_BUCKETS,
  enableExemplars: true,
  registers: [registry],
});

export const rpcInFlight = new client.Gauge({
  name: "mcsv_rpc_in_flight",
  help: "Connect RPCs in progress, by side, RPC service and method.",
  labelNames: ["side", "rpc_service", "rpc_method"] as const,
  registers: [registry],
});

export { client as prom };
