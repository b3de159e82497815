/**
 * Which engine writes a conversion's PDF. ImageMagick decodes, normalises and re-encodes; the passthrough engine
 * (passthrough-pdf.ts) puts the original's encoded data into the PDF unchanged, which is only right when the request
 * needs no pixel change. So passthrough is used when all of these hold, else the conversion falls back to ImageMagick:
 * - the image is a JPEG or a PNG (the header, already checked against the declared format, says so);
 * - it has no EXIF orientation to apply;
 * - it fits max_width × max_height (nothing to scale down);
 * - it has no alpha, or the preset keeps alpha (LOSSLESS; the lossy presets flatten it onto white);
 * - the writer takes the file as it is (see passthrough-pdf.ts: structure and checksums, coding, interlacing,
 *   transparency, and an ICC profile that strip_metadata would remove);
 * - for PDF/A, its colours fit the sRGB output intent (a CMYK JPEG without a profile does not: "pdfa-colour").
 * The quality preset otherwise does not matter: the original's own data is kept under any preset, as exact as the
 * file itself (a JPEG re-encoded at a preset's quality could only lose more; a PNG stays lossless).
 */
import { PdfEngine } from "@mcsv/sdk";
import type { Metadata } from "sharp";
import { inspectPassthrough, preparePassthrough, type DeclineReason, type PreparedPassthrough } from "./passthrough-pdf.js";
import type { QualityPreset } from "./quality.js";

export const PDF_ENGINES = ["imagemagick", "passthrough"] as const;
export type PdfEngineName = (typeof PDF_ENGINES)[number];

/** Why a conversion asked to pass through was written by ImageMagick instead (a fixed set: it labels metrics). */
export type FallbackReason = DeclineReason | "resize" | "alpha-flatten" | "pdfa-colour";

/** The engine of a request: its own choice, or the configured default for PDF_ENGINE_UNSPECIFIED; undefined if unknown. */
export function pdfEngineOf(requested: PdfEngine, configured: PdfEngineName): PdfEngineName | undefined {
  switch (requested) {
    case PdfEngine.UNSPECIFIED:
      return configured;
    case PdfEngine.IMAGEMAGICK:
      return "imagemagick";
    case PdfEngine.PASSTHROUGH:
      return "passthrough";
    default:
      return undefined;
  }
}

export function pdfEngineMessage(engine: PdfEngineName): PdfEngine {
  return engine === "passthrough" ? PdfEngine.PASSTHROUGH : PdfEngine.IMAGEMAGICK;
}

export interface PassthroughRequest {
  /** 0 means no limit. */
  maxWidth: number;
  maxHeight: number;
  preset: QualityPreset;
  stripMetadata: boolean;
}

/**
 * The passthrough image, ready to write, for an image whose header sharp has read (`metadata`), or why it must go
 * through ImageMagick. Reads the file's structure, never decodes its pixels (alpha is split from the filtered rows).
 */
export async function choosePassthrough(
  source: Uint8Array,
  metadata: Metadata,
  request: PassthroughRequest,
): Promise<PreparedPassthrough | { fallback: FallbackReason }> {
  if (metadata.format !== "jpeg" && metadata.format !== "png") return { fallback: "format" };
  if ((metadata.orientation ?? 1) !== 1) return { fallback: "orientation" };
  const tooWide = request.maxWidth > 0 && metadata.width > request.maxWidth;
  const tooTall = request.maxHeight > 0 && metadata.height > request.maxHeight;
  if (tooWide || tooTall) return { fallback: "resize" };
  if (metadata.hasAlpha && !request.preset.keepsAlpha) return { fallback: "alpha-flatten" };
  const plan = inspectPassthrough(source, { stripMetadata: request.stripMetadata });
  if ("declined" in plan) return { fallback: plan.declined };
  // The writer read the same header; a disagreement with libvips means a file that is not what it seems.
  if (plan.width !== metadata.width || plan.height !== metadata.height) return { fallback: "damaged" };
  const prepared = await preparePassthrough(plan);
  return "declined" in prepared ? { fallback: prepared.declined } : prepared;
}
