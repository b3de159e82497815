/**
 * One conversion, in four stages that each have their own function and tracing span:
 * fetch → normalise → pdf → upload. Every stage is timed; bytes in and out are counted.
 * The original is dropped as soon as it is decoded, so a conversion holds at most two copies of the image at a time.
 * With the passthrough engine, the normalise stage reads the header only (format, pixel limit) and chooses
 * (pdf-engine.ts): the pdf stage then writes the original's encoded data as it is, or the conversion falls back to
 * the normal decode and ImageMagick within the same stages.
 * ImageMagick's PDF is never held whole: the pdf stage stores it as it is written (S3's multipart upload, a part at a
 * time), and an ImageMagick failure aborts the upload, so that no truncated PDF is ever stored; the upload stage then
 * only presigns its link. The passthrough engine's PDF, written in memory from the original's data, is stored in the
 * upload stage.
 */
import type { Readable } from "node:stream";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Span } from "@opentelemetry/api";
import type { PresignedUrl } from "../shared/storage.js";
import { isUnreachable, objectKeys } from "../shared/storage.js";
import { startDurationTimer } from "../shared/metrics.js";
import { withSpan } from "../shared/tracing.js";
import { fetchSource } from "./fetch-source.js";
import type { PdfRenderer } from "./imagemagick.js";
import { conversionBytesTotal, conversionStageDuration, pdfEnginesTotal, type Stage } from "./metrics.js";
import { normaliseOpened, openImage, type InputFormat, type NormalisedImage, type NormaliseOptions } from "./normalise.js";
import { writePassthroughPdf, type PassthroughMode, type PreparedPassthrough } from "./passthrough-pdf.js";
import { choosePassthrough, type FallbackReason, type PdfEngineName } from "./pdf-engine.js";
import type { QualityPreset } from "./quality.js";

/** Where PDFs go (ObjectStore in production). */
export interface PdfStore {
  put(key: string, body: Uint8Array, options: { contentType: string }): Promise<void>;
  putStream(key: string, body: Readable, options: { contentType: string }): Promise<void>;
  presignGet(key: string, options: { filename?: string }): Promise<PresignedUrl>;
}

export interface ConversionLimits {
  maxInputBytes: number;
  fetchTimeoutMs: number;
  maxPixels: number;
  /** Largest PDF written, by either engine. */
  maxOutputBytes: number;
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
  /** The engine asked for (the configured default already applied). */
  engine: PdfEngineName;
}

/** The engine that wrote the PDF, and for passthrough how; `fallback` says why a passthrough request did not. */
export type PdfEngineUsed =
  | { engine: "passthrough"; mode: PassthroughMode }
  | { engine: "imagemagick"; fallback?: FallbackReason };

export interface ConversionResult {
  pdfKey: string;
  pdfUrl: string;
  pdfUrlExpiresAt: Date;
  inputSize: number;
  outputSize: number;
  width: number;
  height: number;
  durationMs: number;
  pdfEngine: PdfEngineUsed;
}

/** Runs one stage in its own span (`image.fetch`, …), timed in the stage histogram, between the hooks. */
export async function timed<T>(deps: PipelineDeps, stage: Stage, conversionId: string, work: (span: Span) => Promise<T>): Promise<T> {
  await deps.hooks?.stageStarted?.(stage, conversionId);
  try {
    return await withSpan(`image.${stage}`, { "mcsv.conversion.id": conversionId }, async (span) => {
      // Timed inside the stage's span, which becomes the exemplar of the stage histogram.
      const stop = startDurationTimer(conversionStageDuration, { stage });
      try {
        return await work(span);
      } finally {
        stop();
      }
    });
  } finally {
    await deps.hooks?.stageFinished?.(stage, conversionId);
  }
}

/** A failure of storage, as the caller should see it: unavailable when S3 is out of reach. */
function storingFailed(error: unknown): ConnectError {
  if (error instanceof ConnectError) return error;
  const reason = error instanceof Error ? error.message : String(error);
  return new ConnectError(`storing the PDF failed: ${reason}`, isUnreachable(error) ? Code.Unavailable : Code.Internal);
}

/** The PDF's key: deterministic, so that a retried conversion overwrites its earlier PDF instead of adding one. */
const pdfKey = (conversionId: string) => objectKeys.pdf(conversionId);

/**
 * Has ImageMagick write the PDF of `image` straight into storage; resolves with its size. ImageMagick's own failure
 * (its exit code says why) wins over the upload's, which it causes; a failed upload stops ImageMagick.
 */
async function renderIntoStorage(deps: PipelineDeps, conversionId: string, image: NormalisedImage, preset: QualityPreset, signal: AbortSignal | undefined): Promise<number> {
  const stop = new AbortController();
  const { output, done } = await deps.renderer.streamPdf(image, preset, signal ? AbortSignal.any([signal, stop.signal]) : stop.signal);
  const stored = deps.store.putStream(pdfKey(conversionId), output, { contentType: "application/pdf" }).catch((error: unknown) => {
    const failure = storingFailed(error);
    stop.abort(failure);
    throw failure;
  });
  const [rendered, upload] = await Promise.allSettled([done, stored]);
  if (rendered.status === "rejected") throw rendered.reason;
  if (upload.status === "rejected") throw upload.reason;
  return rendered.value;
}

