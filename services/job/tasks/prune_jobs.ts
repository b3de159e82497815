/**
 * prune_jobs (internal, run by the crontab, not enqueueable): deletes finished jobs older than JOB_RETENTION_DAYS
 * from the ledger, so that it does not grow without bound.
 */
import type { JobLedger } from "../ledger.js";
import type { TaskDefinition } from "./context.js";

export const PRUNE_TASK = "prune_jobs";

export function pruneJobsTask(deps: { ledger: Pick<JobLedger, "prune">; retentionMs: number }): TaskDefinition<Record<string, never>> {
  return {
    decode: () => ({ ok: true, payload: {} }),
    async run(_payload, ctx) {
      const pruned = await deps.ledger.prune(Math.round(deps.retentionMs / 1000));
      ctx.logger.info("job ledger pruned", { pruned });
    },
  };
}
