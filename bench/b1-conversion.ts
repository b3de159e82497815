/**
 * B1: conversion efficiency. Throughput (images/s) of ImageService.ConvertImage, its presigned fetch from S3 and
 * its upload of the PDF included, at concurrency = cores, against the floor: bare ImageMagick with the service's own
 * arguments (`pdfArguments`) converting the same original files (bytes on stdin, PDF on stdout) at the same
 * concurrency. A, B, A, B: each round runs one batch of each. Target: ratio ≥ 0.90 at 3 MP and 12 MP.
 *
 * Also records where the time goes: the service's own stage histograms (fetch, normalise, pdf, upload) and the CPU
 * time of every process per image (the service, its ImageMagick children, Postgres, the benchmark process).
 */
import { randomUUID } from "node:crypto";
import { availableParallelism } from "node:os";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Quality, type ImageServiceConvertImageRequestSchema } from "@mcsv/sdk";
import { cpuPerItem, cpuSnapshot, histogramTotals, type BenchSystem } from "./lib/bench-system.js";
import { ratio, type BenchOptions, type Ratio } from "./lib/context.js";
import type { TestImage } from "./lib/images.js";
import { bareConvert, qualityFor } from "./lib/imagemagick.js";
import { percentiles, pool, round } from "./lib/stats.js";
import { startMemoryProbe, type MemoryPhase } from "./b5-memory.js";

export interface B1ImageResult {
  image: string;
  quality: "high" | "lossless";
  inputBytes: number;
  imagesPerRound: number;
  rounds: number;
  concurrency: number;
  throughput: Ratio;
  latencyMs: { service: number; floor: number };
  /** Mean time of each service stage per image, ms. */
  serviceStagesMs: Record<string, number>;
  /** CPU ms per image, by process, for the service runs and for the floor runs. */
  cpuMsPerImage: { service: Record<string, number>; floor: Record<string, number> };
}

export interface B1Result {
  concurrency: number;
  images: B1ImageResult[];
  /** images/s of the service at 0.3 MP RGB: B2's capacity. */
  capacityAtSmall: number;
  memory12MP?: MemoryPhase;
}

/** Images per batch; small batches and many rounds, so that A and B alternate often on a noisy machine. */
function batchSize(image: TestImage, quick: boolean, concurrency: number): number {
  const mp = (image.size.width * image.size.height) / 1e6;
  if (mp < 1) return quick ? 6 : 12;
  if (mp < 5) return image.channels === 3 ? (quick ? 2 : 6) : quick ? 2 : 4;
  return concurrency;
}

async function stageTotals(bench: BenchSystem) {
  return histogramTotals(await bench.metrics("image"), "mcsv_conversion_stage_duration_seconds", "stage");
}

