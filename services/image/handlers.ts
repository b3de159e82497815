/**
 * ImageService handlers: validate the request, wait for a conversion slot, run the pipeline (a document's for several
 * images or document options, pipeline.ts's otherwise), count the outcome.
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import {
  ConversionOptionsSchema,
  ImageService,
  ImageServiceConvertImageResponseSchema,
  PdfEngine,
  Quality,
  type ConversionOptions,
  type ImageServiceConvertDocumentRequest,
  type ImageServiceConvertImageRequest,
} from "@mcsv/sdk";
import { checkDocumentOptions, needsDocumentWriter } from "../shared/document-options.js";
import { busy, connectCodeName, describeError, Violations } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import { documentMetadataOf, pageLayoutOf } from "./document-request.js";
import { runDocument, type DocumentDeps, type DocumentRequest, type DocumentResult } from "./document-pipeline.js";
import { LimiterFullError, type ConcurrencyLimiter } from "./limiter.js";
import { conversionsTotal } from "./metrics.js";
import { INPUT_FORMATS, isInputFormat, type InputFormat } from "./normalise.js";
import { runConversion, type ConversionRequest, type ConversionResult } from "./pipeline.js";
import { ProgressChannel } from "./progress-channel.js";
import { pdfEngineMessage, pdfEngineOf, type PdfEngineName } from "./pdf-engine.js";
import { qualityPreset } from "./quality.js";

export interface ImageHandlerDeps extends DocumentDeps {
  logger: Logger;
  limiter: ConcurrencyLimiter;
  /** The engine of a request that leaves it unspecified (IMAGE_PDF_ENGINE). */
  defaultPdfEngine: PdfEngineName;
  /** The object key a URL points at in the service's own bucket, or undefined for any other URL (SSRF guard). */
  keyOfUrl(url: string): string | undefined;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const MAX_DIMENSION = 1_000_000;


/** The options every conversion shares, each bad one recorded in `violations`. */
function validateOptions(options: ConversionOptions | undefined, violations: Violations, deps: ImageHandlerDeps) {
  const preset = qualityPreset(options?.quality ?? Quality.UNSPECIFIED);
  if (!preset) violations.add("options.quality", `unknown quality ${options?.quality}`);
  violations.check((options?.maxWidth ?? 0) <= MAX_DIMENSION, "options.maxWidth", `must be at most ${MAX_DIMENSION}`);
  violations.check((options?.maxHeight ?? 0) <= MAX_DIMENSION, "options.maxHeight", `must be at most ${MAX_DIMENSION}`);
  const engine = pdfEngineOf(options?.engine ?? PdfEngine.UNSPECIFIED, deps.defaultPdfEngine);
  if (!engine) violations.add("options.engine", `unknown PDF engine ${options?.engine}`);
  const all = options ?? create(ConversionOptionsSchema);
  checkDocumentOptions(all, violations);
  return {
    preset: preset!,
    stripMetadata: all.stripMetadata,
    maxWidth: all.maxWidth,
    maxHeight: all.maxHeight,
    engine: engine!,
    layout: pageLayoutOf(all),
    metadata: documentMetadataOf(all),
    pdfa: all.pdfa,
    ocrLanguages: [...all.ocrLanguages],
  };
}

/** One page's image: fetched only from our own bucket, never from an address the caller chose (SSRF guard). */
function validatePage(page: { imageUrl: string; inputFormat: string }, violations: Violations, deps: ImageHandlerDeps, field: (name: string) => string) {
  if (page.imageUrl === "") violations.add(field("imageUrl"), "is required");
  else if (!deps.keyOfUrl(page.imageUrl)) violations.add(field("imageUrl"), "must be a presigned URL of an object in the service's storage bucket");
  violations.check(isInputFormat(page.inputFormat), field("inputFormat"), `must be one of ${INPUT_FORMATS.join(", ")}`);
  return { imageUrl: page.imageUrl, inputFormat: page.inputFormat as InputFormat };
}

function validate(req: ImageServiceConvertImageRequest, deps: ImageHandlerDeps): DocumentRequest {
  const violations = new Violations();
  violations.check(UUID.test(req.conversionId), "conversionId", "must be a UUID");
  const page = validatePage(req, violations, deps, (name) => name);
  const options = validateOptions(req.options, violations, deps);
  violations.throwIfAny();
  return { conversionId: req.conversionId.toLowerCase(), pages: [page], ...options };
}

function validateDocument(req: ImageServiceConvertDocumentRequest, deps: ImageHandlerDeps): DocumentRequest {
  const violations = new Violations();
  violations.check(UUID.test(req.conversionId), "conversionId", "must be a UUID");
  if (req.pages.length === 0) violations.add("pages", "must name at least one page");
  const max = deps.documentLimits.maxPages;
  if (req.pages.length > max) violations.add("pages", `must name at most ${max} pages`);
  const pages = req.pages.slice(0, max).map((page, i) => validatePage(page, violations, deps, (name) => `pages[${i}].${name}`));
  const options = validateOptions(req.options, violations, deps);
  violations.throwIfAny();
  return { conversionId: req.conversionId.toLowerCase(), pages, ...options };
}

