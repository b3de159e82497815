/** A call's trace: its id, read from the W3C `traceresponse` header, and where to see it in Grafana. */

/** The header the gateway's tracing interceptor sets on every answer (services/shared/tracing.ts). */
export const TRACE_RESPONSE = "traceresponse";

/** `00-<trace id>-<span id>-<flags>` (W3C Trace Context Level 2); an all-zero trace id is invalid. */
const TRACE_RESPONSE_VALUE = /^00-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$/;

export function traceIdOf(header: string | null): string | undefined {
  const match = header ? TRACE_RESPONSE_VALUE.exec(header.trim()) : null;
  return match && !/^0+$/.test(match[1]!) ? match[1] : undefined;
}

/** The uid of the Tempo datasource that grafana/provisioning/datasources/datasources.yaml provisions. */
const TEMPO_UID = "tempo";

/** Grafana Explore (schemaVersion 1 panes) opened on the trace in Tempo. */
export function grafanaTraceUrl(grafanaUrl: string, traceId: string): string {
  const panes = {
    trace: {
      datasource: TEMPO_UID,
      queries: [{ refId: "A", datasource: { type: "tempo", uid: TEMPO_UID }, queryType: "traceql", query: traceId }],
      range: { from: "now-24h", to: "now" },
    },
  };
  const url = new URL("explore", grafanaUrl.endsWith("/") ? grafanaUrl : `${grafanaUrl}/`);
  url.searchParams.set("schemaVersion", "1");
  url.searchParams.set("panes", JSON.stringify(panes));
  return url.toString();
}
