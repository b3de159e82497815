/**
 * B2: the whole pipeline under open-loop load. UserService.ConvertImage (0.3 MP JPEG inline) at fixed arrival rates
 * of 25/50/75/90 % of B1's capacity, each request followed through WatchConversion until SUCCEEDED; its latency runs
 * from sending ConvertImage to receiving the SUCCEEDED snapshot. The floor, measured right after at the same
 * arrival rate: bare ImageMagick converting the same file. Pipeline overhead = e2e p50 − bare p50. Arrivals are
 * evenly spaced and never wait for answers (open loop), so a slow system meets a growing queue, as it would in
 * production. Target: overhead p50 ≤ 30 ms up to 75 %, no errors, and the job queue drains.
 */
import { availableParallelism } from "node:os";
import { ConversionState } from "@mcsv/sdk";
import type { BenchSystem } from "./lib/bench-system.js";
import pg from "pg";
import { cpuPerItem, cpuSnapshot, histogramTotals, rpcCounts } from "./lib/bench-system.js";
import type { BenchOptions } from "./lib/context.js";
import type { TestImage } from "./lib/images.js";
import { bareConvert } from "./lib/imagemagick.js";
import { percentiles, round, sleep, type Percentiles } from "./lib/stats.js";

export interface B2RateResult {
  loadFraction: number;
  arrivalsPerSecond: number;
  requests: number;
  e2eMs: Percentiles;
  bareMs: Percentiles;
  overheadP50Ms: number;
  /** e2e p50 / bare p50. */
  latencyRatio: number;
  errors: number;
  failed: number;
  /** Warnings and errors the services logged during the run. */
  problemsLogged: number;
  /** From the last arrival until the last conversion succeeded and the job queue was empty. */
  drainMs: number;
  queueDrained: boolean;
  /** CPU ms per conversion, by process. */
  cpuMsPerConversion: Record<string, number>;
  /** Mean of each image-service stage during the pipeline run, ms: how much of e2e is the conversion itself. */
  imageStagesMs: Record<string, number>;
  /** What one conversion costs in hops: RPCs served (by method) and Postgres transactions, per conversion. */
  perConversion: { rpcs: number; rpcsByMethod: Record<string, number>; postgresTransactions: number };
  target?: { maxOverheadMs: number; met: boolean };
}

export interface B2Result {
  image: string;
  capacityPerSecond: number;
  /**
   * What the whole pipeline can sustain on this machine, from the CPU one conversion costs across every process
   * (cores × 1000 / CPU ms per conversion, the least of the loads, where idle work is best amortised): how far below
   * the image service's capacity it is.
   */
  pipelineCapacityPerSecond: number;
  windowMs: number;
  rates: B2RateResult[];
}

const TERMINAL = new Set([ConversionState.SUCCEEDED, ConversionState.FAILED]);
const MAX_IN_FLIGHT = 5_000;

/** Fires `fire(i)` at evenly spaced instants for `durationMs`, never waiting for answers; resolves when all settled. */
async function openLoop<T>(perSecond: number, durationMs: number, fire: (i: number) => Promise<T>): Promise<{ settled: PromiseSettledResult<T>[]; lastArrival: number }> {
  const interval = 1000 / perSecond;
  const started = performance.now();
  const pending: Promise<T>[] = [];
  let lastArrival = started;
  for (let i = 0; i * interval < durationMs && i < MAX_IN_FLIGHT; i++) {
    const due = started + i * interval;
    const wait = due - performance.now();
    if (wait > 1) await sleep(wait);
    lastArrival = performance.now();
    pending.push(fire(i));
  }
  return { settled: await Promise.allSettled(pending), lastArrival };
}

async function stageTotals(bench: BenchSystem) {
  return histogramTotals(await bench.metrics("image"), "mcsv_conversion_stage_duration_seconds", "stage");
}

/** Transactions committed or rolled back in the whole Postgres server so far. */
async function transactions(db: pg.Client): Promise<number> {
  const { rows } = await db.query<{ n: string }>("select sum(xact_commit + xact_rollback)::bigint as n from pg_stat_database");
  return Number(rows[0]?.n ?? 0);
}

async function queueEmpty(bench: BenchSystem): Promise<boolean> {
  const { queues } = await bench.jobs.getQueueStats({});
  return queues.every((q) => q.available + q.scheduled + q.executing + q.retryable === 0n);
}

