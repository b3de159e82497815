/** The results file and the markdown tables `npm run bench` prints (and bench/README.md links). */
import type { B1Result } from "../b1-conversion.js";
import type { B2Result } from "../b2-pipeline.js";
import type { B3Result } from "../b3-rpc-stack.js";
import type { B4Result } from "../b4-email-fanout.js";
import type { B7Result } from "../b7-burst.js";
import type { MemoryPhase } from "../b5-memory.js";
import type { B6Result } from "../b6-passthrough.js";
import type { B8Result } from "../b8-document.js";
import type { B9Result } from "../b9-ocr.js";
import type { Ratio } from "./context.js";

export interface Machine {
  cpu: string;
  cores: number;
  memoryGiB: number;
  os: string;
  node: string;
  imageMagick: string;
  imageMagickCommand: string;
  imageMagickNote?: string;
  /** 1-minute load average before and after the run (other work on the machine shows here). */
  loadBefore: number;
  loadAfter: number;
}

export interface BenchResults {
  startedAt: string;
  mode: "quick" | "full";
  /** Extra service environment of a tuning experiment (--env). */
  env?: Record<string, string>;
  durationSeconds: number;
  machine: Machine;
  b1?: B1Result;
  b2?: B2Result;
  b3?: B3Result;
  b4?: B4Result;
  b5?: { phases: MemoryPhase[] };
  b6?: B6Result;
  b7?: B7Result;
  b8?: B8Result;
  b9?: B9Result;
  errors: Record<string, string>;
}

const fmt = (n: number, digits = 2) => (Number.isFinite(n) ? n.toFixed(digits) : "–");
const met = (ok: boolean | undefined) => (ok === undefined ? "" : ok ? "✅" : "❌");

function ratioCells(r: Ratio, digits = 2): string[] {
  return [fmt(r.mcsv, digits), fmt(r.floor, digits), `**${fmt(r.ratio)}**`, r.target?.min !== undefined ? `≥ ${r.target.min}` : "", met(r.met)];
}