export async function storePdf(store: PdfStore, conversionId: string, pdf: Uint8Array | undefined): Promise<{ key: string; url: PresignedUrl }> {
  const key = pdfKey(conversionId);
  if (pdf) {
    try {
      await store.put(key, pdf, { contentType: "application/pdf" });
    } catch (error) {
      throw storingFailed(error);
    }
  }
  const url = await store.presignGet(key, { filename: `${conversionId}.pdf` });
  return { key, url };
}

/** How an image of `inputFormat` is checked and normalised for `request`, within the service's limits. */
export function normaliseOptionsOf(
  limits: ConversionLimits,
  request: Pick<ConversionRequest, "preset" | "stripMetadata" | "maxWidth" | "maxHeight">,
  inputFormat: InputFormat,
): NormaliseOptions {
  const { preset, stripMetadata, maxWidth, maxHeight } = request;
  return { inputFormat, maxPixels: limits.maxPixels, maxWidth, maxHeight, keepAlpha: preset.keepsAlpha, stripMetadata, failOn: limits.failOn };
}

type Prepared = { plan: PreparedPassthrough } | { image: NormalisedImage; fallback: FallbackReason | undefined };

export async function runConversion(deps: PipelineDeps, request: ConversionRequest, signal?: AbortSignal): Promise<ConversionResult> {
  const started = performance.now();
  const id = request.conversionId;
  const { limits } = deps;

  let source: Uint8Array | undefined = await timed(deps, "fetch", id, () =>
    fetchSource(request.imageUrl, { maxBytes: limits.maxInputBytes, timeoutMs: limits.fetchTimeoutMs, signal }),
  );
  const inputSize = source.byteLength;
  conversionBytesTotal.inc({ direction: "in" }, inputSize);

  const normaliseOptions = normaliseOptionsOf(limits, request, request.inputFormat);
  // Either the passthrough plan, or the image decoded and normalised for ImageMagick.
  const prepared = await timed(deps, "normalise", id, async (): Promise<Prepared> => {
    const opened = await openImage(source!, normaliseOptions);
    const choice = request.engine === "passthrough" ? await choosePassthrough(source!, opened.metadata, request) : undefined;
    const plan = choice && !("fallback" in choice) ? choice : undefined;
    const fallback = choice && "fallback" in choice ? choice.fallback : undefined;
    // Counted once chosen, so that a fallback whose decoding then refuses the image is counted too.
    pdfEnginesTotal.inc({ engine: plan ? "passthrough" : "imagemagick", fallback: fallback ?? "none" });
    if (plan) return { plan };
    return { image: await normaliseOpened(opened, normaliseOptions), fallback };
  });
  source = undefined;
  signal?.throwIfAborted();

  const pdfEngine: PdfEngineUsed = "plan" in prepared ? { engine: "passthrough", mode: prepared.plan.mode } : { engine: "imagemagick", ...(prepared.fallback ? { fallback: prepared.fallback } : {}) };
  // ImageMagick's PDF is stored as it is written; the passthrough engine's is whole in memory, and stored next.
  const pdf = await timed(deps, "pdf", id, async (span): Promise<{ bytes: number; inMemory?: Uint8Array }> => {
    span.setAttributes({
      "mcsv.pdf.engine": pdfEngine.engine,
      ...(pdfEngine.engine === "passthrough" ? { "mcsv.pdf.passthrough_mode": pdfEngine.mode } : {}),
      ...("fallback" in pdfEngine && pdfEngine.fallback ? { "mcsv.pdf.fallback": pdfEngine.fallback } : {}),
    });
    if ("image" in prepared) return { bytes: await renderIntoStorage(deps, id, prepared.image, request.preset, signal) };
    const written = writePassthroughPdf(prepared.plan);
    if (written.pdf.byteLength > limits.maxOutputBytes) {
      throw new ConnectError(`the PDF would be larger than the limit of ${limits.maxOutputBytes} bytes`, Code.ResourceExhausted);
    }
    return { bytes: written.pdf.byteLength, inMemory: written.pdf };
  });
  signal?.throwIfAborted();
  const size = "image" in prepared ? prepared.image : prepared.plan;

  const stored = await timed(deps, "upload", id, () => storePdf(deps.store, id, pdf.inMemory));
  conversionBytesTotal.inc({ direction: "out" }, pdf.bytes);

  return {
    pdfKey: stored.key,
    pdfUrl: stored.url.url,
    pdfUrlExpiresAt: stored.url.expiresAt,
    inputSize,
    outputSize: pdf.bytes,
    width: size.width,
    height: size.height,
    durationMs: Math.round(performance.now() - started),
    pdfEngine,
  };
}
