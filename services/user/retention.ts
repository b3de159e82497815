/**
 * Retention: the gateway's rows are not kept forever. A periodic prune deletes
 * - conversions finished more than CONVERSION_RETENTION_DAYS ago (one still queued or processing is kept: it is
 *   waiting for the job service's report);
 * - uploads created more than UPLOAD_RETENTION_HOURS ago that no remaining conversion names (the storage sweep
 *   deletes their objects after the same time);
 * - outbox rows delivered (or set aside as refused) more than OUTBOX_RETENTION_DAYS ago; rows still to deliver stay.
 *
 * Deletes go in small batches of rows locked with skip locked, so that the prune never waits for, nor holds up, a
 * request; several replicas may prune at once.
 */
import { describeError } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import { retentionPruned } from "./metrics.js";
import type { Queryable } from "./outbox.js";

export interface RetentionOptions {
  conversionRetentionMs: number;
  uploadRetentionMs: number;
  outboxRetentionMs: number;
  /** Time between two prunes. */
  intervalMs: number;
  /** Rows deleted by one statement. */
  batchSize?: number;
}

export type PruneCounts = Record<"conversions" | "uploads" | "outbox", number>;

/** One statement per table: deletes up to $2 rows older than $1 milliseconds, returns how many. */
const PRUNE: Record<keyof PruneCounts, string> = {
  conversions: `
    delete from mcsv_user.conversions where id in (
      select id from mcsv_user.conversions
      where finished_at < now() - make_interval(secs => $1::double precision / 1000)
      order by finished_at limit $2 for update skip locked)`,
  // Only after the conversions: an upload that a conversion names goes once that conversion is gone.
  uploads: `
    delete from mcsv_user.uploads where id in (
      select u.id from mcsv_user.uploads u
      where u.created_at < now() - make_interval(secs => $1::double precision / 1000)
        and not exists (select 1 from mcsv_user.conversions c where c.upload_id = u.id)
      order by u.created_at limit $2 for update skip locked)`,
  outbox: `
    delete from mcsv_user.outbox where id in (
      select id from mcsv_user.outbox
      where (sent_at is not null or dead_at is not null)
        and coalesce(sent_at, dead_at) < now() - make_interval(secs => $1::double precision / 1000)
      limit $2 for update skip locked)`,
};

export class Retention {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;
  private stopped = false;
  private readonly batchSize: number;

  constructor(
    private readonly db: Queryable,
    private readonly logger: Logger,
    private readonly options: RetentionOptions,
  ) {
    this.batchSize = options.batchSize ?? 500;
  }

  /** Prunes now, then every intervalMs. */
  start(): void {
    this.schedule(0);
  }

  /** Stops the loop and waits for the prune in progress (which stops after its current batch). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }

  /** One prune of every table, batch after batch; returns the rows deleted. Exposed for tests. */
  async prune(): Promise<PruneCounts> {
    const ages: PruneCounts = {
      conversions: this.options.conversionRetentionMs,
      uploads: this.options.uploadRetentionMs,
      outbox: this.options.outboxRetentionMs,
    };
    const deleted: PruneCounts = { conversions: 0, uploads: 0, outbox: 0 };
    for (const table of ["conversions", "uploads", "outbox"] as const) {
      for (;;) {
        const { rowCount } = await this.db.query(PRUNE[table], [ages[table], this.batchSize]);
        const n = rowCount ?? 0;
        deleted[table] += n;
        retentionPruned.inc({ table }, n);
        if (n < this.batchSize || this.stopped) break;
      }
    }
    if (deleted.conversions + deleted.uploads + deleted.outbox > 0) this.logger.info("old rows pruned", { deleted });
    return deleted;
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.prune()
        .catch((error: unknown) => this.logger.warn("retention prune failed; trying again later", { error: describeError(error) }))
        .finally(() => {
          this.running = undefined;
          this.schedule(this.options.intervalMs);
        });
    }, delayMs);
    this.timer.unref();
  }
}
