/**
 * One conversion, in four stages that each have their own function and tracing span:
 * fetchSource → normalise → renderPdf → storePdf. Every stage is timed; bytes in and out are counted.
 * The original is dropped as soon as it is decoded, so a conversion holds at most two copies of the image at a time.
 * The PDF is buffered (bounded by IMAGE_MAX_OUTPUT_BYTES) rather than streamed into the upload: a PUT needs its
 * length up front, and an ImageMagick failure late in the output must never leave a truncated PDF in storage.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { PresignedUrl } from "../shared/storage.js";
import { isUnreachable } from "../shared/storage.js";
import { objectKeys } from "../shared/tasks.js";
import { startDurationTimer } from "../shared/metrics.js";
import { withSpan } from "../shared/tracing.js";
import { fetchSource } from "./fetch-source.js";
import type { PdfRenderer } from "./imagemagick.js";
import { conversionBytesTotal, conversionStageDuration, type Stage } from "./metrics.js";
import { normalise, type InputFormat, type NormaliseOptions } from "./normalise.js";
import type { QualityPreset } from "./quality.js";

/** Where PDFs go (ObjectStore in production). */
export interface PdfStore {
  put(key: string, body: Uint8Array, options: { contentType: string }): Promise<void>;
  presignGet(key: string, options: { filename?: string }): Promise<PresignedUrl>;
}

export interface ConversionLimits {
  maxInputBytes: number;
  fetchTimeoutMs: number;
  maxPixels: number;
  failOn: NormaliseOptions["failOn"];
}

/** Test and instrumentation hooks around each stage. */
export interface ConversionHooks {
  stageStarted?(stage: Stage, conversionId: string): void | Promise<void>;
  stageFinished?(stage: Stage, conversionId: string): void | Promise<void>;
}

export interface PipelineDeps {
  store: PdfStore;
  renderer: PdfRenderer;
  limits: ConversionLimits;
  hooks?: ConversionHooks | undefined;
}

/** A validated request. */
export interface ConversionRequest {
  conversionId: string;
  imageUrl: string;
  inputFormat: InputFormat;
  preset: QualityPreset;
  stripMetadata: boolean;
  maxWidth: number;
  maxHeight: number;
}

export interface ConversionResult {
  pdfKey: string;
  pdfUrl: string;
  pdfUrlExpiresAt: Date;
  inputSize: number;
  outputSize: number;
  width: number;
  height: number;
  durationMs: number;
}

/** Runs one stage in its own span (`image.fetch`, …), timed in the stage histogram, between the hooks. */
async function timed<T>(deps: PipelineDeps, stage: Stage, conversionId: string, work: () => Promise<T>): Promise<T> {
  await deps.hooks?.stageStarted?.(stage, conversionId);
  try {
    return await withSpan(`image.${stage}`, { "mcsv.conversion.id": conversionId }, async () => {
      // Timed inside the stage's span, which becomes the exemplar of the stage histogram.
      const stop = startDurationTimer(conversionStageDuration, { stage });
      try {
        return await work();
      } finally {
        stop();
      }
    });
  } finally {
    await deps.hooks?.stageFinished?.(stage, conversionId);
  }
}

async function storePdf(store: PdfStore, conversionId: string, pdf: Uint8Array): Promise<{ key: string; url: PresignedUrl }> {
  const key = objectKeys.pdf(conversionId);
  try {
    // Deterministic key: a retried conversion overwrites its earlier PDF instead of adding one.
    await store.put(key, pdf, { contentType: "application/pdf" });
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new ConnectError(`storing the PDF failed: ${reason}`, isUnreachable(error) ? Code.Unavailable : Code.Internal);
  }
  const url = await store.presignGet(key, { filename: `${conversionId}.pdf` });
  return { key, url };
}

export async function runConversion(deps: PipelineDeps, request: ConversionRequest, signal?: AbortSignal): Promise<ConversionResult> {
  const started = performance.now();
  const id = request.conversionId;
  const { limits } = deps;

  let source: Uint8Array | undefined = await timed(deps, "fetch", id, () =>
    fetchSource(request.imageUrl, { maxBytes: limits.maxInputBytes, timeoutMs: limits.fetchTimeoutMs, signal }),
  );
  const inputSize = source.byteLength;
  conversionBytesTotal.inc({ direction: "in" }, inputSize);

  const image = await timed(deps, "normalise", id, () =>
    normalise(source!, {
      inputFormat: request.inputFormat,
      maxPixels: limits.maxPixels,
      maxWidth: request.maxWidth,
      maxHeight: request.maxHeight,
      keepAlpha: request.preset.keepsAlpha,
      stripMetadata: request.stripMetadata,
      failOn: limits.failOn,
    }),
  );
  source = undefined;
  signal?.throwIfAborted();

  const pdf = await timed(deps, "pdf", id, () => deps.renderer.renderPdf(image, request.preset, signal));
  signal?.throwIfAborted();

  const stored = await timed(deps, "upload", id, () => storePdf(deps.store, id, pdf));
  conversionBytesTotal.inc({ direction: "out" }, pdf.byteLength);

  return {
    pdfKey: stored.key,
    pdfUrl: stored.url.url,
    pdfUrlExpiresAt: stored.url.expiresAt,
    inputSize,
    outputSize: pdf.byteLength,
    width: image.width,
    height: image.height,
    durationMs: Math.round(performance.now() - started),
  };
}
