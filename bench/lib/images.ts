/**
 * Test images made on the spot with sharp (no binary fixtures): photographic-like content, smooth gradients plus
 * noise, so that neither JPEG nor Flate can cheat on flat areas. RGB images are JPEGs (how photos arrive), RGBA
 * images PNGs (the common carrier of transparency). The same seed always gives the same bytes.
 *
 * The JPEGs keep full chroma resolution (4:4:4): ImageMagick re-encoding a JPEG copies its chroma subsampling, so
 * with a 4:2:0 original the floor (ImageMagick reading the JPEG) would write a smaller, cheaper image than the
 * service (which hands ImageMagick decoded pixels, written 4:4:4 at quality 90). With 4:4:4 both write the same PDF.
 */
import { crc32 } from "node:zlib";
import sharp from "sharp";

export interface ImageSize {
  /** Short label used in result keys: "0.3MP", "3MP", "12MP". */
  label: string;
  width: number;
  height: number;
}

export const SIZES = {
  small: { label: "0.3MP", width: 640, height: 480 },
  medium: { label: "3MP", width: 2000, height: 1500 },
  large: { label: "12MP", width: 4000, height: 3000 },
} as const satisfies Record<string, ImageSize>;

export type Channels = 3 | 4;

export interface TestImage {
  /** e.g. "3MP-rgb". */
  name: string;
  size: ImageSize;
  channels: Channels;
  format: "jpeg" | "png";
  bytes: Buffer;
}

/** Interleaved 8-bit pixels: gradients on R and G, a diagonal wave on B, ±16 of noise, and an alpha ramp. */
export function photoLikePixels(width: number, height: number, channels: Channels, seed = 42): Buffer {
  const pixels = Buffer.allocUnsafe(width * height * channels);
  let state = seed >>> 0;
  // xorshift32: fast, deterministic noise.
  const noise = () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return ((state >>> 0) & 31) - 16;
  };
  const clamp = (v: number) => (v < 0 ? 0 : v > 255 ? 255 : v);
  const wave = new Float64Array(width + height);
  for (let i = 0; i < wave.length; i++) wave[i] = 128 + 100 * Math.sin(i / 37);
  let i = 0;
  for (let y = 0; y < height; y++) {
    const g = (255 * y) / height;
    for (let x = 0; x < width; x++) {
      pixels[i++] = clamp(((255 * x) / width + noise()) | 0);
      pixels[i++] = clamp((g + noise()) | 0);
      pixels[i++] = clamp((wave[x + y]! + noise()) | 0);
      if (channels === 4) pixels[i++] = clamp(((255 * (x + y)) / (width + height) + 64) | 0);
    }
  }
  return pixels;
}

/** One test image: an RGB JPEG (quality 92, 4:4:4) or an RGBA PNG. */
export async function makeTestImage(size: ImageSize, channels: Channels): Promise<TestImage> {
  const raw = sharp(photoLikePixels(size.width, size.height, channels), { raw: { width: size.width, height: size.height, channels } });
  const bytes = channels === 3 ? await raw.jpeg({ quality: 92, chromaSubsampling: "4:4:4" }).toBuffer() : await raw.png({ compressionLevel: 6 }).toBuffer();
  return { name: `${size.label}-${channels === 3 ? "rgb" : "rgba"}`, size, channels, format: channels === 3 ? "jpeg" : "png", bytes };
}

/** The PNG with all its IDAT data in one chunk (what img2pdf needs to stay linear); other files as they are. */
export function withOneIdat(file: Buffer): Buffer {
  if (file.readUInt32BE(0) !== 0x89504e47) return file;
  const before: Buffer[] = [file.subarray(0, 8)];
  const idat: Buffer[] = [];
  const after: Buffer[] = [];
  for (let offset = 8; offset < file.length; ) {
    const length = file.readUInt32BE(offset);
    const type = file.toString("latin1", offset + 4, offset + 8);
    const whole = file.subarray(offset, offset + 12 + length);
    if (type === "IDAT") idat.push(whole.subarray(8, 8 + length));
    else (idat.length ? after : before).push(whole);
    offset += 12 + length;
  }
  const data = Buffer.concat([Buffer.from("IDAT", "latin1"), ...idat]);
  const chunk = Buffer.alloc(data.length + 8);
  chunk.writeUInt32BE(data.length - 4, 0);
  data.copy(chunk, 4);
  chunk.writeUInt32BE(crc32(data), data.length + 4);
  return Buffer.concat([...before, chunk, ...after]);
}
