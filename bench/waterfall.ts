/**
 * `npx tsx bench/waterfall.ts [count] [--size=0.3MP|3MP|12MP]`: where one conversion's time goes, end to end. Starts
 * the system with every span exported (OTLP/JSON to a local receiver), runs `count` conversions one at a time
 * through UserService.ConvertImage and WatchConversion, and prints the span waterfall of the median one plus the
 * median duration of every span name and of the gaps between them. The profile behind B2's overhead figure.
 */
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { ConversionState } from "@mcsv/sdk";
import { decodeJsonExport, type ReceivedSpan } from "../test/support/otlp-receiver.js";
import { startBenchSystem } from "./lib/bench-system.js";
import { resolveImageMagick } from "./lib/imagemagick.js";
import { makeTestImage, SIZES } from "./lib/images.js";
import { median, sleep } from "./lib/stats.js";

interface TimedSpan extends ReceivedSpan {
  start: number;
  end: number;
}

interface JsonBody {
  resourceSpans?: Array<{ scopeSpans?: Array<{ spans?: Array<{ spanId: string; startTimeUnixNano: string; endTimeUnixNano: string }> }> }>;
}

async function startTraceReceiver() {
  const spans: TimedSpan[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      try {
        const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as JsonBody;
        const times = new Map<string, { start: number; end: number }>();
        for (const rs of body.resourceSpans ?? [])
          for (const ss of rs.scopeSpans ?? [])
            for (const s of ss.spans ?? []) times.set(s.spanId, { start: Number(BigInt(s.startTimeUnixNano) / 1000n) / 1000, end: Number(BigInt(s.endTimeUnixNano) / 1000n) / 1000 });
        for (const span of decodeJsonExport(body as Parameters<typeof decodeJsonExport>[0])) spans.push({ ...span, ...times.get(span.spanId)! });
      } catch {
        // Not JSON: ignored.
      }
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, spans, close: () => new Promise<void>((r) => server.close(() => r())) };
}

const count = Number(process.argv.find((a) => /^\d+$/.test(a)) ?? 9);
const sizeLabel = process.argv.find((a) => a.startsWith("--size="))?.slice(7) ?? "0.3MP";
const size = Object.values(SIZES).find((s) => s.label === sizeLabel) ?? SIZES.small;
const receiver = await startTraceReceiver();
const imageMagick = resolveImageMagick();
const bench = await startBenchSystem({
  imageMagickCommand: imageMagick.command,
  env: { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_EXPORTER_OTLP_PROTOCOL: "http/json", OTEL_TRACES_SAMPLER: "always_on", OTEL_BSP_SCHEDULE_DELAY: "200" },
});
const image = await makeTestImage(size, 3);
const runs: Array<{ id: string; ms: number; sentAt: number }> = [];
try {
  for (let i = -1; i < count; i++) {
    const sentAt = Date.now();
    const started = performance.now();
    const { conversion } = await bench.users.convertImage({ userEmail: "waterfall@bench.example.com", filename: "w.jpg", source: { case: "imageData", value: image.bytes } });
    for await (const update of bench.users.watchConversion({ conversionId: conversion!.id })) {
      if (update.conversion!.state === ConversionState.SUCCEEDED || update.conversion!.state === ConversionState.FAILED) break;
    }
    if (i >= 0) runs.push({ id: conversion!.id, ms: performance.now() - started, sentAt });
    // Let the follow-up jobs (email, callbacks, clean-up) finish, so that runs do not overlap.
    await sleep(1_000);
  }
  await sleep(1_500);
} finally {
  await bench.close();
  await receiver.close();
}

// Each conversion's trace: the one whose root is the gateway's ConvertImage span that started after it was sent.
const roots = receiver.spans.filter((s) => s.name === "mcsv.v1.UserService/ConvertImage" && s.kind === "server").sort((a, b) => a.start - b.start);
const traces = runs.map((run, i) => {
  const root = roots[i + 1]!;
  return { ...run, spans: receiver.spans.filter((s) => s.traceId === root.traceId).sort((a, b) => a.start - b.start) };
});
const sorted = [...traces].sort((a, b) => a.ms - b.ms);
const chosen = sorted[Math.floor(sorted.length / 2)]!;
console.log(`\n${count} conversions of a ${size.label} JPEG one at a time; e2e ms: ${traces.map((t) => Math.round(t.ms)).join(" ")} (median ${Math.round(median(traces.map((t) => t.ms)))})`);
console.log(`\nWaterfall of the median conversion (${Math.round(chosen.ms)} ms e2e; offsets from the client sending ConvertImage):\n`);
const byId = new Map(chosen.spans.map((s) => [s.spanId, s]));
const depth = (s: TimedSpan): number => (s.parentSpanId && byId.has(s.parentSpanId) ? 1 + depth(byId.get(s.parentSpanId)!) : 0);
for (const s of chosen.spans) {
  const at = s.start - chosen.sentAt;
  console.log(`${at.toFixed(1).padStart(8)} ms ${(s.end - s.start).toFixed(1).padStart(7)} ms  ${"  ".repeat(depth(s))}${s.service.padEnd(11)} ${s.name}`);
}
console.log("\nMedian duration per span name across all runs (ms):\n");
const names = new Map<string, number[]>();
for (const t of traces) for (const s of t.spans) names.set(`${s.service} ${s.name}`, [...(names.get(`${s.service} ${s.name}`) ?? []), s.end - s.start]);
for (const [name, values] of [...names].sort((a, b) => median(b[1]) - median(a[1]))) console.log(`${median(values).toFixed(1).padStart(8)}  ×${String(values.length / traces.length).padEnd(4)} ${name}`);
process.exit(0);
