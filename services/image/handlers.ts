/** ImageService handlers: validate the request, wait for a conversion slot, run the pipeline, count the outcome. */
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { ImageService, PdfEngine, Quality, type ImageServiceConvertImageRequest } from "@mcsv/sdk";
import { busy, connectCodeName, describeError, Violations } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import { LimiterFullError, type ConcurrencyLimiter } from "./limiter.js";
import { conversionsTotal } from "./metrics.js";
import { INPUT_FORMATS, isInputFormat } from "./normalise.js";
import { runConversion, type ConversionRequest, type PipelineDeps } from "./pipeline.js";
import { pdfEngineMessage, pdfEngineOf, type PdfEngineName } from "./pdf-engine.js";
import { qualityPreset } from "./quality.js";

export interface ImageHandlerDeps extends PipelineDeps {
  logger: Logger;
  limiter: ConcurrencyLimiter;
  /** The engine of a request that leaves it unspecified (IMAGE_PDF_ENGINE). */
  defaultPdfEngine: PdfEngineName;
  /** The object key a URL points at in the service's own bucket, or undefined for any other URL (SSRF guard). */
  keyOfUrl(url: string): string | undefined;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const MAX_DIMENSION = 1_000_000;


function validate(req: ImageServiceConvertImageRequest, deps: ImageHandlerDeps): ConversionRequest {
  const violations = new Violations();
  violations.check(UUID.test(req.conversionId), "conversionId", "must be a UUID");
  if (req.imageUrl === "") violations.add("imageUrl", "is required");
  // Fetch only from our own bucket, never from an address the caller chose.
  else if (!deps.keyOfUrl(req.imageUrl)) violations.add("imageUrl", "must be a presigned URL of an object in the service's storage bucket");
  violations.check(isInputFormat(req.inputFormat), "inputFormat", `must be one of ${INPUT_FORMATS.join(", ")}`);
  const options = req.options;
  const preset = qualityPreset(options?.quality ?? Quality.UNSPECIFIED);
  if (!preset) violations.add("options.quality", `unknown quality ${options?.quality}`);
  violations.check((options?.maxWidth ?? 0) <= MAX_DIMENSION, "options.maxWidth", `must be at most ${MAX_DIMENSION}`);
  violations.check((options?.maxHeight ?? 0) <= MAX_DIMENSION, "options.maxHeight", `must be at most ${MAX_DIMENSION}`);
  const engine = pdfEngineOf(options?.engine ?? PdfEngine.UNSPECIFIED, deps.defaultPdfEngine);
  if (!engine) violations.add("options.engine", `unknown PDF engine ${options?.engine}`);
  violations.throwIfAny();
  return {
    conversionId: req.conversionId.toLowerCase(),
    imageUrl: req.imageUrl,
    inputFormat: req.inputFormat as ConversionRequest["inputFormat"],
    preset: preset!,
    stripMetadata: options?.stripMetadata ?? false,
    maxWidth: options?.maxWidth ?? 0,
    maxHeight: options?.maxHeight ?? 0,
    engine: engine!,
  };
}

export function createImageHandlers(deps: ImageHandlerDeps): ServiceImpl<typeof ImageService> {
  const { logger } = deps;
  return {
    async convertImage(req, ctx) {
      const quality = qualityPreset(req.options?.quality ?? Quality.UNSPECIFIED)?.name ?? "unknown";
      try {
        const request = validate(req, deps);
        const result = await deps.limiter
          .run(() => runConversion(deps, request, ctx.signal), ctx.signal)
          .catch((error: unknown) => {
            throw error instanceof LimiterFullError ? busy(`this image service is busy: ${error.message}`, 1) : error;
          });
        conversionsTotal.inc({ outcome: "ok", quality });
        logger.info("image converted", {
          conversion_id: request.conversionId,
          quality,
          input_format: request.inputFormat,
          input_size: result.inputSize,
          output_size: result.outputSize,
          width: result.width,
          height: result.height,
          duration_ms: result.durationMs,
          pdf_engine: result.pdfEngine.engine,
          ...(result.pdfEngine.engine === "passthrough" ? { passthrough_mode: result.pdfEngine.mode } : {}),
          ...(result.pdfEngine.engine === "imagemagick" && result.pdfEngine.fallback ? { passthrough_fallback: result.pdfEngine.fallback } : {}),
        });
        return {
          pdfKey: result.pdfKey,
          pdfUrl: result.pdfUrl,
          pdfUrlExpiresAt: timestampFromDate(result.pdfUrlExpiresAt),
          inputSize: BigInt(result.inputSize),
          outputSize: BigInt(result.outputSize),
          width: result.width,
          height: result.height,
          durationMs: BigInt(result.durationMs),
          engine: pdfEngineMessage(result.pdfEngine.engine),
        };
      } catch (caught) {
        const error = ConnectError.from(caught);
        conversionsTotal.inc({ outcome: connectCodeName(error.code), quality });
        const fields = { conversion_id: req.conversionId.slice(0, 64), quality, input_format: req.inputFormat.slice(0, 16), code: connectCodeName(error.code), error: describeError(error) };
        // A bad image is the caller's problem; a failure of ours deserves attention.
        if (error.code === Code.Internal || error.code === Code.Unknown) logger.error("image conversion failed", fields);
        else logger.warn("image conversion refused or failed", fields);
        throw error;
      }
    },
  };
}
