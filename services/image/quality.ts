/**
 * The quality presets: how each trades PDF size against fidelity, and the ImageMagick arguments that implement it.
 *
 * - LOSSLESS: Flate (`-compress Zip`); the PDF holds the normalised pixels exactly, alpha kept as an SMask.
 * - HIGH (also the default for UNSPECIFIED): JPEG (DCT) at quality 90, near visually lossless; ImageMagick keeps full
 *   chroma resolution from quality 90 up.
 * - MEDIUM: JPEG at quality 70, chroma subsampled 4:2:0; artefacts visible only on close inspection.
 * - LOW: JPEG at quality 40, chroma 4:2:0; the smallest files, artefacts visible on edges and text.
 * JPEG has no alpha, so the lossy presets flatten transparency onto white (what a viewer shows on paper).
 */
import { Quality } from "@mcsv/sdk";

export interface QualityPreset {
  /** Low-cardinality name for metrics and logs. */
  name: "low" | "medium" | "high" | "lossless";
  /** Whether the image keeps its alpha channel (otherwise it is flattened onto white first). */
  keepsAlpha: boolean;
  /** ImageMagick output settings for the PDF's image stream. */
  compressArgs: readonly string[];
}

const jpeg = (name: QualityPreset["name"], quality: number): QualityPreset => ({
  name,
  keepsAlpha: false,
  compressArgs: ["-compress", "JPEG", "-quality", String(quality)],
});

const PRESETS: Readonly<Record<Exclude<Quality, Quality.UNSPECIFIED>, QualityPreset>> = {
  [Quality.LOW]: jpeg("low", 40),
  [Quality.MEDIUM]: jpeg("medium", 70),
  [Quality.HIGH]: jpeg("high", 90),
  [Quality.LOSSLESS]: { name: "lossless", keepsAlpha: true, compressArgs: ["-compress", "Zip"] },
};

/** The preset of a requested quality (UNSPECIFIED means HIGH), or undefined for a value this build does not know. */
export function qualityPreset(quality: Quality): QualityPreset | undefined {
  if (quality === Quality.UNSPECIFIED) return PRESETS[Quality.HIGH];
  return Object.hasOwn(PRESETS, quality) ? PRESETS[quality as keyof typeof PRESETS] : undefined;
}
