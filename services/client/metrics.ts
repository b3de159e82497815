/** Business metrics of the client service, on the shared registry. */
import { prom, registry } from "../shared/metrics.js";

export const clientEventsTotal = new prom.Counter({
  name: "mcsv_client_events_total",
  help: "Callbacks received, by kind (pdf_ready, email_sent) and result (recorded, or repeat of one already held).",
  labelNames: ["kind", "result"] as const,
  registers: [registry],
});

export const clientEventsHeld = new prom.Gauge({
  name: "mcsv_client_events_held",
  help: "Callbacks currently kept in memory.",
  registers: [registry],
});
