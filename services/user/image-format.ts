/**
 * The format of an image, sniffed from its first bytes (never from its name or declared type): only raster formats
 * that the image service converts are accepted. SVG, PDF, PostScript, HTML and the like are refused here because
 * their decoders execute scripts or fetch resources. Then its header is read (sharp, no pixel decoded), so that an
 * unreadable header or too many pixels are refused at once rather than failing later in the image service.
 */
import { fileTypeFromBuffer } from "file-type";
import sharp, { type Metadata } from "sharp";

export const IMAGE_FORMATS = ["png", "jpeg", "webp", "tiff", "gif", "avif"] as const;
export type ImageFormat = (typeof IMAGE_FORMATS)[number];

/** MIME types CreateUploadUrl accepts, and the format each one announces. */
export const IMAGE_MIME_TYPES: Record<string, ImageFormat> = {
  "image/png": "png",
  "image/jpeg": "jpeg",
  "image/webp": "webp",
  "image/tiff": "tiff",
  "image/gif": "gif",
  "image/avif": "avif",
};

export const MIME_TYPE_OF: Record<ImageFormat, string> = {
  png: "image/png",
  jpeg: "image/jpeg",
  webp: "image/webp",
  tiff: "image/tiff",
  gif: "image/gif",
  avif: "image/avif",
};

// An animated PNG is a PNG whose first frame every decoder reads.
const BY_EXTENSION: Record<string, ImageFormat> = { png: "png", apng: "png", jpg: "jpeg", webp: "webp", tif: "tiff", gif: "gif", avif: "avif" };

/**
 * The accepted format of these bytes, or a description of what they are instead. All the bytes at hand are given to
 * file-type, which reads what it needs: most formats show in the first 4 KiB, but a TIFF is told apart from the raw
 * camera formats built on it by its directory, which libvips and others write after the pixels.
 */
export async function sniffImageFormat(start: Uint8Array): Promise<{ format: ImageFormat } | { refused: string }> {
  const detected = await fileTypeFromBuffer(start);
  const format = detected ? BY_EXTENSION[detected.ext] : undefined;
  if (format) return { format };
  return { refused: detected ? `${detected.mime} is not a supported image format` : "is not a recognised image format" };
}

/**
 * Bytes read from an upload's start for its format and header: enough for almost every PNG, GIF, WebP and JPEG (a
 * JPEG's metadata segments come before its frame header); a TIFF's directory or an AVIF's header may lie at the end
 * of the file, then the whole upload is read (see mayContinue).
 */
export const HEADER_BYTES = 64 * 1024;

/**
 * Whether bytes that were refused or whose header was unreadable might pass when more of the file is read: a
 * recognised format whose header lies further on, or a TIFF start (file-type needs its directory to name it).
 */
export function mayContinue(start: Uint8Array, outcome: { refused: string } | ImageHeader): boolean {
  if ("refused" in outcome) return isTiffStart(start);
  return "unreadable" in outcome;
}

function isTiffStart(bytes: Uint8Array): boolean {
  const [a, b, c, d] = bytes;
  return (a === 0x49 && b === 0x49 && c === 0x2a && d === 0x00) || (a === 0x4d && b === 0x4d && c === 0x00 && d === 0x2a);
}

export type ImageHeader =
  | { width: number; height: number }
  /** The header could not be read, or names another format than the one sniffed. */
  | { unreadable: string }
  | { tooManyPixels: true };

// sharp (libvips) names AVIF by its container.
const SHARP_FORMAT: Record<ImageFormat, string> = { png: "png", jpeg: "jpeg", webp: "webp", tiff: "tiff", gif: "gif", avif: "heif" };

/**
 * The image's header as sharp reads it, without decoding a pixel: `limitInputPixels` makes sharp refuse a header
 * that claims more than `maxPixels` (width × height). A truncated or damaged body is not noticed here (it needs a
 * full decode); the image service refuses it, and the conversion ends FAILED.
 */
export async function readImageHeader(bytes: Uint8Array, format: ImageFormat, maxPixels: number): Promise<ImageHeader> {
  let metadata: Metadata;
  try {
    metadata = await sharp(bytes, { limitInputPixels: maxPixels }).metadata();
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    if (/pixel limit/i.test(message)) return { tooManyPixels: true };
    return { unreadable: `has a ${format} header that cannot be read (${describeSharpError(message)})` };
  }
  if (metadata.format !== SHARP_FORMAT[format]) return { unreadable: `starts as ${format} but its header reads as ${metadata.format ?? "nothing known"}` };
  if (!metadata.width || !metadata.height) return { unreadable: `has a ${format} header without dimensions` };
  return { width: metadata.width, height: metadata.height };
}

/** libvips' message, first line, without its "Input buffer has corrupt header:" preamble. */
function describeSharpError(message: string): string {
  const line = message.split("\n")[0]!.replace(/^Input buffer (has corrupt header|contains unsupported image format):?\s*/i, "").trim();
  return line.slice(0, 200) || "damaged or truncated";
}
