/** Business metrics of the email service, on the shared registry. Labels: template type, outcome, transport. */
import { prom, registry } from "../shared/metrics.js";

export const emailsTotal = new prom.Counter({
  name: "mcsv_emails_total",
  help: "SendEmail requests by email type and outcome (sent, or the Connect code of the failure).",
  labelNames: ["type", "outcome"] as const,
  registers: [registry],
});

export const emailDeliverySeconds = new prom.Histogram({
  name: "mcsv_email_delivery_seconds",
  help: "Time to hand one email to the transport (Resend or the dev outbox), successful deliveries only.",
  labelNames: ["type", "transport"] as const,
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  enableExemplars: true,
  registers: [registry],
});
