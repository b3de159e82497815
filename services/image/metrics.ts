/** Business metrics of the image service, in the shared registry. */
import { prom, registry } from "../shared/metrics.js";

export type Stage = "fetch" | "normalise" | "pdf" | "ocr" | "upload";

export const conversionsTotal = new prom.Counter({
  name: "mcsv_conversions_total",
  help: "Image conversions finished, by outcome (ok or the Connect code of the failure) and quality preset.",
  labelNames: ["outcome", "quality"] as const,
  registers: [registry],
});

export const conversionStageDuration = new prom.Histogram({
  name: "mcsv_conversion_stage_duration_seconds",
  help: "Duration of each stage of an image conversion (fetch, normalise, pdf, ocr when asked for, upload), successful or not.",
  labelNames: ["stage"] as const,
  // Up to 120 s: OCR of a large page may take that long (OCR_TIMEOUT_MS), and a bucket there tells slow from stopped.
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
  enableExemplars: true,
  registers: [registry],
});

export const conversionBytesTotal = new prom.Counter({
  name: "mcsv_conversion_bytes_total",
  help: "Bytes of images read (in) and PDFs written (out) by successful conversion stages.",
  labelNames: ["direction"] as const,
  registers: [registry],
});

export const conversionsActive = new prom.Gauge({
  name: "mcsv_image_conversions_active",
  help: "Conversions holding one of the process's conversion slots.",
  registers: [registry],
});

export const conversionsWaiting = new prom.Gauge({
  name: "mcsv_image_conversions_waiting",
  help: "Conversions waiting for a free conversion slot.",
  registers: [registry],
});

export const pdfEnginesTotal = new prom.Counter({
  name: "mcsv_image_pdf_engine_total",
  help:
    "Conversions past the header check, by the engine that writes the PDF (imagemagick or passthrough) and, when " +
    "passthrough was asked for but the image needed ImageMagick, why (fallback; none otherwise).",
  labelNames: ["engine", "fallback"] as const,
  registers: [registry],
});
