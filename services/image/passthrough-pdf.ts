/**
 * A lossless fast path from an image file to a one-page PDF that does not re-encode what it need not:
 * - a JPEG (baseline or progressive, 8-bit, grey, YCbCr/RGB or CMYK) goes in byte for byte as a DCTDecode image;
 * - a non-interlaced PNG without transparency (grey, RGB or palette, any bit depth PDF allows) goes in as its own
 *   concatenated IDAT stream, a FlateDecode image whose DecodeParms name the PNG predictors;
 * - an 8-bit PNG with an alpha channel is split by libvips into a colour PNG and an alpha PNG, both exact, whose IDAT
 *   streams go in the same way, alpha as the SMask.
 * An embedded ICC profile (JPEG APP2, PNG iCCP) becomes the image's ICCBased colour space. The page is the image's
 * size at 72 dpi (more dots per inch past 200 inches, as the ImageMagick path does).
 *
 * Anything it cannot take unchanged (EXIF orientation other than 1, an interlaced PNG, transparency by tRNS, 16-bit
 * alpha, 12-bit JPEG, arithmetic coding) gets `undefined`: the caller converts it the usual way. Not wired to an RPC
 * option yet; bench/b6-passthrough.ts measures it against ImageMagick and img2pdf.
 */
import { inflateSync } from "node:zlib";
import sharp from "sharp";
import { pageDensity } from "./imagemagick.js";

export interface PassthroughPdf {
  pdf: Buffer;
  width: number;
  height: number;
  /** How the pixels went in: the JPEG as is, the PNG's IDAT as is, or colour and alpha split. */
  mode: "dct" | "png-idat" | "png-split";
}

interface ImageObject {
  width: number;
  height: number;
  /** The image XObject's dictionary entries other than Type, Subtype, Width, Height, Length and ColorSpace. */
  entries: string;
  colorSpace: string | { icc: Buffer; components: number; alternate: string };
  data: Buffer;
  smask?: { data: Buffer; entries: string };
}

