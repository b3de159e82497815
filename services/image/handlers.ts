/**
 * ImageService handlers: validate the request, wait for a conversion slot, run the pipeline (a document's for several
 * images or document options, pipeline.ts's otherwise), count the outcome.
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { ImageService, ImageServiceConvertImageResponseSchema, Quality, type ConversionOptions } from "@mcsv/sdk";
import { busy, connectCodeName, describeError } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import { runDocument, type DocumentDeps, type DocumentResult } from "./document-pipeline.js";
import { LimiterFullError, type ConcurrencyLimiter } from "./limiter.js";
import { conversionsTotal } from "./metrics.js";
import { runConversion, type ConversionResult } from "./pipeline.js";
import { ProgressChannel } from "./progress-channel.js";
import { pdfEngineMessage } from "./pdf-engine.js";
import { qualityPreset } from "./quality.js";
import { isPlainImage, singleImage, validate, validateDocument, type RequestPolicy } from "./requests.js";

export interface ImageHandlerDeps extends DocumentDeps, RequestPolicy {
  logger: Logger;
  limiter: ConcurrencyLimiter;
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
          return isPlainImage(request) ? () => runConversion(deps, singleImage(request), ctx.signal) : () => runDocument(deps, request, ctx.signal);
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
