/**
 * graphile-worker as a dispatcher, and the one place that names its schema.
 *
 * The ledger (ledger.ts) owns every job's state. graphile only wakes a worker when a job's attempt is due: each
 * dispatch is a graphile job whose payload is a ticket, the ledger id and the dispatch number. A ticket whose number
 * the ledger has moved past (the job was dispatched again, retried or finished meanwhile) is stale, and its run does
 * nothing. Only graphile's public API is used: `add_job` inside the ledger's own statements (so a dispatch exists
 * exactly when the ledger write commits), `force_unlock_workers` for worker pools that died, and the runner.
 */
import type { JsonObject } from "@bufbuild/protobuf";
import type { PoolClient } from "../shared/database.js";

/** What a dispatch carries: the ledger row and which of its dispatches this is. */
export interface Ticket {
  job: string;
  dispatch: number;
}

/**
 * How often graphile itself retries a dispatch: only when the task wrapper throws, which it does only when it
 * cannot reach the ledger to claim the attempt (graphile's own default, with its back-off over about 3 days).
 */
const DISPATCH_MAX_ATTEMPTS = 25;

/**
 * The SQL expression that dispatches the ledger row `alias` (columns id, task, queue, dispatch, run_at, priority):
 * a graphile job with its ticket, run at the row's run_at. Used inside the ledger's own statements.
 */
export function dispatchExpression(alias: string): string {
  return `graphile_worker.add_job(${alias}.task, json_build_object('job', ${alias}.id::text, 'dispatch', ${alias}.dispatch),
    queue_name => ${alias}.queue, run_at => ${alias}.run_at, max_attempts => ${DISPATCH_MAX_ATTEMPTS}, priority => ${alias}.priority::int)`;
}

/** The ticket of a dispatch's payload; undefined for a job graphile got otherwise (a crontab entry, or a legacy row). */
export function ticketOf(payload: unknown): Ticket | undefined {
  if (payload === null || typeof payload !== "object" || Array.isArray(payload)) return undefined;
  const { job, dispatch } = payload as Record<string, unknown>;
  if (typeof job !== "string" || !/^[1-9][0-9]{0,18}$/.test(job) || typeof dispatch !== "number" || !Number.isInteger(dispatch)) return undefined;
  return { job, dispatch };
}

/** Payload keys that are no task argument: graphile's crontab marker, and the trace key of legacy dispatches. */
const RESERVED_KEYS = ["_cron", "_trace"];

/** The task arguments of a payload that graphile got without a ticket (a crontab entry, or a legacy dispatch). */
export function argsOfPayload(payload: unknown): JsonObject {
  if (payload === null || typeof payload !== "object" || Array.isArray(payload)) return {};
  return Object.fromEntries(Object.entries(payload as JsonObject).filter(([key]) => !RESERVED_KEYS.includes(key)));
}

/**
 * Lets go of the jobs that graphile locked for worker pools that are gone (graphile would wait 4 hours). Their
 * dispatches then run and find their tickets stale: the ledger has already dispatched those jobs again.
 */
export async function unlockDeadWorkers(client: PoolClient, workerIds: string[]): Promise<void> {
  if (workerIds.length > 0) await client.query(`select graphile_worker.force_unlock_workers($1::text[])`, [workerIds]);
}