/** The PDF, or undefined when the image cannot go in without re-encoding. */
export async function passthroughPdf(file: Uint8Array): Promise<PassthroughPdf | undefined> {
  const bytes = Buffer.from(file.buffer, file.byteOffset, file.byteLength);
  if (bytes.length > 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) {
    const image = jpegImage(bytes);
    return image && { pdf: writePdf(image), width: image.width, height: image.height, mode: "dct" };
  }
  if (bytes.length > 8 && bytes.subarray(0, 8).equals(PNG_SIGNATURE)) {
    const image = await pngImage(bytes);
    return image && { pdf: writePdf(image.object), width: image.object.width, height: image.object.height, mode: image.mode };
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------------- JPEG

/** SOF markers of Huffman-coded JPEGs: baseline, extended sequential, progressive (not lossless, not arithmetic). */
const HUFFMAN_SOF = new Set([0xc0, 0xc1, 0xc2]);
const OTHER_SOF = new Set([0xc3, 0xc5, 0xc6, 0xc7, 0xc9, 0xca, 0xcb, 0xcd, 0xce, 0xcf]);

function jpegImage(jpeg: Buffer): ImageObject | undefined {
  let offset = 2;
  let frame: { width: number; height: number; components: number } | undefined;
  let adobe = false;
  let orientation = 1;
  const icc: Array<{ seq: number; data: Buffer }> = [];
  while (offset + 4 <= jpeg.length) {
    if (jpeg[offset] !== 0xff) return undefined;
    const marker = jpeg[offset + 1]!;
    if (marker === 0xff) {
      offset++;
      continue;
    }
    if (marker === 0xd9 || marker === 0xda) break; // EOI, or SOS: the header is over.
    if (marker >= 0xd0 && marker <= 0xd7) {
      offset += 2;
      continue;
    }
    const length = jpeg.readUInt16BE(offset + 2);
    const segment = jpeg.subarray(offset + 4, offset + 2 + length);
    if (HUFFMAN_SOF.has(marker)) {
      if (segment[0] !== 8) return undefined; // 12-bit samples: DCTDecode takes 8 only.
      frame = { height: segment.readUInt16BE(1), width: segment.readUInt16BE(3), components: segment[5]! };
    } else if (OTHER_SOF.has(marker)) {
      return undefined; // Lossless or arithmetic coding: not for DCTDecode.
    } else if (marker === 0xee && segment.subarray(0, 5).toString("latin1") === "Adobe") {
      adobe = true;
    } else if (marker === 0xe1 && segment.subarray(0, 6).toString("latin1") === "Exif\0\0") {
      orientation = exifOrientation(segment.subarray(6)) ?? 1;
    } else if (marker === 0xe2 && segment.subarray(0, 12).toString("latin1") === "ICC_PROFILE\0") {
      icc.push({ seq: segment[12]!, data: segment.subarray(14) });
    }
    offset += 2 + length;
  }
  if (!frame || frame.width === 0 || frame.height === 0 || ![1, 3, 4].includes(frame.components)) return undefined;
  // A turned or mirrored photo would need its pixels moved: that is the normal path's work.
  if (orientation !== 1) return undefined;
  const device = frame.components === 1 ? "/DeviceGray" : frame.components === 3 ? "/DeviceRGB" : "/DeviceCMYK";
  const profile = Buffer.concat(icc.sort((a, b) => a.seq - b.seq).map((c) => c.data));
  return {
    width: frame.width,
    height: frame.height,
    colorSpace: profile.length >= 128 ? { icc: profile, components: frame.components, alternate: device } : device,
    // Adobe's CMYK JPEGs store inverted samples.
    entries: `/BitsPerComponent 8 /Filter /DCTDecode${frame.components === 4 && adobe ? " /Decode [1 0 1 0 1 0 1 0]" : ""}`,
    data: jpeg,
  };
}

/** The Orientation tag (0x0112) of an EXIF TIFF block, if present. */
function exifOrientation(tiff: Buffer): number | undefined {
  if (tiff.length < 8) return undefined;
  const little = tiff.toString("latin1", 0, 2) === "II";
  const u16 = (at: number) => (little ? tiff.readUInt16LE(at) : tiff.readUInt16BE(at));
  const u32 = (at: number) => (little ? tiff.readUInt32LE(at) : tiff.readUInt32BE(at));
  const ifd = u32(4);
  if (ifd + 2 > tiff.length) return undefined;
  const entries = u16(ifd);
  for (let i = 0; i < entries; i++) {
    const at = ifd + 2 + i * 12;
    if (at + 12 > tiff.length) return undefined;
    if (u16(at) === 0x0112) return u16(at + 8);
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------------- PNG

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

async function pngImage(png: Buffer): Promise<{ object: ImageObject; mode: "png-idat" | "png-split" } | undefined> {
  let offset = 8;
  let header: { width: number; height: number; depth: number; colorType: number; interlace: number } | undefined;
  const idat: Buffer[] = [];
  let palette: Buffer | undefined;
  let transparency = false;
  let icc: Buffer | undefined;
  while (offset + 12 <= png.length) {
    const length = png.readUInt32BE(offset);
    const type = png.toString("latin1", offset + 4, offset + 8);
    const data = png.subarray(offset + 8, offset + 8 + length);
    if (type === "IHDR") {
      header = { width: data.readUInt32BE(0), height: data.readUInt32BE(4), depth: data[8]!, colorType: data[9]!, interlace: data[12]! };
    } else if (type === "PLTE") palette = data;
    else if (type === "tRNS") transparency = true;
    else if (type === "iCCP") {
      const nul = data.indexOf(0);
      try {
        icc = inflateSync(data.subarray(nul + 2));
      } catch {
        return undefined;
      }
    } else if (type === "IDAT") idat.push(data);
    else if (type === "IEND") break;
    offset += 12 + length;
  }
  if (!header || idat.length === 0 || header.width === 0 || header.height === 0) return undefined;
  const { width, height, depth, colorType } = header;
  const colours = colorType === 0 || colorType === 4 ? 1 : colorType === 3 ? 1 : 3;
  const device = colours === 1 && colorType !== 3 ? "/DeviceGray" : "/DeviceRGB";
  const colorSpace = (base: string): ImageObject["colorSpace"] => (icc && icc.length >= 128 && colorType !== 3 ? { icc, components: colours, alternate: base } : base);

  if (header.interlace !== 0 || transparency) return undefined;
  if (colorType === 0 || colorType === 2 || colorType === 3) {
    if (colorType === 3 && !palette) return undefined;
    const space =
      colorType === 3 ? `[/Indexed /DeviceRGB ${palette!.length / 3 - 1} <${palette!.toString("hex")}>]` : device;
    return {
      mode: "png-idat",
      object: {
        width,
        height,
        colorSpace: colorType === 3 ? space : colorSpace(space),
        entries: `/BitsPerComponent ${depth} /Filter /FlateDecode /DecodeParms << /Predictor 15 /Colors ${colours} /BitsPerComponent ${depth} /Columns ${width} >>`,
        data: Buffer.concat(idat),
      },
    };
  }
  // Grey or RGB with alpha: PDF has no interleaved alpha, so libvips splits colour and alpha into two PNGs (exact
  // samples, its own adaptive filtering and zlib), whose IDAT streams go in as they are, alpha as the SMask. An ICC
  // profile is declined here: libvips would convert the samples to sRGB on the way.
  if ((colorType !== 4 && colorType !== 6) || depth !== 8 || icc) return undefined;
  const encode = { compressionLevel: 6, adaptiveFiltering: true, palette: false } as const;
  const [colourPng, alphaPng] = await Promise.all([
    (colorType === 4 ? sharp(png).extractChannel(0) : sharp(png).removeAlpha()).png(encode).toBuffer(),
    sharp(png).extractChannel(colorType === 4 ? 1 : 3).png(encode).toBuffer(),
  ]);
  const colour = await pngImage(colourPng);
  const alpha = await pngImage(alphaPng);
  if (colour?.mode !== "png-idat" || alpha?.mode !== "png-idat" || typeof alpha.object.colorSpace !== "string") return undefined;
  return {
    mode: "png-split",
    object: {
      ...colour.object,
      smask: { data: alpha.object.data, entries: `/ColorSpace ${alpha.object.colorSpace} ${alpha.object.entries}` },
    },
  };
}

// ---------------------------------------------------------------------------------------------------- PDF

/** A one-page PDF 1.7 with the image filling the page. */
function writePdf(image: ImageObject): Buffer {
  const dpi = pageDensity(image.width, image.height);
  const pageWidth = round((image.width * 72) / dpi);
  const pageHeight = round((image.height * 72) / dpi);
  const objects: Buffer[] = [];
  const add = (body: string | Buffer[]): void => {
    objects.push(Array.isArray(body) ? Buffer.concat(body) : Buffer.from(body, "latin1"));
  };
  const stream = (dictionary: string, data: Buffer): Buffer[] => [
    Buffer.from(`<< ${dictionary} /Length ${data.length} >>\nstream\n`, "latin1"),
    data,
    Buffer.from("\nendstream", "latin1"),
  ];

  // Numbers are fixed up front: 1 catalog, 2 pages, 3 page, 4 contents, 5 image, then ICC profile and SMask.
  const next = { value: 6 };
  const iccRef = typeof image.colorSpace === "string" ? undefined : next.value++;
  const smaskRef = image.smask ? next.value++ : undefined;
  const colorSpace = typeof image.colorSpace === "string" ? image.colorSpace : `[/ICCBased ${iccRef} 0 R]`;
  const content = Buffer.from(`q ${pageWidth} 0 0 ${pageHeight} 0 0 cm /Im0 Do Q`, "latin1");

  add("<< /Type /Catalog /Pages 2 0 R >>");
  add("<< /Type /Pages /Kids [3 0 R] /Count 1 >>");
  add(`<< /Type /Page /Parent 2 0 R /MediaBox [0 0 ${pageWidth} ${pageHeight}] /Resources << /XObject << /Im0 5 0 R >> >> /Contents 4 0 R >>`);
  add(stream("", content));
  add(stream(`/Type /XObject /Subtype /Image /Width ${image.width} /Height ${image.height} /ColorSpace ${colorSpace} ${image.entries}${smaskRef ? ` /SMask ${smaskRef} 0 R` : ""}`, image.data));
  if (typeof image.colorSpace !== "string") {
    add(stream(`/N ${image.colorSpace.components} /Alternate ${image.colorSpace.alternate}`, image.colorSpace.icc));
  }
  if (image.smask) add(stream(`/Type /XObject /Subtype /Image /Width ${image.width} /Height ${image.height} ${image.smask.entries}`, image.smask.data));

  const parts: Buffer[] = [Buffer.from("%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "latin1")];
  let length = parts[0]!.length;
  const offsets: number[] = [];
  objects.forEach((body, i) => {
    offsets.push(length);
    const head = Buffer.from(`${i + 1} 0 obj\n`, "latin1");
    const tail = Buffer.from("\nendobj\n", "latin1");
    parts.push(head, body, tail);
    length += head.length + body.length + tail.length;
  });
  const xref = [`xref\n0 ${objects.length + 1}\n0000000000 65535 f \n`, ...offsets.map((o) => `${String(o).padStart(10, "0")} 00000 n \n`)].join("");
  parts.push(Buffer.from(`${xref}trailer\n<< /Size ${objects.length + 1} /Root 1 0 R >>\nstartxref\n${length}\n%%EOF\n`, "latin1"));
  return Buffer.concat(parts);
}

function round(points: number): number {
  return Math.round(points * 1000) / 1000;
}
