/**
 * The format of an image, sniffed from its first bytes (never from its name or declared type): only raster formats
 * that the image service converts are accepted. SVG, PDF, PostScript, HTML and the like are refused here because
 * their decoders execute scripts or fetch resources.
 */
import { fileTypeFromBuffer } from "file-type";

export const IMAGE_FORMATS = ["png", "jpeg", "webp", "tiff", "gif", "avif"] as const;
export type ImageFormat = (typeof IMAGE_FORMATS)[number];

/** Bytes file-type needs to recognise any format it knows. */
export const SNIFF_BYTES = 4_100;

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

/** The accepted format of these bytes, or a description of what they are instead. */
export async function sniffImageFormat(start: Uint8Array): Promise<{ format: ImageFormat } | { refused: string }> {
  const detected = await fileTypeFromBuffer(start.subarray(0, SNIFF_BYTES));
  const format = detected ? BY_EXTENSION[detected.ext] : undefined;
  if (format) return { format };
  return { refused: detected ? `${detected.mime} is not a supported image format` : "is not a recognised image format" };
}
