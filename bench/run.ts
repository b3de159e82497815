/**
 * `npm run bench [-- --quick] [--only=b1,b3] [--profile] [--b2-loads=0.25,0.5] [--env KEY=VALUE …]`: starts the
 * real system on its embedded defaults (Resend replaced by a local sink the real SDK talks to), runs the benchmarks,
 * writes bench/results/latest.json (and latest.md) and prints the tables. Every figure is a ratio against a floor
 * measured in the same run, A and B alternating.
 *
 *   B1 conversion efficiency (ImageService vs bare ImageMagick)     bench/b1-conversion.ts
 *   B2 pipeline under open-loop load (e2e vs bare ImageMagick)      bench/b2-pipeline.ts
 *   B3 server stack per RPC (runService vs bare connect-node)      bench/b3-rpc-stack.ts
 *   B4 email fan-out (CreateUser → welcome email vs INSERT + send)  bench/b4-email-fanout.ts
 *   B5 peak memory per service during B1 at 12 MP and B4          bench/b5-memory.ts
 *   B6 the lossless fast-path PDF writer vs ImageMagick, img2pdf   bench/b6-passthrough.ts
 *   B7 1,000 conversions in one burst (drain vs B1's capacity)      bench/b7-burst.ts
 *   B8 a ten-page A4 document: passthrough path vs img2pdf          bench/b8-document.ts
 *   B9 OCR: OcrMyPdf.addTextLayer vs bare ocrmypdf                  bench/b9-ocr.ts
 *
 * --profile also records a V8 CPU profile of every service (bench/results/profiles/, with a summary.md of where the
 * time went). --env passes a variable to the services (a tuning experiment: the results record it).
 *
 * A full run takes about 11 minutes on 2 cores, --quick about 95 seconds. Run it on a quiet machine: the load average
 * before and after is recorded with the results. The process exits 1 when a benchmark failed (the results say why).
 */
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, cpus, loadavg, release, totalmem, type } from "node:os";
import { join } from "node:path";
import { ROOT } from "../scripts/lib/system.js";
import { SERVICE_KEYS } from "../services/shared/topology.js";
import { runB1 } from "./b1-conversion.js";
import { runB2 } from "./b2-pipeline.js";
import { runB3 } from "./b3-rpc-stack.js";
import { runB4 } from "./b4-email-fanout.js";
import { runB6 } from "./b6-passthrough.js";
import { runB7 } from "./b7-burst.js";
import { runB8 } from "./b8-document.js";
import { runB9 } from "./b9-ocr.js";
import { startBenchSystem } from "./lib/bench-system.js";
import { renderProfiles, summariseProfiles } from "./lib/cpu-profile.js";
import type { BenchOptions } from "./lib/context.js";
import { imageMagickVersion, resolveImageMagick } from "./lib/imagemagick.js";
import { makeTestImage, SIZES, type TestImage } from "./lib/images.js";
import { renderMarkdown, type BenchResults } from "./lib/report.js";

const args = process.argv.slice(2);
const quick = args.includes("--quick");
const profile = args.includes("--profile");
/** `--b2-loads=0.25,0.5`: only these fractions of B1's capacity in B2. */
const b2Loads = args.find((a) => a.startsWith("--b2-loads="))?.slice(11).split(",").map(Number);
/** `--env KEY=VALUE` (repeatable): extra environment for the services, for tuning experiments. */
const extraEnv = Object.fromEntries(
  args.flatMap((a, i) => (a === "--env" && args[i + 1]?.includes("=") ? [args[i + 1]!.split(/=(.*)/s).slice(0, 2) as [string, string]] : [])),
);
const only = new Set((args.find((a) => a.startsWith("--only="))?.slice(7) ?? "b1,b2,b3,b4,b5,b6,b7,b8,b9").split(",").map((s) => s.trim().toLowerCase()));
const outDir = join(ROOT, "bench", "results");
const began = Date.now();
const log = (message: string) => process.stderr.write(`[bench ${((Date.now() - began) / 1000).toFixed(0).padStart(4)} s] ${message}\n`);
const options: BenchOptions = { quick, log };

const imageMagick = resolveImageMagick();
if (imageMagick.note) log(imageMagick.note);
const results: BenchResults = {
  startedAt: new Date(began).toISOString(),
  mode: quick ? "quick" : "full",
  ...(Object.keys(extraEnv).length ? { env: extraEnv } : {}),
  durationSeconds: 0,
  machine: {
    cpu: cpus()[0]?.model.trim() ?? "unknown",
    cores: availableParallelism(),
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    os: `${type()} ${release()}`,
    node: process.versions.node,
    imageMagick: imageMagickVersion(imageMagick.command),
    imageMagickCommand: imageMagick.command,
    ...(imageMagick.note ? { imageMagickNote: imageMagick.note } : {}),
    loadBefore: loadavg()[0]!,
    loadAfter: 0,
  },
  errors: {},
};

