/** Wires the image service: storage, the ImageMagick PDF writer (and the passthrough engine's default), the conversion limiter, and the Connect server. */
import { ImageService } from "@mcsv/sdk";
import { describeError } from "../shared/errors.js";
import { createLogger, type Logger } from "../shared/logger.js";
import { initMetrics } from "../shared/metrics.js";
import { authPolicy } from "../shared/auth.js";
import { serverSettings } from "../shared/config.js";
import { runService, type RunningService } from "../shared/server.js";
import { ObjectStore } from "../shared/storage.js";
import { SERVICES } from "../shared/topology.js";
import type { ImageConfig } from "./config.js";
import { createImageHandlers } from "./handlers.js";
import { detectImageMagickCommand, ImageMagickPdfRenderer, type PdfRenderer } from "./imagemagick.js";
import { OcrMyPdf, type OcrEngine } from "./ocr.js";
import { enforcingPolicy, ImageMagickPolicy } from "./policy.js";
import { ConcurrencyLimiter } from "./limiter.js";
import { conversionsActive, conversionsWaiting } from "./metrics.js";
import type { ConversionHooks } from "./pipeline.js";

export interface ImageServiceOverrides {
  logger?: Logger;
  store?: ObjectStore;
  renderer?: PdfRenderer;
  hooks?: ConversionHooks;
  ocr?: OcrEngine;
}

export async function startImageService(config: ImageConfig, overrides: ImageServiceOverrides = {}): Promise<RunningService> {
  const name = SERVICES.image.name;
  initMetrics(name);
  const logger = overrides.logger ?? createLogger(name, { level: config.LOG_LEVEL, format: config.LOG_FORMAT });
  const store = overrides.store ?? new ObjectStore(config);

  const command = config.IMAGEMAGICK_COMMAND ?? detectImageMagickCommand();
  // Every ImageMagick runs under mcsv's policy; none runs before the policy was seen in force.
  const policy = new ImageMagickPolicy(command, config.IMAGEMAGICK_POLICY_DIR);
  const renderer =
    overrides.renderer ??
    enforcingPolicy(
      new ImageMagickPdfRenderer({
        command,
        limits: {
          memory: config.IMAGEMAGICK_LIMIT_MEMORY,
          map: config.IMAGEMAGICK_LIMIT_MAP,
          disk: config.IMAGEMAGICK_LIMIT_DISK,
          timeSeconds: config.IMAGEMAGICK_LIMIT_TIME_SECONDS,
        },
        timeoutMs: config.IMAGEMAGICK_TIMEOUT_MS,
        maxOutputBytes: config.IMAGE_MAX_OUTPUT_BYTES,
        env: policy.env,
      }),
      policy,
    );
  // Probe once at start; the service still starts when it fails, and readiness says why (and probes again).
  await renderer.ready().then(
    () => logger.info("ImageMagick writes PDF under mcsv's policy", { command, policy: policy.file }),
    (error: unknown) => logger.error("ImageMagick cannot write PDF under mcsv's policy yet", { command, error: describeError(error) }),
  );

  const ocr = overrides.ocr ?? new OcrMyPdf({ command: config.OCR_COMMAND, timeoutMs: config.OCR_TIMEOUT_MS, maxOutputBytes: config.IMAGE_MAX_OUTPUT_BYTES });
  await ocr.ready().then(
    (description) => logger.info("OCR is available", { ocr: description }),
    (error: unknown) => logger.warn("OCR is not available; conversions that ask for it get failed_precondition", { error: describeError(error) }),
  );

  const limiter = new ConcurrencyLimiter(
    config.IMAGE_CONCURRENCY,
    {
      waiting: () => conversionsWaiting.inc(),
      doneWaiting: () => conversionsWaiting.dec(),
      acquired: () => conversionsActive.inc(),
      released: () => conversionsActive.dec(),
    },
    config.IMAGE_MAX_WAITING ?? 4 * config.IMAGE_CONCURRENCY,
  );

  const handlers = createImageHandlers({
    logger,
    limiter,
    defaultPdfEngine: config.IMAGE_PDF_ENGINE,
    store,
    renderer,
    keyOfUrl: (url) => store.keyOfUrl(url),
    limits: {
      maxInputBytes: config.IMAGE_MAX_INPUT_BYTES,
      fetchTimeoutMs: config.IMAGE_FETCH_TIMEOUT_MS,
      maxPixels: config.IMAGE_MAX_PIXELS,
      maxOutputBytes: config.IMAGE_MAX_OUTPUT_BYTES,
      failOn: config.IMAGE_FAIL_ON,
    },
    hooks: overrides.hooks,
    ocr,
    ocrTimeoutMs: config.OCR_TIMEOUT_MS,
    documentLimits: { maxPages: config.DOCUMENT_MAX_PAGES, maxPixels: config.DOCUMENT_MAX_PIXELS },
  });

  return runService({
    name,
    port: config.IMAGE_PORT,
    ...serverSettings(config),
    logger,
    routes: (router) => router.service(ImageService, handlers),
    auth: authPolicy({ internal: config }),
    sharedDependencies: ["s3"],
    // OCR is reported (available, with its languages, or why not) but never makes the service unready: only the
    // conversions that ask for it need it, and they are refused with failed_precondition.
    optionalDependencies: ["ocr"],
    readiness: {
      s3: () => store.ping(),
      imagemagick: () => renderer.ready(),
      ocr: async () => void (await ocr.ready()),
    },
    close: async () => store.client.destroy(),
  });
}
