/**
 * The watches of this process, by conversion: ONE subscription to the conversion's change notifications and ONE read
 * of its row per change, shared by all its watchers (a thousand watchers of a conversion cost one query per change,
 * not a thousand), and a cap on the watches a tenant holds open at once.
 *
 * The cap is per process: with N replicas a tenant may hold up to N times TENANT_MAX_WATCHES streams. It is there
 * so that one tenant cannot exhaust a process's connections and memory; a stream costs no query while it waits.
 */
import { resourceExhausted } from "../shared/errors.js";
import type { ConversionChanges } from "./conversion-changes.js";
import type { Queryable } from "./outbox.js";
import type { ConversionRow } from "./records.js";
import { watchReads } from "./metrics.js";

/** Reads a conversion's row by id, whatever its tenant (the watcher checks it). */
export type ConversionReader = (id: string) => Promise<ConversionRow | undefined>;

export function conversionReader(db: Queryable): ConversionReader {
  return async (id) => (await db.query<ConversionRow>("select * from mcsv_user.conversions where id = $1", [id])).rows[0];
}

export interface WatchHubOptions {
  /** Watches one tenant may hold open at once in this process. */
  maxPerTenant: number;
}

/** When a tenant at its cap may try again: watches end when their conversion does, usually within seconds. */
const WATCH_RETRY_SECONDS = 10;

interface Conversion {
  /** Bumped by every notification: a watcher that saw an older version has a change to read. */
  version: number;
  watchers: Set<Watcher>;
  /** The latest read, shared by every watcher that asks for the same version. */
  read?: { version: number; row: Promise<ConversionRow | undefined>; settled: boolean } | undefined;
  unsubscribe: () => void;
}

interface Watcher {
  seen: number;
  wake?: (() => void) | undefined;
}

/** One open watch: the changes of one conversion, for one watcher. */
export interface Watch {
  /**
   * The row as it is after a change this watch has not seen yet (at once on the first call), read once for every
   * watcher of the conversion; undefined when `signal` aborts first.
   */
  next(signal: AbortSignal): Promise<{ row: ConversionRow | undefined } | undefined>;
  close(): void;
}

export class WatchHub {
  private readonly conversions = new Map<string, Conversion>();
  private readonly perTenant = new Map<string, number>();

  constructor(
    private readonly changes: Pick<ConversionChanges, "subscribe" | "listening">,
    private readonly read: ConversionReader,
    private readonly options: WatchHubOptions,
  ) {}

  /** Watches held open by `tenant` in this process. */
  openBy(tenant: string): number {
    return this.perTenant.get(tenant) ?? 0;
  }

  /**
   * Opens a watch of conversion `id` for `tenant`, or throws resource_exhausted (with a retry-after hint) when the
   * tenant holds its cap already. It subscribes before the first read, so that no change slips in between.
   */
  open(tenant: string, id: string): Watch {
    const held = this.openBy(tenant);
    if (held >= this.options.maxPerTenant) {
      throw resourceExhausted(
        `this tenant already holds ${held} WatchConversion streams open, the most it may (TENANT_MAX_WATCHES); close one or wait`,
        WATCH_RETRY_SECONDS,
      );
    }
    this.perTenant.set(tenant, held + 1);
    const conversion = this.conversions.get(id) ?? this.follow(id);
    const watcher: Watcher = { seen: -1 };
    conversion.watchers.add(watcher);
    let closed = false;

    return {
      next: async (signal) => {
        while (watcher.seen === conversion.version) {
          if (signal.aborted || closed) return undefined;
          await new Promise<void>((resolve) => {
            const done = () => {
              signal.removeEventListener("abort", done);
              watcher.wake = undefined;
              resolve();
            };
            watcher.wake = done;
            signal.addEventListener("abort", done, { once: true });
          });
        }
        if (signal.aborted || closed) return undefined;
        watcher.seen = conversion.version;
        return { row: await this.latest(id, conversion) };
      },
      close: () => {
        if (closed) return;
        closed = true;
        watcher.wake?.();
        conversion.watchers.delete(watcher);
        const left = (this.perTenant.get(tenant) ?? 1) - 1;
        if (left > 0) this.perTenant.set(tenant, left);
        else this.perTenant.delete(tenant);
        if (conversion.watchers.size === 0 && this.conversions.get(id) === conversion) {
          conversion.unsubscribe();
          this.conversions.delete(id);
        }
      },
    };
  }

  private follow(id: string): Conversion {
    const conversion: Conversion = { version: 0, watchers: new Set(), unsubscribe: () => undefined };
    conversion.unsubscribe = this.changes.subscribe(id, () => {
      conversion.version++;
      for (const watcher of [...conversion.watchers]) watcher.wake?.();
    });
    this.conversions.set(id, conversion);
    return conversion;
  }

  /**
   * The row at the conversion's current version: the read in flight or done for it, else a new one. A finished read
   * is reused only while notifications are heard (a lost listener means changes may have gone unannounced).
   */
  private latest(id: string, conversion: Conversion): Promise<ConversionRow | undefined> {
    const current = conversion.read;
    if (current && current.version === conversion.version && (!current.settled || this.changes.listening)) return current.row;
    watchReads.inc();
    const read: NonNullable<Conversion["read"]> = { version: conversion.version, row: this.read(id), settled: false };
    conversion.read = read;
    read.row.then(
      () => (read.settled = true),
      () => {
        // A failed read is not shared with later callers: they try again.
        if (conversion.read === read) conversion.read = undefined;
      },
    );
    return read.row;
  }
}