async function attempt<T>(name: string, run: () => Promise<T>): Promise<T | undefined> {
  try {
    return await run();
  } catch (error) {
    results.errors[name] = error instanceof Error ? (error.stack ?? error.message).split("\n").slice(0, 4).join(" ") : String(error);
    log(`${name} failed: ${results.errors[name]}`);
    return undefined;
  }
}

// B3, B6, B8 and B9 run first, before the system starts: nothing else is then competing for the cores.
if (only.has("b3")) results.b3 = await attempt("B3", () => runB3(options));
if (only.has("b6")) results.b6 = await attempt("B6", () => runB6({ ...options, imageMagick: imageMagick.command }));
if (only.has("b8")) results.b8 = await attempt("B8", () => runB8(options));
if (only.has("b9")) results.b9 = await attempt("B9", () => runB9({ ...options, imageMagick: imageMagick.command }));

const needsSystem = ["b1", "b2", "b4", "b5", "b7"].some((b) => only.has(b));
if (needsSystem) {
  log("making test images");
  const images: TestImage[] = [];
  for (const size of [SIZES.small, SIZES.medium, SIZES.large]) for (const channels of [3, 4] as const) images.push(await makeTestImage(size, channels));
  log(`starting the system (ImageMagick: ${imageMagick.command})`);
  const profileDir = join(outDir, "profiles");
  if (profile) {
    rmSync(profileDir, { recursive: true, force: true });
    mkdirSync(profileDir, { recursive: true });
  }
  const bench = await startBenchSystem({
    imageMagickCommand: imageMagick.command,
    env: { ...extraEnv, ...(profile ? { NODE_OPTIONS: `--import ${join(ROOT, "bench/lib/cpu-profiler.mjs")}`, MCSV_CPU_PROFILE_DIR: profileDir } : {}) },
  });
  if (profile) for (const key of SERVICE_KEYS) process.kill(bench.pid(key), "SIGUSR2");
  try {
    const phases = [];
    let capacity: number | undefined;
    if (only.has("b1") || only.has("b2") || only.has("b5") || only.has("b7")) {
      const b1Images = only.has("b1") || only.has("b5") ? images : images.filter((i) => i.name === "0.3MP-rgb");
      results.b1 = await attempt("B1", () => runB1(bench, b1Images, { ...options, imageMagick: imageMagick.command }));
      capacity = results.b1?.capacityAtSmall;
      if (results.b1?.memory12MP) phases.push(results.b1.memory12MP);
    }
    if (only.has("b2") && capacity) {
      const small = images.find((i) => i.name === "0.3MP-rgb")!;
      results.b2 = await attempt("B2", () => runB2(bench, small, capacity, { ...options, imageMagick: imageMagick.command, ...(b2Loads ? { loads: b2Loads } : {}) }));
    }
    if (only.has("b7") && capacity) {
      const small = images.find((i) => i.name === "0.3MP-rgb")!;
      results.b7 = await attempt("B7", () => runB7(bench, small, capacity, options));
    }
    if (only.has("b4") || only.has("b5")) {
      results.b4 = await attempt("B4", () => runB4(bench, options));
      if (results.b4?.memory) phases.push(results.b4.memory);
    }
    if (phases.length) results.b5 = { phases };
    if (bench.problems.length) log(`the services logged ${bench.problemCount()} warnings or errors; the last:\n${bench.problems.slice(-5).join("\n")}`);
  } finally {
    await bench.close();
  }
  if (profile) {
    const summary = renderProfiles(summariseProfiles(profileDir));
    writeFileSync(join(profileDir, "summary.md"), `${summary}\n`);
    log(`CPU profiles and their summary in bench/results/profiles/`);
  }
}

results.durationSeconds = (Date.now() - began) / 1000;
results.machine.loadAfter = loadavg()[0]!;
mkdirSync(outDir, { recursive: true });
const markdown = renderMarkdown(results);
writeFileSync(join(outDir, "latest.json"), `${JSON.stringify(results, null, 2)}\n`);
writeFileSync(join(outDir, "latest.md"), `${markdown}\n`);
process.stdout.write(`\n${markdown}\n`);
log(`wrote bench/results/latest.json and latest.md in ${Math.round(results.durationSeconds)} s`);
process.exit(Object.keys(results.errors).length ? 1 : 0);