/** A one-image request in the pipeline's terms (ImageMagick's own PDF, or the passthrough engine's). */
function singleImage(request: DocumentRequest): ConversionRequest {
  const { imageUrl, inputFormat } = request.pages[0]!;
  const { conversionId, preset, stripMetadata, maxWidth, maxHeight, engine } = request;
  return { conversionId, imageUrl, inputFormat, preset, stripMetadata, maxWidth, maxHeight, engine };
}

/** The answer's shape of a result. */
function response(result: ConversionResult & Partial<Pick<DocumentResult, "pageCount" | "text">>) {
  return create(ImageServiceConvertImageResponseSchema, {
    pdfKey: result.pdfKey,
    pdfUrl: result.pdfUrl,
    pdfUrlExpiresAt: timestampFromDate(result.pdfUrlExpiresAt),
    inputSize: BigInt(result.inputSize),
    outputSize: BigInt(result.outputSize),
    width: result.width,
    height: result.height,
    durationMs: BigInt(result.durationMs),
    engine: pdfEngineMessage(result.pdfEngine.engine),
    pageCount: result.pageCount ?? 1,
    ...(result.text ? { text: { wordCount: result.text.words, languages: result.text.languages } } : {}),
  });
}

export function createImageHandlers(deps: ImageHandlerDeps): ServiceImpl<typeof ImageService> {
  const { logger } = deps;

  /** Runs a conversion in a slot of the limiter, counting and logging its outcome. */
  async function converting<T extends ConversionResult & { pageCount?: number }>(
    req: { conversionId: string; options?: ConversionOptions | undefined },
    inputFormat: string,
    /** Validates the request (before it waits for a slot) and returns the conversion to run. */
    prepare: () => () => Promise<T>,
    signal: AbortSignal,
  ): Promise<T> {
    const quality = qualityPreset(req.options?.quality ?? Quality.UNSPECIFIED)?.name ?? "unknown";
    try {
      const convert = prepare();
      const result = await deps.limiter.run(convert, signal).catch((error: unknown) => {
        throw error instanceof LimiterFullError ? busy(`this image service is busy: ${error.message}`, 1) : error;
      });
      conversionsTotal.inc({ outcome: "ok", quality });
      logger.info("image converted", {
        conversion_id: req.conversionId,
        quality,
        input_format: inputFormat,
        input_size: result.inputSize,
        output_size: result.outputSize,
        width: result.width,
        height: result.height,
        pages: result.pageCount ?? 1,
        duration_ms: result.durationMs,
        pdf_engine: result.pdfEngine.engine,
        ...(result.pdfEngine.engine === "passthrough" ? { passthrough_mode: result.pdfEngine.mode } : {}),
        ...(result.pdfEngine.engine === "imagemagick" && result.pdfEngine.fallback ? { passthrough_fallback: result.pdfEngine.fallback } : {}),
      });
      return result;
    } catch (caught) {
      const error = ConnectError.from(caught);
      conversionsTotal.inc({ outcome: connectCodeName(error.code), quality });
      const fields = { conversion_id: req.conversionId.slice(0, 64), quality, input_format: inputFormat.slice(0, 32), code: connectCodeName(error.code), error: describeError(error) };
      // A bad image is the caller's problem; a failure of ours deserves attention.
      if (error.code === Code.Internal || error.code === Code.Unknown) logger.error("image conversion failed", fields);
      else logger.warn("image conversion refused or failed", fields);
      throw error;
    }
  }

  return {
    async convertImage(req, ctx) {
      const result = await converting(
        req,
        req.inputFormat,
        () => {
          const request = validate(req, deps);
          // Layout, metadata, PDF/A and OCR need the document writer; a plain image keeps ImageMagick's own PDF.
          return needsDocumentWriter(req.options) ? () => runDocument(deps, request, ctx.signal) : () => runConversion(deps, singleImage(request), ctx.signal);
        },
        ctx.signal,
      );
      return response(result);
    },

    async *convertDocument(req, ctx) {
      const formats = req.pages.map((page) => page.inputFormat).join("+");
      // Each page's progress is passed on as it happens, then the result.
      const steps = new ProgressChannel<{ pagesDone: number; pageCount: number }>();
      const converted = converting(
        req,
        formats,
        () => {
          const request = validateDocument(req, deps);
          return () => runDocument(deps, request, ctx.signal, (pagesDone, pageCount) => steps.push({ pagesDone, pageCount }));
        },
        ctx.signal,
      );
      for await (const step of steps.until(converted)) yield step;
      const result = await converted;
      yield { pagesDone: result.pageCount, pageCount: result.pageCount, result: response(result) };
    },
  };
}
