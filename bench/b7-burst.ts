/**
 * B7: the original design's claim, 1,000 image conversions at once. 1,000 UserService.ConvertImage calls (0.3 MP
 * JPEG inline) are sent in one burst, without waiting for answers; every one must be accepted, and every conversion
 * must complete. A call refused with resource_exhausted (the gateway's byte budget, #10) is sent again after its
 * retry-after, as a client should; acceptance latency runs from the first send to the answer (QUEUED). The drain runs from the
 * first call to the last conversion SUCCEEDED, read from Postgres (polling the gateway would load it). The floor is the
 * image service's own capacity (B1), measured in the same run: drain rate / capacity.
 * Targets: acceptance p95 < 500 ms, every conversion SUCCEEDED, and a drain rate ≥ 0.75 of the image service's.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import pg from "pg";
import type { BenchSystem } from "./lib/bench-system.js";
import { cpuPerItem, cpuSnapshot } from "./lib/bench-system.js";
import type { BenchOptions } from "./lib/context.js";
import type { TestImage } from "./lib/images.js";
import { percentiles, round, sleep, type Percentiles } from "./lib/stats.js";

export interface B7Result {
  image: string;
  conversions: number;
  acceptedMs: Percentiles;
  rejected: number;
  /** Calls sent again after a resource_exhausted refusal and its retry-after. */
  retries: number;
  /** The first rejection's message, if any. */
  firstRejection?: string;
  succeeded: number;
  failed: number;
  /** From the first call until the last conversion SUCCEEDED (or the deadline). */
  drainMs: number;
  drainedPerSecond: number;
  capacityPerSecond: number;
  /** drainedPerSecond / capacityPerSecond. */
  drainRatio: number;
  cpuMsPerConversion: Record<string, number>;
  target: { maxAcceptP95Ms: number; minDrainRatio: number; met: boolean };
}

/** How many of the conversions `ids` have reached each terminal state (read from Postgres: no load on the gateway). */
async function finished(db: pg.Client, ids: string[]): Promise<{ succeeded: number; failed: number }> {
  const { rows } = await db.query<{ state: string; n: string }>(
    `select state, count(*) as n from mcsv_user.conversions where id = any($1::uuid[]) and state in ('succeeded', 'failed') group by 1`,
    [ids],
  );
  const count = (state: string) => Number(rows.find((r) => r.state === state)?.n ?? 0);
  return { succeeded: count("succeeded"), failed: count("failed") };
}

export async function runB7(bench: BenchSystem, image: TestImage, capacityPerSecond: number, options: BenchOptions): Promise<B7Result> {
  const count = options.quick ? 100 : 1_000;
  const cpuBefore = cpuSnapshot(bench);
  const started = performance.now();
  let retries = 0;
  const calls = Array.from({ length: count }, async (_, i) => {
    const sent = performance.now();
    for (let attempt = 1; ; attempt++) {
      try {
        const { conversion } = await bench.users.convertImage(
          { userEmail: `b7-${i}@bench.example.com`, filename: `b7-${i}.jpg`, idempotencyKey: `b7-${i}`, source: { case: "imageData", value: image.bytes } },
          { timeoutMs: 60_000 },
        );
        return { id: conversion!.id, ms: performance.now() - sent };
      } catch (error) {
        const retryAfter = error instanceof ConnectError && error.code === Code.ResourceExhausted ? Number(error.metadata.get("retry-after") ?? "1") : undefined;
        if (retryAfter === undefined || attempt >= 30) throw error;
        retries++;
        await sleep(retryAfter * 1000);
      }
    }
  });
  const settled = await Promise.allSettled(calls);
  const accepted = settled.flatMap((s) => (s.status === "fulfilled" ? [s.value] : []));
  const rejections = settled.filter((s): s is PromiseRejectedResult => s.status === "rejected");
  options.log(`B7 ${accepted.length} of ${count} accepted in ${Math.round(performance.now() - started)} ms (${retries} sent again after resource_exhausted, ${rejections.length} rejected)`);

  const ids = accepted.map((a) => a.id);
  const deadline = started + (options.quick ? 60_000 : 300_000);
  let done = { succeeded: 0, failed: 0 };
  const db = new pg.Client({ connectionString: bench.system.env["DATABASE_URL"] });
  await db.connect();
  try {
    while (performance.now() < deadline) {
      done = await finished(db, ids);
      if (done.succeeded + done.failed >= ids.length) break;
      await sleep(100);
    }
  } finally {
    await db.end();
  }
  const drainMs = performance.now() - started;
  const drainedPerSecond = (done.succeeded * 1000) / drainMs;
  const acceptedMs = percentiles(accepted.map((a) => a.ms));
  const drainRatio = round(drainedPerSecond / capacityPerSecond);
  const result: B7Result = {
    image: image.name,
    conversions: count,
    acceptedMs: { p50: round(acceptedMs.p50, 1), p95: round(acceptedMs.p95, 1), p99: round(acceptedMs.p99, 1), max: round(acceptedMs.max, 1) },
    rejected: rejections.length,
    retries,
    ...(rejections[0] ? { firstRejection: String(rejections[0].reason).slice(0, 300) } : {}),
    succeeded: done.succeeded,
    failed: done.failed,
    drainMs: Math.round(drainMs),
    drainedPerSecond: round(drainedPerSecond, 2),
    capacityPerSecond: round(capacityPerSecond, 2),
    drainRatio,
    cpuMsPerConversion: cpuPerItem(cpuBefore, cpuSnapshot(bench), Math.max(1, done.succeeded)),
    target: {
      maxAcceptP95Ms: 500,
      minDrainRatio: 0.75,
      met: rejections.length === 0 && done.succeeded === count && acceptedMs.p95 < 500 && drainRatio >= 0.75,
    },
  };
  options.log(
    `B7 burst of ${count}: accepted p95 ${acceptedMs.p95.toFixed(0)} ms, ${done.succeeded} succeeded and ${done.failed} failed in ${Math.round(drainMs)} ms: ` +
      `${result.drainedPerSecond}/s, ${drainRatio} of the image service's ${result.capacityPerSecond}/s`,
  );
  return result;
}