export function renderMarkdown(results: BenchResults): string {
  const m = results.machine;
  const lines: string[] = [];
  lines.push(
    `Run ${results.startedAt} (${results.mode}, ${Math.round(results.durationSeconds)} s) on ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB, ${m.os}, Node ${m.node}, ${m.imageMagick}; load average ${m.loadBefore.toFixed(2)} before, ${m.loadAfter.toFixed(2)} after.`,
    "",
  );
  if (results.env) lines.push(`Services' extra environment: ${Object.entries(results.env).map(([k, v]) => `\`${k}=${v}\``).join(", ")}.`, "");
  if (results.b1) {
    lines.push(`**B1 conversion efficiency**: ImageService.ConvertImage (S3 fetch and upload included) vs bare ImageMagick, images/s at concurrency ${results.b1.concurrency}`, "");
    lines.push("| image | quality | mcsv | ImageMagick | ratio | target | met | service stages p̄ (ms) |", "|---|---|---:|---:|---:|---|---|---|");
    for (const r of results.b1.images) {
      const stages = Object.entries(r.serviceStagesMs).map(([k, v]) => `${k} ${v}`).join(", ");
      lines.push(`| ${r.image} | ${r.quality} | ${ratioCells(r.throughput).join(" | ")} | ${stages} |`);
    }
    lines.push("");
  }
  if (results.b2) {
    lines.push(`**B2 pipeline under open-loop load**: UserService.ConvertImage → WatchConversion SUCCEEDED, ${results.b2.image}, capacity ${fmt(results.b2.capacityPerSecond)}/s (B1); the whole pipeline's CPU per conversion allows about ${fmt(results.b2.pipelineCapacityPerSecond)}/s`, "");
    lines.push("| load | arrivals/s | e2e p50 | p95 | p99 | bare p50 | overhead p50 | target | met | errors | drained | image-svc p̄ (its ImageMagick) |", "|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---|---|");
    for (const r of results.b2.rates) {
      const inImage = Object.values(r.imageStagesMs ?? {}).reduce((a, b) => a + b, 0);
      lines.push(
        `| ${Math.round(r.loadFraction * 100)} % | ${fmt(r.arrivalsPerSecond, 1)} | ${fmt(r.e2eMs.p50, 0)} ms | ${fmt(r.e2eMs.p95, 0)} ms | ${fmt(r.e2eMs.p99, 0)} ms | ${fmt(r.bareMs.p50, 0)} ms | **${fmt(r.overheadP50Ms, 0)} ms** | ${r.target ? "≤ 30 ms" : ""} | ${met(r.target?.met)} | ${r.errors + r.failed} | ${r.queueDrained ? `yes, ${(r.drainMs / 1000).toFixed(1)} s` : "no"} | ${fmt(inImage, 0)} ms (${fmt(r.imageStagesMs?.["pdf"] ?? Number.NaN, 0)} ms) |`,
      );
    }
    const hops = results.b2.rates[0]?.perConversion;
    if (hops) {
      lines.push(
        `One conversion through the pipeline (at ${Math.round(results.b2.rates[0]!.loadFraction * 100)} %): ${hops.rpcs} RPCs served (target ≤ 8: ${met(hops.rpcs <= 8)}) and ${hops.postgresTransactions} Postgres transactions, background polling included (target ≤ 12: ${met(hops.postgresTransactions <= 12)}); CPU per conversion by process in latest.json.`,
      );
    }
    const capacityRatio = results.b2.pipelineCapacityPerSecond / results.b2.capacityPerSecond;
    lines.push("", `Pipeline capacity / image service capacity: **${fmt(capacityRatio)}** (target ≥ 0.75: ${met(capacityRatio >= 0.75)}).`);
    lines.push("");
  }
  if (results.b7) {
    const b = results.b7;
    lines.push(`**B7 burst**: ${b.conversions} UserService.ConvertImage (${b.image}) sent at once, until every conversion SUCCEEDED`, "");
    lines.push("| accepted p50 | p95 | p99 | sent again | rejected | succeeded | failed | drain | drained/s | image service/s (B1) | ratio | target | met |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|");
    lines.push(
      `| ${fmt(b.acceptedMs.p50, 0)} ms | ${fmt(b.acceptedMs.p95, 0)} ms | ${fmt(b.acceptedMs.p99, 0)} ms | ${b.retries} | ${b.rejected} | ${b.succeeded} | ${b.failed} | ${(b.drainMs / 1000).toFixed(1)} s | ${fmt(b.drainedPerSecond)} | ${fmt(b.capacityPerSecond)} | **${fmt(b.drainRatio)}** | p95 < ${b.target.maxAcceptP95Ms} ms, all succeed, ratio ≥ ${b.target.minDrainRatio} | ${met(b.target.met)} |`,
    );
    lines.push("");
  }
  if (results.b3) {
    lines.push(`**B3 server stack per RPC**: ${results.b3.rpc}, requests/s, full mcsv stack vs bare connect-node`, "");
    lines.push("| concurrency | bare | traced (100 %, OTLP) | ratio | untraced (exporter none) | ratio | target | met | server CPU µs/RPC: bare, traced, untraced |", "|---:|---:|---:|---:|---:|---:|---|---|---|");
    for (const r of results.b3.byConcurrency) {
      const cpu = r.serverCpuUsPerRequest;
      lines.push(`| ${r.concurrency} | ${r.rps.bare} | ${r.rps.traced} | **${fmt(r.traced.ratio)}** | ${r.rps.untraced} | **${fmt(r.untraced.ratio)}** | ≥ 0.7 | ${met(r.traced.met)} ${met(r.untraced.met)} | ${cpu ? `${cpu.bare}, ${cpu.traced}, ${cpu.untraced}` : ""} |`);
    }
    lines.push("");
    const byProtocol = results.b3.byProtocol;
    if (byProtocol?.length) {
      lines.push(
        "By protocol and HTTP version (bare: connect-node on node:http for HTTP/1.1, on node:http2's h2c server for HTTP/2; the full stack answers both on one port), requests/s:",
        "",
      );
      lines.push(
        "| protocol | concurrency | bare | traced | ratio | untraced | ratio | met | server CPU µs/RPC: bare, traced, untraced | load generator CPU µs/RPC: bare, untraced | p50 ms: bare, untraced | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|---|---|---:|",
      );
      for (const p of byProtocol) {
        for (const r of p.byConcurrency) {
          const cpu = r.serverCpuUsPerRequest;
          const client = r.clientCpuUsPerRequest;
          lines.push(
            `| ${p.label} | ${r.concurrency} | ${r.rps.bare} | ${r.rps.traced} | **${fmt(r.traced.ratio)}** | ${r.rps.untraced} | **${fmt(r.untraced.ratio)}** | ${met(r.traced.met)} ${met(r.untraced.met)} | ${cpu.bare}, ${cpu.traced}, ${cpu.untraced} | ${client ? `${client.bare}, ${client.untraced}` : ""} | ${fmt(r.p50Ms.bare)}, ${fmt(r.p50Ms.untraced)} | ${r.errors}${r.firstError ? ` (${r.firstError})` : ""} |`,
          );
        }
      }
      lines.push("");
    }
    const verdict = results.b3.httpVersionVerdict;
    if (verdict) {
      const cells = verdict.byConcurrency
        .map(
          (c) =>
            `c=${c.concurrency}: HTTP/1.1 ${c.rps["1.1"].traced} / ${c.rps["1.1"].untraced}, h2c ${c.rps["2"].traced} / ${c.rps["2"].untraced} requests/s (traced / untraced), h2c/HTTP/1.1 **${fmt(c.h2cOverHttp1)}**, server CPU µs/RPC ${c.serverCpuUsPerRequest["1.1"]} vs ${c.serverCpuUsPerRequest["2"]}, load generator ${c.clientCpuUsPerRequest["1.1"]} vs ${c.clientCpuUsPerRequest["2"]}`,
        )
        .join("; ");
      lines.push(
        `**Internal calls, HTTP/1.1 or h2c** (Connect through the full stack): ${cells}. Faster: **${verdict.faster === "tie" ? "neither" : verdict.faster === "2" ? "h2c" : "HTTP/1.1"}**; createServiceClient default: \`httpVersion: "${verdict.recommendedDefault}"\` (${verdict.reason}).`,
        "",
      );
    }
    for (const warning of results.b3.latencyWarnings ?? []) lines.push(`⚠️ ${warning}.`, "");
    const parts = results.b3.breakdown;
    if (parts) {
      lines.push(`What each part costs (requests/s at concurrency ${parts.concurrency}, spans not exported): ${parts.rps.map((p) => `${p.variant} ${p.rps} (${fmt(p.ratio)})`).join(" → ")}`, "");
    }
  }
  if (results.b4) {
    const b = results.b4;
    lines.push(`**B4 email fan-out**: ${b.users} CreateUser at concurrency ${b.concurrency} until ${b.users} welcome emails reached the sink (${b.rounds.length} round${b.rounds.length > 1 ? "s" : ""})`, "");
    lines.push("| users/s | floor (INSERT + send) | ratio | CreateUser p95 | drain | lost | duplicates |", "|---:|---:|---:|---:|---:|---:|---:|");
    lines.push(`| ${fmt(b.throughput.mcsv, 1)} | ${fmt(b.throughput.floor, 1)} | **${fmt(b.throughput.ratio)}** | ${fmt(b.createUserP95Ms, 1)} ms | ${(b.drainMs / 1000).toFixed(2)} s | ${b.lost} | ${b.duplicates} |`, "");
  }
  if (results.b5?.phases.length) {
    lines.push("**B5 peak memory** (VmHWM of each service process, MB; image-svc tree = Node + its ImageMagick children, sampled)", "");
    const keys = Object.keys(results.b5.phases[0]!.peakRssMb);
    lines.push(`| phase | ${keys.join(" | ")} | image-svc tree | largest ImageMagick | image-svc target | met |`, `|---|${keys.map(() => "---:").join("|")}|---:|---:|---|---|`);
    for (const p of results.b5.phases) {
      lines.push(`| ${p.phase} | ${keys.map((k) => p.peakRssMb[k]).join(" | ")} | ${p.imageTreePeakMb} | ${p.imageMagickPeakMb} | < ${p.target.maxMb} | ${met(p.target.met)} |`);
    }
    lines.push("");
  }
  if (results.b6) {
    lines.push(
      `**B6 lossless fast path** (PDF_ENGINE_PASSTHROUGH, services/image/passthrough-pdf.ts) vs ImageMagick (JPEG: the default HIGH re-encoding; PNG: LOSSLESS) and ${results.b6.img2pdf ?? "img2pdf (not installed)"}, one at a time, ms per image, PDF size, and whether the PDF holds the original's exact pixels (pdfimages)`,
      "",
    );
    lines.push(
      "| image | fast path | ms | ImageMagick ms | img2pdf ms | × ImageMagick | target | met | × img2pdf | met | pixel-identical: fast path, ImageMagick, img2pdf | PDF MB: fast path, ImageMagick, img2pdf |",
      "|---|---|---:|---:|---:|---:|---|---|---:|---|---|---|",
    );
    const mb = (n: number | undefined) => (n === undefined ? "–" : (n / 2 ** 20).toFixed(2));
    const same = (b: boolean | undefined) => (b === undefined ? "–" : b ? "yes" : "no");
    for (const r of results.b6.images) {
      lines.push(
        `| ${r.image} | ${r.mode} | ${fmt(r.msPerImage.passthrough ?? Number.NaN, 1)} | ${fmt(r.msPerImage.imagemagick ?? Number.NaN, 1)} | ${fmt(r.msPerImage.img2pdf ?? Number.NaN, 1)} | **${fmt(r.speedupOverImageMagick ?? Number.NaN, 1)}** | ≥ ${r.targets.speedup.min} | ${met(r.targets.speedup.met)} | **${fmt(r.speedupOverImg2pdf ?? Number.NaN, 1)}** | ${r.targets.fasterThanImg2pdf ? met(r.targets.fasterThanImg2pdf.met) : "–"} | ${same(r.pixelIdentical.passthrough)}, ${same(r.pixelIdentical.imagemagick)}, ${same(r.pixelIdentical.img2pdf)} | ${mb(r.pdfBytes.passthrough)}, ${mb(r.pdfBytes.imagemagick)}, ${mb(r.pdfBytes.img2pdf)} |`,
      );
    }
    const splits = results.b6.images.filter((r) => r.alphaSplitMs);
    if (splits.length) {
      lines.push(
        "",
        `Where the fast path's time goes with alpha (median ms of inflating the rows, dividing them, compressing colour and alpha beside each other; the rest is reading the chunks and joining the PDF): ${splits
          .map((r) => `${r.image} ${r.alphaSplitMs!.inflate} + ${r.alphaSplitMs!.split} + ${r.alphaSplitMs!.compress} of ${r.msPerImage.passthrough}`)
          .join("; ")}`,
      );
    }
    lines.push("");
  }
  if (results.b8) {
    const b = results.b8;
    const mb = (n: number | undefined) => (n === undefined ? "–" : (n / 2 ** 20).toFixed(1));
    const yes = (ok: boolean | undefined) => (ok === undefined ? "–" : ok ? "yes" : "no");
    const megapixels = b.pages.reduce((sum, p) => sum + p.width * p.height, 0) / 1e6;
    lines.push(
      `**B8 ten-page document** (A4, ${b.layout.margin} pt margin, fit ${b.layout.fit}, orientation ${b.layout.orientation}): mcsv's passthrough document path in-process vs ${b.img2pdf ?? "img2pdf (not installed)"} \`${b.img2pdfArgs.join(" ")}\` spawned per document, ms per document (median of ${b.rounds} rounds), and whether both PDFs hold the same pixels`,
      "",
    );
    lines.push(
      "| pages | MP | input MiB | mcsv ms | img2pdf ms | × img2pdf | target | met | same pixels (pdfimages -png) | same images and page sizes (pdfimages -list, pdfinfo) | mcsv = originals | met | PDF MiB: mcsv, img2pdf |",
      "|---:|---:|---:|---:|---:|---:|---|---|---|---|---|---|---|",
    );
    const c = b.check;
    lines.push(
      `| ${b.pages.length} | ${fmt(megapixels, 1)} | ${mb(b.pages.reduce((sum, p) => sum + p.inputBytes, 0))} | ${fmt(b.msPerDocument.mcsv ?? Number.NaN, 1)} | ${fmt(b.msPerDocument.img2pdf ?? Number.NaN, 1)} | **${fmt(b.speedup ?? Number.NaN)}** | > ${b.targets.faster.above} | ${met(b.targets.faster.met)} | ${yes(c?.pixelsIdentical)} | ${c ? `${yes(c.imagesMatch)}, ${yes(c.pageSizesMatch)}` : "–"} | ${yes(c?.originalPixels)} | ${met(b.targets.samePixels.met)} | ${mb(b.pdfBytes.mcsv)}, ${mb(b.pdfBytes.img2pdf)} |`,
    );
    if (b.pages.some((p) => p.mcsvMs !== undefined)) {
      lines.push(
        "",
        `mcsv's time by page (median ms: reading, inspecting, preparing, placing): ${b.pages.map((p) => `${p.kind} ${p.width}×${p.height} (${p.mode}) ${p.mcsvMs ?? "–"}`).join("; ")}; writeDocument ${b.mcsvWriteMs ?? "–"}`,
      );
    }
    if (c?.mismatches.length) lines.push("", `Differences: ${c.mismatches.join("; ")}`);
    lines.push("");
  }
  if (results.b9) {
    const b = results.b9;
    lines.push(
      `**B9 OCR**: OcrMyPdf.addTextLayer (services/image/ocr.ts) vs bare ${b.ocrmypdf ?? "ocrmypdf"} \`${b.bareArgs.join(" ")} in.pdf out.pdf\` on the same ${b.pages}-page PDF (A4, 300 dpi, ${b.wordsDrawn} words drawn by ImageMagick), ms per PDF (median of ${b.rounds} rounds)`,
      "",
    );
    lines.push("| pages | mcsv ms | bare ms | ratio (bare / mcsv) | target | met | same words (pdftotext) | met | words | drawn words recognised |", "|---:|---:|---:|---:|---|---|---|---|---:|---:|");
    const t = b.text;
    lines.push(
      `| ${b.pages} | ${fmt(b.msPerPdf.mcsv ?? Number.NaN, 0)} | ${fmt(b.msPerPdf.bare ?? Number.NaN, 0)} | **${fmt(b.ratio ?? Number.NaN)}** | ≥ ${b.targets.ratio.min} | ${met(b.targets.ratio.met)} | ${t ? (t.sameWords ? "yes" : `no (${t.firstDifference})`) : "–"} | ${met(b.targets.sameWords.met)} | ${t ? `${t.words.mcsv}, ${t.words.bare}` : "–"} | ${b.recognised === undefined ? "–" : `${Math.round(b.recognised * 100)} %`} |`,
      "",
    );
  }
  for (const [name, error] of Object.entries(results.errors)) lines.push(`**${name} failed**: ${error}`, "");
  return lines.join("\n");
}