export async function runB2(bench: BenchSystem, image: TestImage, capacityPerSecond: number, options: BenchOptions & { imageMagick: string; loads?: number[] }): Promise<B2Result> {
  const windowMs = options.quick ? 2_000 : 10_000;
  const fractions = options.loads ?? [0.25, 0.5, 0.75, 0.9];
  const rates: B2RateResult[] = [];

  const convertThroughPipeline = async (i: number): Promise<{ ms: number; state: ConversionState }> => {
    const started = performance.now();
    const { conversion } = await bench.users.convertImage(
      { userEmail: `b2-${i}@bench.example.com`, filename: `b2-${i}.jpg`, source: { case: "imageData", value: image.bytes } },
      { timeoutMs: 60_000 },
    );
    let state = conversion!.state;
    if (!TERMINAL.has(state)) {
      for await (const update of bench.users.watchConversion({ conversionId: conversion!.id }, { timeoutMs: 120_000 })) {
        state = update.conversion!.state;
        if (TERMINAL.has(state)) break;
      }
    }
    return { ms: performance.now() - started, state };
  };
  const convertBare = async (): Promise<number> => {
    const started = performance.now();
    await bareConvert(options.imageMagick, image);
    return performance.now() - started;
  };

  // Warm-up (untimed): the gateway's, job service's and image service's paths once each.
  await convertThroughPipeline(-1);
  const db = new pg.Client({ connectionString: bench.system.env["DATABASE_URL"] });
  await db.connect();
  try {
    for (const fraction of fractions) {
      const perSecond = capacityPerSecond * fraction;
      const problemsBefore = bench.problemCount();
      const cpuBefore = cpuSnapshot(bench);
      const stagesBefore = await stageTotals(bench);
      const rpcsBefore = await rpcCounts(bench);
      const xactsBefore = await transactions(db);
      const pipeline = await openLoop(perSecond, windowMs, convertThroughPipeline);
      let drained = false;
      const drainDeadline = performance.now() + 120_000;
      while (!(drained = await queueEmpty(bench)) && performance.now() < drainDeadline) await sleep(100);
      const drainMs = performance.now() - pipeline.lastArrival;
      const cpuMsPerConversion = cpuPerItem(cpuBefore, cpuSnapshot(bench), pipeline.settled.length);
      const problemsLogged = bench.problemCount() - problemsBefore;
      const conversions = pipeline.settled.length;
      const xacts = (await transactions(db)) - xactsBefore;
      const rpcsAfter = await rpcCounts(bench);
      const rpcsByMethod: Record<string, number> = {};
      for (const [name, after] of rpcsAfter) {
        const n = after - (rpcsBefore.get(name) ?? 0);
        // The benchmark's own queue checks are not the pipeline's.
        if (n > 0 && name !== "JobService/GetQueueStats") rpcsByMethod[name] = round(n / conversions, 2);
      }
      const perConversion = {
        rpcs: round(Object.values(rpcsByMethod).reduce((a, b) => a + b, 0), 1),
        rpcsByMethod,
        // Background polling (graphile-worker, the outbox relay) and the queue checks included: a few per second.
        postgresTransactions: round(xacts / conversions, 1),
      };
      const stagesAfter = await stageTotals(bench);
      const imageStagesMs: Record<string, number> = {};
      for (const [stage, after] of stagesAfter) {
        const before = stagesBefore.get(stage) ?? { sum: 0, count: 0 };
        if (after.count > before.count) imageStagesMs[stage] = round(((after.sum - before.sum) * 1000) / (after.count - before.count), 1);
      }

      const bare = await openLoop(perSecond, windowMs, convertBare);

      const e2e = pipeline.settled.flatMap((s) => (s.status === "fulfilled" && s.value.state === ConversionState.SUCCEEDED ? [s.value.ms] : []));
      const failed = pipeline.settled.filter((s) => s.status === "fulfilled" && s.value.state !== ConversionState.SUCCEEDED).length;
      const errors = pipeline.settled.filter((s) => s.status === "rejected").length + bare.settled.filter((s) => s.status === "rejected").length;
      const bareMs = bare.settled.flatMap((s) => (s.status === "fulfilled" ? [s.value] : []));
      const e2eP = percentiles(e2e);
      const bareP = percentiles(bareMs);
      const overhead = e2eP.p50 - bareP.p50;
      const firstError = pipeline.settled.find((s): s is PromiseRejectedResult => s.status === "rejected")?.reason;
      const result: B2RateResult = {
        loadFraction: fraction,
        arrivalsPerSecond: round(perSecond, 2),
        requests: pipeline.settled.length,
        e2eMs: roundAll(e2eP),
        bareMs: roundAll(bareP),
        overheadP50Ms: round(overhead, 1),
        latencyRatio: round(e2eP.p50 / bareP.p50),
        errors,
        failed,
        problemsLogged,
        drainMs: Math.round(drainMs),
        queueDrained: drained,
        cpuMsPerConversion,
        imageStagesMs,
        perConversion,
        ...(fraction <= 0.75 ? { target: { maxOverheadMs: 30, met: overhead <= 30 && errors === 0 && failed === 0 && drained } } : {}),
      };
      rates.push(result);
      options.log(
        `B2 ${Math.round(fraction * 100)} % (${perSecond.toFixed(1)}/s): e2e p50 ${e2eP.p50.toFixed(0)} p95 ${e2eP.p95.toFixed(0)} p99 ${e2eP.p99.toFixed(0)} ms, bare p50 ${bareP.p50.toFixed(0)} ms, overhead ${overhead.toFixed(0)} ms, errors ${errors}, failed ${failed}, drained ${drained} in ${Math.round(drainMs)} ms` +
          (firstError ? ` (first error: ${String(firstError).slice(0, 200)})` : ""),
      );
    }
  } finally {
    await db.end();
  }
  const cpuPerConversion = Math.min(...rates.map((r) => Object.values(r.cpuMsPerConversion).reduce((a, b) => a + b, 0)));
  const pipelineCapacityPerSecond = round((availableParallelism() * 1000) / cpuPerConversion, 2);
  options.log(`B2 the pipeline costs ${Math.round(cpuPerConversion)} ms of CPU per conversion: it can sustain about ${pipelineCapacityPerSecond}/s`);
  return { image: image.name, capacityPerSecond: round(capacityPerSecond, 2), pipelineCapacityPerSecond, windowMs, rates };
}

function roundAll(p: Percentiles): Percentiles {
  return { p50: round(p.p50, 1), p95: round(p.p95, 1), p99: round(p.p99, 1), max: round(p.max, 1) };
}
