/**
 * Decodes and normalises the original with sharp into raw 8-bit pixels, ready for the PDF writer:
 * - refuses a decompression bomb from its header alone (`limitInputPixels`, also applied by metadata());
 * - checks that the real format is the one the gateway sniffed;
 * - applies the EXIF orientation, so the page shows the image the right way up;
 * - scales down to fit max_width × max_height (never up), keeping the aspect ratio;
 * - keeps alpha for presets that can carry it, else flattens onto white;
 * - with strip_metadata, converts to sRGB and drops every profile; without, keeps an RGB ICC profile (and the pixels
 *   in its colour space) so the PDF can declare it. EXIF itself has no place in a PDF image and is never embedded.
 * The result is raw pixels (no encoding at all), except when a profile is kept: ImageMagick 6 can only attach a
 * profile to raw pixels by converting them, so those images travel as an uncompressed PNG that carries it.
 * Animated GIF/WebP and multi-page TIFF contribute their first frame. Damaged pixel data is refused (`failOn`).
 */
import { Code, ConnectError } from "@connectrpc/connect";
import sharp, { type Metadata, type OutputInfo, type Sharp } from "sharp";
import { withSpan } from "../shared/tracing.js";

export const INPUT_FORMATS = ["png", "jpeg", "webp", "tiff", "gif", "avif"] as const;
export type InputFormat = (typeof INPUT_FORMATS)[number];

export function isInputFormat(value: string): value is InputFormat {
  return (INPUT_FORMATS as readonly string[]).includes(value);
}

export interface NormaliseOptions {
  /** The format the gateway sniffed; the image must really be one. */
  inputFormat: InputFormat;
  maxPixels: number;
  /** 0 means no limit. */
  maxWidth: number;
  maxHeight: number;
  keepAlpha: boolean;
  stripMetadata: boolean;
  failOn: "warning" | "error" | "truncated";
}

/**
 * The normalised image as ImageMagick will read it: `raw` is interleaved 8-bit samples row by row from the top (RGB,
 * or RGBA when `channels` is 4) in sRGB; `png` is an uncompressed 8-bit PNG that carries an RGB ICC profile.
 */
export interface NormalisedImage {
  encoding: "raw" | "png";
  data: Uint8Array;
  width: number;
  height: number;
  channels: 3 | 4;
}

const invalid = (message: string) => new ConnectError(message, Code.InvalidArgument);

/** sharp reports AVIF as HEIF with AV1 compression. */
function formatOf(metadata: Metadata): string | undefined {
  if (metadata.format === "heif") return metadata.compression === "av1" ? "avif" : "heic";
  return metadata.format;
}

/** Whether an ICC profile describes an RGB colour space (bytes 16–19 of its header). */
function isRgbProfile(icc: Uint8Array | undefined): icc is Uint8Array {
  return icc !== undefined && icc.byteLength >= 128 && Buffer.from(icc.buffer, icc.byteOffset + 16, 4).toString("latin1") === "RGB ";
}

/** Turns libvips' decoder messages into a short, user-facing reason. */
function decodeError(error: unknown, maxPixels: number): ConnectError {
  const message = error instanceof Error ? error.message : String(error);
  if (/pixel limit/i.test(message)) {
    return invalid(`the image has more pixels than the limit of ${maxPixels.toLocaleString("en-US")}`);
  }
  if (/unsupported image format/i.test(message)) return invalid("the file is not an image in a supported format");
  return invalid(`the image cannot be decoded (damaged or truncated): ${message.split("\n")[0]}`);
}

/** The image opened by sharp with its header read: the format checked, the pixel limit applied, nothing decoded. */
export interface OpenedImage {
  image: Sharp;
  metadata: Metadata;
}

/** Reads the header (sharp's metadata, which applies the pixel limit) and checks the format is the one declared. */
export async function openImage(source: Uint8Array, options: Pick<NormaliseOptions, "inputFormat" | "maxPixels" | "failOn">): Promise<OpenedImage> {
  const image = sharp(source, {
    limitInputPixels: options.maxPixels,
    failOn: options.failOn,
    autoOrient: true,
  });
  let metadata: Metadata;
  try {
    // sharp is lazy: reading the header is its first step, the pipeline below (decode to encode) its second.
    metadata = await withSpan("sharp.metadata", { "mcsv.image.input_bytes": source.byteLength }, async (span) => {
      const found = await image.metadata();
      span.setAttributes({ "mcsv.image.format": formatOf(found) ?? "unknown", "mcsv.image.width": found.width ?? 0, "mcsv.image.height": found.height ?? 0, "mcsv.image.pages": found.pages ?? 1 });
      return found;
    });
  } catch (error) {
    throw decodeError(error, options.maxPixels);
  }
  const actual = formatOf(metadata);
  if (actual !== options.inputFormat) {
    throw invalid(`the image is ${actual ?? "of an unknown format"}, not ${options.inputFormat} as declared`);
  }
  return { image, metadata };
}

export async function normalise(source: Uint8Array, options: NormaliseOptions): Promise<NormalisedImage> {
  return normaliseOpened(await openImage(source, options), options);
}

/** Decodes and normalises an image whose header `openImage` has read. */
export async function normaliseOpened({ image, metadata }: OpenedImage, options: NormaliseOptions): Promise<NormalisedImage> {
  if (options.maxWidth > 0 || options.maxHeight > 0) {
    image.resize({
      width: options.maxWidth || undefined,
      height: options.maxHeight || undefined,
      fit: "inside",
      withoutEnlargement: true,
    });
  }
  if (metadata.hasAlpha && !options.keepAlpha) image.flatten({ background: "#ffffff" });

  const keepProfile = !options.stripMetadata && isRgbProfile(metadata.icc);
  // Keeping the profile keeps the pixels in its colour space; otherwise sharp converts them to sRGB.
  if (keepProfile) image.keepIccProfile();
  image.toColourspace("srgb");
  if (keepProfile) {
    // Level 0 stores the rows uncompressed: the PNG is only a container for the pixels and their profile.
    image.png({ compressionLevel: 0, adaptiveFiltering: false, palette: false });
  } else {
    image.raw({ depth: "uchar" });
  }

  const steps = [
    "auto_orient",
    ...(options.maxWidth > 0 || options.maxHeight > 0 ? ["resize"] : []),
    ...(metadata.hasAlpha && !options.keepAlpha ? ["flatten"] : []),
    keepProfile ? "keep_icc_profile" : "to_srgb",
    keepProfile ? "png" : "raw",
  ];
  let result: { data: Buffer; info: OutputInfo };
  try {
    result = await withSpan("sharp.pipeline", { "mcsv.image.steps": steps }, async (span) => {
      const output = await image.toBuffer({ resolveWithObject: true });
      span.setAttributes({ "mcsv.image.width": output.info.width, "mcsv.image.height": output.info.height, "mcsv.image.channels": output.info.channels, "mcsv.image.output_bytes": output.data.byteLength });
      return output;
    });
  } catch (error) {
    throw decodeError(error, options.maxPixels);
  }
  const { data, info } = result;
  if (info.channels !== 3 && info.channels !== 4) {
    throw new ConnectError(`normalisation produced ${info.channels} channels, expected 3 or 4`, Code.Internal);
  }
  return { encoding: keepProfile ? "png" : "raw", data, width: info.width, height: info.height, channels: info.channels };
}
