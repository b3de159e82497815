/** Business metrics of the gateway, in the shared registry. */
import { prom, registry } from "../shared/metrics.js";

export const usersCreated = new prom.Counter({
  name: "mcsv_users_created_total",
  help: "Users created (a repeat of a CreateUser request is not counted).",
  registers: [registry],
});

export const conversionsRequested = new prom.Counter({
  name: "mcsv_conversions_requested_total",
  help: "Conversions accepted, by where the image came from (inline or upload); repeats are not counted.",
  labelNames: ["source"] as const,
  registers: [registry],
});

export const conversionResults = new prom.Counter({
  name: "mcsv_conversion_results_total",
  help: "Conversions that reached a terminal state, by state (succeeded or failed).",
  labelNames: ["state"] as const,
  registers: [registry],
});

export const outboxDeliveries = new prom.Counter({
  name: "mcsv_outbox_deliveries_total",
  help: "Attempts to hand an outbox job to the job service, by task and outcome (sent, retry or dead).",
  labelNames: ["task", "outcome"] as const,
  registers: [registry],
});

let countPending: (() => Promise<number>) | undefined;

/** Where the pending-outbox gauge reads its value, on every scrape; returns the function that stops it. */
export function countOutboxPendingWith(count: () => Promise<number>): () => void {
  countPending = count;
  return () => {
    if (countPending === count) countPending = undefined;
  };
}

export const outboxPending = new prom.Gauge({
  name: "mcsv_outbox_pending",
  help: "Outbox jobs not yet accepted by the job service (a growing value means the job service is unreachable).",
  registers: [registry],
  async collect() {
    // A scrape must not fail because Postgres is away: the last value stays.
    const value = await countPending?.().catch(() => undefined);
    if (value !== undefined) this.set(value);
  },
});

export const watchersActive = new prom.Gauge({
  name: "mcsv_conversion_watchers",
  help: "WatchConversion streams open in this process.",
  registers: [registry],
});

export const watchReads = new prom.Counter({
  name: "mcsv_conversion_watch_reads_total",
  help: "Reads of a watched conversion's row: one per change of the conversion, however many watch it (watch-hub.ts).",
  registers: [registry],
});

export const retentionPruned = new prom.Counter({
  name: "mcsv_retention_pruned_rows_total",
  help: "Rows deleted by the retention prune, by table (conversions, uploads, outbox).",
  labelNames: ["table"] as const,
  registers: [registry],
});
