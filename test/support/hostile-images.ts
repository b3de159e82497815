/** Hand-made images whose header lies or breaks: for the gateway's header checks and the hostile-input corpus. */
import { deflateSync } from "node:zlib";
import sharp from "sharp";

const crcTable = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const byte of bytes) c = crcTable[(c ^ byte) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Uint8Array): Buffer {
  const body = Buffer.concat([Buffer.from(type, "latin1"), data]);
  const out = Buffer.alloc(8 + data.byteLength + 4);
  out.writeUInt32BE(data.byteLength, 0);
  body.copy(out, 4);
  out.writeUInt32BE(crc32(body), 8 + data.byteLength);
  return out;
}

/** A valid PNG header claiming width × height 8-bit grey pixels, with a few hundred bytes of compressed zeros. */
export function claimedSizePng(width: number, height: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 0, 0, 0, 0], 8); // bit depth 8, greyscale, deflate, adaptive filtering, no interlace
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk("IHDR", ihdr), chunk("IDAT", deflateSync(Buffer.alloc(64 * 1024))), chunk("IEND", new Uint8Array())]);
}

/** `length` bytes of deterministic noise. */
export function noise(length: number, seed = 7): Buffer {
  let state = seed;
  return Buffer.from(Array.from({ length }, () => (state = (state * 1103515245 + 12345) & 0x7fffffff) % 256));
}

/** `GIF89a` followed by garbage: sniffed as a GIF, but no GIF header follows. */
export const gifGarbage = (): Buffer => Buffer.concat([Buffer.from("GIF89a", "latin1"), noise(2048)]);

/** An uncompressed noisy TIFF as libvips writes it: its directory (the header proper) after the pixels, at the end. */
export async function tiffWithTrailingHeader(width: number, height: number): Promise<Buffer> {
  return sharp(noise(width * height * 3), { raw: { width, height, channels: 3 } }).tiff({ compression: "none" }).toBuffer();
}
