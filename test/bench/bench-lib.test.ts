/**
 * The benchmark's own pieces (not the benchmarks, which `npm run bench` runs): the floor runs exactly the service's
 * ImageMagick arguments and writes the same PDF image, the statistics, the metric and profile readers, the report.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Quality } from "@mcsv/sdk";
import sharp from "sharp";
import { histogramTotals } from "../../bench/lib/bench-system.js";
import { summariseProfile } from "../../bench/lib/cpu-profile.js";
import { makeTestImage, photoLikePixels } from "../../bench/lib/images.js";
import { bareConvert, DEFAULT_LIMITS, floorArguments, POLICY_ENV, qualityFor, resolveImageMagick } from "../../bench/lib/imagemagick.js";
import { processTree, stat } from "../../bench/lib/procfs.js";
import { renderMarkdown, type BenchResults } from "../../bench/lib/report.js";
import { percentiles, pool, quantile } from "../../bench/lib/stats.js";
import { ratio } from "../../bench/lib/context.js";
import { pdfArguments, runImageMagick } from "../../services/image/imagemagick.js";
import { qualityPreset } from "../../services/image/quality.js";
import { extractImages } from "../support/pdf.js";

const size = { label: "tiny", width: 96, height: 64 };

test("the floor runs the service's own arguments, reading the original instead of raw pixels", async () => {
  for (const channels of [3, 4] as const) {
    const image = await makeTestImage(size, channels);
    const preset = qualityPreset(qualityFor(image))!;
    const service = pdfArguments({ encoding: "raw", width: 96, height: 64, channels }, preset, DEFAULT_LIMITS);
    const floor = floorArguments(image);
    const input = ["-size", "96x64", "-depth", "8", channels === 4 ? "rgba:-" : "rgb:-"];
    const at = service.indexOf(input[0]!);
    expect([...service.slice(0, at), `${image.format}:-`, ...service.slice(at + input.length)]).toEqual(floor);
    expect(qualityFor(image)).toBe(channels === 4 ? Quality.LOSSLESS : Quality.HIGH);
  }
});

test("floor and service write the same image into the PDF (the test JPEGs are 4:4:4, as the service's output is)", async () => {
  const { command } = resolveImageMagick();
  for (const channels of [3, 4] as const) {
    const image = await makeTestImage(size, channels);
    const floorPdf = await bareConvert(command, image);
    const { data, info } = await sharp(image.bytes).raw().toBuffer({ resolveWithObject: true });
    const args = pdfArguments({ encoding: "raw", width: info.width, height: info.height, channels: info.channels as 3 | 4 }, qualityPreset(qualityFor(image))!, DEFAULT_LIMITS);
    const servicePdf = await runImageMagick(command, args, data, { timeoutMs: 30_000, maxOutputBytes: 1 << 26, env: POLICY_ENV });
    const [a, b] = [await extractImages(floorPdf), await extractImages(servicePdf)];
    expect(a.map((i) => [i.width, i.height, i.channels])).toEqual(b.map((i) => [i.width, i.height, i.channels]));
    // The same work: output sizes agree closely (decoders may differ by a rounding here and there).
    expect(Math.abs(floorPdf.byteLength - servicePdf.byteLength) / servicePdf.byteLength).toBeLessThan(0.02);
  }
});

test("test images are deterministic, photographic-like and of the asked size and channels", async () => {
  expect(photoLikePixels(40, 30, 3).equals(photoLikePixels(40, 30, 3))).toBe(true);
  const rgba = await makeTestImage(size, 4);
  const meta = await sharp(rgba.bytes).metadata();
  expect([meta.format, meta.width, meta.height, meta.channels]).toEqual(["png", 96, 64, 4]);
  const rgb = await makeTestImage(size, 3);
  expect((await sharp(rgb.bytes).metadata()).chromaSubsampling).toBe("4:4:4");
});

test("statistics: quantiles interpolate, pool keeps order and bounds concurrency", async () => {
  expect(quantile([1, 2, 3, 4], 0.5)).toBe(2.5);
  expect(percentiles([5]).p99).toBe(5);
  expect(Number.isNaN(quantile([], 0.5))).toBe(true);
  let running = 0;
  let most = 0;
  const out = await pool(10, 3, async (i) => {
    most = Math.max(most, ++running);
    await new Promise((r) => setTimeout(r, 2));
    running--;
    return i * 2;
  });
  expect(out).toEqual([0, 2, 4, 6, 8, 10, 12, 14, 16, 18]);
  expect(most).toBe(3);
});

test("a ratio is the median of its A/B rounds, so one disturbed round moves it least; a target says whether it is met", () => {
  const r = ratio(10, 12, "images/s", { min: 0.9 }, [0.5, 0.95, 0.92]);
  expect(r.ratio).toBe(0.92);
  expect(r.met).toBe(true);
  expect(ratio(10, 20, "users/s").ratio).toBe(0.5);
});

test("stage histograms are read from a Prometheus scrape, summed per label value", () => {
  const text = [
    'mcsv_conversion_stage_duration_seconds_bucket{le="0.1",service="image-svc",stage="pdf"} 1',
    'mcsv_conversion_stage_duration_seconds_sum{service="image-svc",stage="pdf"} 0.5',
    'mcsv_conversion_stage_duration_seconds_count{service="image-svc",stage="pdf"} 2',
    'mcsv_conversion_stage_duration_seconds_sum{service="image-svc",stage="fetch"} 0.25',
    'mcsv_conversion_stage_duration_seconds_count{service="image-svc",stage="fetch"} 5',
  ].join("\n");
  const totals = histogramTotals(text, "mcsv_conversion_stage_duration_seconds", "stage");
  expect(Object.fromEntries(totals)).toEqual({ pdf: { sum: 0.5, count: 2 }, fetch: { sum: 0.25, count: 5 } });
});

test("this process is found in /proc with its CPU time and memory", () => {
  const self = stat(process.pid)!;
  expect(self.rss).toBeGreaterThan(1024 * 1024);
  expect(self.cpu).toBeGreaterThan(0);
  expect(processTree(process.pid)[0]?.pid).toBe(process.pid);
});

test("a CPU profile is summarised by self time, origin and inclusive time", () => {
  const dir = mkdtempSync(join(tmpdir(), "mcsv-prof-"));
  try {
    const nodes = [
      { id: 1, callFrame: { functionName: "(root)", url: "", lineNumber: -1 }, children: [2, 4] },
      { id: 2, callFrame: { functionName: "handle", url: "file:///x/node_modules/@connectrpc/connect/a.js", lineNumber: 9 }, children: [3] },
      { id: 3, callFrame: { functionName: "log", url: "file:///x/node_modules/winston/b.js", lineNumber: 0 } },
      { id: 4, callFrame: { functionName: "(idle)", url: "", lineNumber: -1 } },
    ];
    writeFileSync(join(dir, "p.cpuprofile"), JSON.stringify({ nodes, startTime: 0, endTime: 4000, samples: [3, 3, 2, 4], timeDeltas: [1000, 1000, 1000, 1000] }));
    const summary = summariseProfile(join(dir, "p.cpuprofile"));
    expect(summary.busyMs).toBe(3);
    expect(summary.idleMs).toBe(1);
    expect(summary.byOrigin[0]).toEqual({ origin: "winston", ms: 2, share: 66.7 });
    expect(summary.inclusiveByOrigin.find((o) => o.origin === "@connectrpc/connect")?.ms).toBe(3);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the report shows each figure with its floor, ratio and target", () => {
  const results: BenchResults = {
    startedAt: "2026-01-01T00:00:00.000Z",
    mode: "quick",
    durationSeconds: 60,
    machine: { cpu: "CPU", cores: 2, memoryGiB: 24, os: "Linux", node: "20", imageMagick: "ImageMagick 6", imageMagickCommand: "convert", loadBefore: 0.1, loadAfter: 0.2 },
    b4: {
      users: 1000,
      concurrency: 10,
      rounds: [],
      floorUsersPerSecond: [400],
      throughput: { mcsv: 50, floor: 400, ratio: 0.125, unit: "users/s" },
      createUserP95Ms: 40,
      drainMs: 1200,
      lost: 0,
      duplicates: 0,
      cpuMsPerUser: {},
    },
    errors: { B2: "boom" },
  };
  const markdown = renderMarkdown(results);
  expect(markdown).toContain("| 50.0 | 400.0 | **0.13** | 40.0 ms | 1.20 s | 0 | 0 |");
  expect(markdown).toContain("**B2 failed**: boom");
});