export async function runB1(bench: BenchSystem, images: TestImage[], options: BenchOptions & { imageMagick: string }): Promise<B1Result> {
  const concurrency = availableParallelism();
  const rounds = options.quick ? 2 : 6;
  const results: B1ImageResult[] = [];
  let memory12MP: ReturnType<typeof startMemoryProbe> | undefined;

  const requests = new Map<string, MessageInitShape<typeof ImageServiceConvertImageRequestSchema>>();
  for (const image of images) {
    const key = `bench/originals/${image.name}.${image.format}`;
    await bench.store.put(key, image.bytes, { contentType: `image/${image.format}` });
    const { url } = await bench.store.presignGet(key, { ttlSeconds: 3_600 });
    requests.set(image.name, { imageUrl: url, inputFormat: image.format, options: { quality: qualityFor(image) } });
  }
  const serviceConvert = async (image: TestImage): Promise<number> => {
    const started = performance.now();
    const response = await bench.images.convertImage({ ...requests.get(image.name)!, conversionId: randomUUID() }, { timeoutMs: 300_000 });
    if (response.outputSize <= 0n) throw new Error(`ImageService wrote an empty PDF for ${image.name}`);
    return performance.now() - started;
  };
  const floorConvert = async (image: TestImage): Promise<number> => {
    const started = performance.now();
    const pdf = await bareConvert(options.imageMagick, image);
    if (pdf.byteLength === 0) throw new Error(`ImageMagick wrote an empty PDF for ${image.name}`);
    return performance.now() - started;
  };

  // Warm-up (untimed): JIT, keep-alive connections, ImageMagick's files in the page cache.
  if (images[0]) {
    await pool(concurrency, concurrency, () => serviceConvert(images[0]!));
    await pool(concurrency, concurrency, () => floorConvert(images[0]!));
  }

  for (const image of images) {
    const n = Math.max(batchSize(image, options.quick, concurrency), concurrency);
    const large = image.size.width * image.size.height >= 10e6;
    if (large) memory12MP ??= startMemoryProbe(bench, "B1 at 12 MP");
    let serviceSeconds = 0;
    let floorSeconds = 0;
    const serviceLatency: number[] = [];
    const floorLatency: number[] = [];
    const perRound: number[] = [];
    const serviceCpu: Record<string, number> = {};
    const floorCpu: Record<string, number> = {};
    const addCpu = (into: Record<string, number>, add: Record<string, number>) => {
      for (const [k, v] of Object.entries(add)) into[k] = (into[k] ?? 0) + v / rounds;
    };
    const stagesBefore = await stageTotals(bench);
    for (let r = 0; r < rounds; r++) {
      let cpu = cpuSnapshot(bench);
      let started = performance.now();
      serviceLatency.push(...(await pool(n, concurrency, () => serviceConvert(image))));
      const a = (performance.now() - started) / 1000;
      addCpu(serviceCpu, cpuPerItem(cpu, cpuSnapshot(bench), n));

      cpu = cpuSnapshot(bench);
      started = performance.now();
      floorLatency.push(...(await pool(n, concurrency, () => floorConvert(image))));
      const b = (performance.now() - started) / 1000;
      addCpu(floorCpu, cpuPerItem(cpu, cpuSnapshot(bench), n));

      serviceSeconds += a;
      floorSeconds += b;
      perRound.push(b / a);
      options.log(`B1 ${image.name} round ${r + 1}: service ${(n / a).toFixed(2)}/s, ImageMagick ${(n / b).toFixed(2)}/s, ratio ${(b / a).toFixed(3)}`);
    }
    const stagesAfter = await stageTotals(bench);
    const serviceStagesMs: Record<string, number> = {};
    for (const [stage, after] of stagesAfter) {
      const before = stagesBefore.get(stage) ?? { sum: 0, count: 0 };
      const count = after.count - before.count;
      if (count > 0) serviceStagesMs[stage] = round(((after.sum - before.sum) * 1000) / count, 1);
    }
    const total = n * rounds;
    results.push({
      image: image.name,
      quality: qualityFor(image) === Quality.LOSSLESS ? "lossless" : "high",
      inputBytes: image.bytes.byteLength,
      imagesPerRound: n,
      rounds,
      concurrency,
      throughput: ratio(total / serviceSeconds, total / floorSeconds, "images/s", image.size.width * image.size.height >= 2e6 ? { min: 0.9 } : undefined, perRound),
      latencyMs: { service: round(percentiles(serviceLatency).p50, 1), floor: round(percentiles(floorLatency).p50, 1) },
      serviceStagesMs,
      cpuMsPerImage: {
        service: Object.fromEntries(Object.entries(serviceCpu).map(([k, v]) => [k, round(v, 1)])),
        floor: Object.fromEntries(Object.entries(floorCpu).map(([k, v]) => [k, round(v, 1)])),
      },
    });
  }
  const small = results.find((r) => r.image === "0.3MP-rgb") ?? results[0];
  return {
    concurrency,
    images: results,
    capacityAtSmall: small?.throughput.mcsv ?? 0,
    ...(memory12MP ? { memory12MP: memory12MP.stop() } : {}),
  };
}
