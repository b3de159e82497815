/** Business metrics of the job service, on the shared registry. Labels: task, state, outcome (no ids). */
import { prom, registry } from "../shared/metrics.js";
import { TASK_NAMES } from "../shared/tasks.js";
import { JOB_STATES, type JobStateName } from "./model.js";

/** Where the queue gauge reads its counts on each scrape; set by the running service. */
let countSource: (() => Promise<{ task: string; state: JobStateName; count: number }[]>) | undefined;
let onCountError: ((error: unknown) => void) | undefined;

export function setQueueCountSource(source: typeof countSource, onError?: (error: unknown) => void): void {
  countSource = source;
  onCountError = onError;
}

export const queueJobs = new prom.Gauge({
  name: "mcsv_queue_jobs",
  help: "Jobs in the ledger by task and state (available, scheduled, executing, retryable, completed, discarded, cancelled), counted at scrape time.",
  labelNames: ["task", "state"] as const,
  registers: [registry],
  async collect() {
    if (!countSource) return;
    try {
      const counts = await countSource();
      this.reset();
      // Every task and state, zeros included, so that series do not vanish when a state empties.
      for (const task of TASK_NAMES) for (const state of JOB_STATES) this.set({ task, state }, 0);
      for (const { task, state, count } of counts) this.inc({ task, state }, count);
    } catch (error) {
      // A scrape during a database outage keeps the last counts instead of failing /metrics.
      onCountError?.(error);
    }
  },
});

/**
 * Outcomes: completed, retry, discarded, cancelled (finished its attempt after CancelJob), interrupted (shutdown),
 * skipped (already finished), abandoned (its worker died; counted by the replica that released it), stranded (it
 * ended, but graphile's record of that was lost to a Postgres outage; released by its own process).
 */
export const jobAttemptsTotal = new prom.Counter({
  name: "mcsv_job_attempts_total",
  help: "Job attempts by task and outcome (completed, retry, discarded, cancelled, superseded, interrupted, lost, skipped, abandoned).",
  labelNames: ["task", "outcome"] as const,
  registers: [registry],
});

export const jobDurationSeconds = new prom.Histogram({
  name: "mcsv_job_duration_seconds",
  help: "Duration of one job attempt by task and outcome.",
  labelNames: ["task", "outcome"] as const,
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300],
  enableExemplars: true,
  registers: [registry],
});

export const storageSweptObjects = new prom.Counter({
  name: "mcsv_storage_swept_objects_total",
  help: "Expired objects deleted by the storage sweep, by prefix (uploads, originals, pdfs).",
  labelNames: ["prefix"] as const,
  registers: [registry],
});

export const deadWorkerPoolsTotal = new prom.Counter({
  name: "mcsv_job_dead_workers_total",
  help: "Job worker pools declared dead (no heartbeat within JOB_WORKER_DEAD_AFTER_MS), whose locks graphile was told to release.",
  registers: [registry],
});

/** Callbacks refused at send time by the allowlist check (reason: invalid, not_allowed, non_public). */
export const callbackRefusalsTotal = new prom.Counter({
  name: "mcsv_callback_refusals_total",
  help: "Callback POSTs refused at send time by CALLBACK_ALLOWED_HOSTS, by reason (invalid, not_allowed, non_public).",
  labelNames: ["reason"] as const,
  registers: [registry],
});

export const discardFollowUpsTotal = new prom.Counter({
  name: "mcsv_job_discard_follow_ups_total",
  help: "Jobs discarded when their lease expired whose task declares a follow-up (onDiscarded), by task and outcome (added; duplicate: added by an earlier round; failed: could not be described, see the log).",
  labelNames: ["task", "outcome"] as const,
  registers: [registry],
});
