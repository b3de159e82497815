/**
 * A lossless fast path from an image file to a one-page PDF that does not re-encode what it need not:
 * - a JPEG (baseline or progressive, 8-bit, grey, YCbCr/RGB or CMYK) goes in as a DCTDecode image, byte for byte up to
 *   its EOI marker (with `stripMetadata`, less its APPn and COM segments other than JFIF and Adobe);
 * - a non-interlaced PNG without transparency (grey, RGB or palette, any bit depth PDF allows) goes in as its own
 *   concatenated IDAT stream, a FlateDecode image whose DecodeParms name the PNG predictors;
 * - a PNG with an alpha channel (grey or RGB, 8 or 16 bits) has its filtered rows split into colour rows and alpha
 *   rows, compressed again, both with the PNG predictors, alpha as the SMask. No pixel is unfiltered: see splitAlpha.
 * An embedded ICC profile (JPEG APP2, PNG iCCP) becomes the image's ICCBased colour space. The page is the image's
 * size at 72 dpi (more dots per inch past 200 inches, as the ImageMagick path does).
 *
 * Anything it cannot take unchanged (EXIF orientation other than 1, an interlaced PNG, transparency by tRNS, 12-bit
 * JPEG, lossless or arithmetic coding, an ICC profile that `stripMetadata` would remove) is declined with a reason:
 * the caller converts it the usual way (services/image/pdf-engine.ts).
 *
 * Damaged data: no pixel is decoded here, so what is checked is the container, cheaply. A JPEG's marker structure
 * from SOI to EOI (every segment in bounds, only legal markers in the entropy-coded data, an EOI at the end: a
 * truncated file is declined; bytes after EOI are dropped). A PNG's chunk structure, every chunk's CRC-32 (so a bit
 * flipped anywhere in the compressed rows is caught) and its IEND; a PNG with alpha, whose rows are inflated anyway,
 * must also inflate to exactly the declared rows with valid filter types. Not checked: whether the JPEG's Huffman
 * data or an opaque PNG's deflate stream decode to the declared number of rows (a file crafted with valid checksums
 * over a bad stream); a PDF viewer then shows what it can, where the ImageMagick path would have refused the file
 * (IMAGE_FAIL_ON).
 */
import { promisify } from "node:util";
import { constants, crc32, deflate, inflate, inflateSync } from "node:zlib";
import { IMAGE_PAGE, placeImage } from "./page-layout.js";
import { writeDocument, type ImageObject } from "./pdf-document.js";

// The thread pool's zlib, so that a large image's rows never hold up the event loop.
const inflateAsync = promisify(inflate);
const deflateAsync = promisify(deflate);
/** Output per trip to the thread pool: zlib's 16 KiB default makes hundreds of trips for one large image. */
const ZLIB_CHUNK = 1 << 20;

export interface PassthroughPdf {
  pdf: Buffer;
  width: number;
  height: number;
  /** How the pixels went in: the JPEG as is, the PNG's IDAT as is, or colour and alpha split. */
  mode: PassthroughMode;
}

export type PassthroughMode = "dct" | "png-idat" | "png-split";

/** Why the fast path declined an image (a short, fixed set: it labels metrics). */
export type DeclineReason =
  | "format"
  | "orientation"
  | "jpeg-coding"
  | "interlaced"
  | "transparency"
  | "strip-icc"
  | "damaged";

export interface PassthroughOptions {
  /** Drop what the image carries besides its pixels and the colour information they need. */
  stripMetadata?: boolean;
  /** Told how long each step of splitting alpha took (B6 reports where the time goes). */
  onStep?: StepObserver;
}

/** The steps of splitting alpha off a PNG ("png-split"): inflating the rows, dividing them, compressing both parts. */
export type AlphaSplitStep = "inflate" | "split" | "compress";
export type StepObserver = (step: AlphaSplitStep, ms: number) => void;

/** An image the fast path can take, its structure checked (for "png-split", its rows still to be split). */
export interface PassthroughPlan {
  mode: PassthroughMode;
  width: number;
  height: number;
  /** The image XObject, or for "png-split" the PNG whose colour and alpha are to be split, and its profile. */
  image: ImageObject | { png: PngFacts; icc: Buffer | undefined };
}

/** An image ready to be written: its XObject complete. */
export interface PreparedPassthrough {
  mode: PassthroughMode;
  width: number;
  height: number;
  image: ImageObject;
}

export interface Declined {
  declined: DeclineReason;
}

/** The PDF, or undefined when the image cannot go in without re-encoding. */
export async function passthroughPdf(file: Uint8Array, options: PassthroughOptions = {}): Promise<PassthroughPdf | undefined> {
  const plan = inspectPassthrough(file, options);
  if ("declined" in plan) return undefined;
  const prepared = await preparePassthrough(plan, options.onStep);
  return "declined" in prepared ? undefined : writePassthroughPdf(prepared);
}

/** Reads the file's structure (no pixel is decoded) and says whether and how it can go in unchanged. */
export function inspectPassthrough(file: Uint8Array, options: PassthroughOptions = {}): PassthroughPlan | Declined {
  const bytes = Buffer.from(file.buffer, file.byteOffset, file.byteLength);
  const strip = options.stripMetadata ?? false;
  if (bytes.length > 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) {
    const image = jpegImage(bytes, strip);
    return "declined" in image ? image : { mode: "dct", width: image.width, height: image.height, image };
  }
  if (bytes.length > 8 && bytes.subarray(0, 8).equals(PNG_SIGNATURE)) return pngPlan(bytes, strip);
  return { declined: "format" };
}

/**
 * Completes an inspected image's XObject: for "png-split", separates colour and alpha (off the event loop); declined
 * as damaged when its rows do not inflate to what the header declares.
 */
export async function preparePassthrough(plan: PassthroughPlan, onStep?: StepObserver): Promise<PreparedPassthrough | Declined> {
  if (!("png" in plan.image)) return { ...plan, image: plan.image };
  const image = await splitAlpha(plan.image.png, plan.image.icc, onStep);
  return "declined" in image ? image : { ...plan, image };
}

/** The PDF of a prepared image. */
export function writePassthroughPdf(prepared: PreparedPassthrough): PassthroughPdf {
  const page = { image: prepared.image, placement: placeImage(prepared.width, prepared.height, IMAGE_PAGE) };
  return { pdf: writeDocument([page]), width: prepared.width, height: prepared.height, mode: prepared.mode };
}

// ---------------------------------------------------------------------------------------------------- JPEG

/** SOF markers of Huffman-coded JPEGs: baseline, extended sequential, progressive (not lossless, not arithmetic). */
const HUFFMAN_SOF = new Set([0xc0, 0xc1, 0xc2]);
const OTHER_SOF = new Set([0xc3, 0xc5, 0xc6, 0xc7, 0xc9, 0xca, 0xcb, 0xcd, 0xce, 0xcf]);
/** Segments that may follow the first scan: tables, restart interval, line count, further scans, APPn, COM. */
const BETWEEN_SCANS = new Set([0xc4, 0xcc, 0xdb, 0xdc, 0xdd, 0xda, 0xfe]);

const isApp = (marker: number) => marker >= 0xe0 && marker <= 0xef;

/**
 * Walks the JPEG from SOI to EOI. Collects what the PDF needs (frame, Adobe, ICC) and the segments that stripping
 * drops; declines a file whose structure is broken or truncated.
 */
function jpegImage(jpeg: Buffer, strip: boolean): ImageObject | Declined {
  const damaged: Declined = { declined: "damaged" };
  let offset = 2;
  let frame: { width: number; height: number; components: number } | undefined;
  let adobe = false;
  let orientation = 1;
  let scanned = false;
  let end: number | undefined;
  const icc: Array<{ seq: number; data: Buffer }> = [];
  /** [start, end) of segments dropped by stripping. */
  const dropped: Array<[number, number]> = [];
  while (end === undefined) {
    if (offset + 2 > jpeg.length || jpeg[offset] !== 0xff) return damaged;
    const marker = jpeg[offset + 1]!;
    if (marker === 0xff) {
      offset++; // Fill byte.
      continue;
    }
    if (marker === 0xd9) {
      end = offset + 2;
      break;
    }
    if (marker === 0x00 || (marker >= 0xd0 && marker <= 0xd8) || marker === 0x01) return damaged; // No RST, SOI or TEM here.
    if (offset + 4 > jpeg.length) return damaged;
    const length = jpeg.readUInt16BE(offset + 2);
    if (length < 2 || offset + 2 + length > jpeg.length) return damaged;
    const segment = jpeg.subarray(offset + 4, offset + 2 + length);
    if (scanned && !BETWEEN_SCANS.has(marker) && !isApp(marker)) return damaged;
    if (HUFFMAN_SOF.has(marker)) {
      if (frame || segment.length < 6) return damaged;
      if (segment[0] !== 8) return { declined: "jpeg-coding" }; // 12-bit samples: DCTDecode takes 8 only.
      frame = { height: segment.readUInt16BE(1), width: segment.readUInt16BE(3), components: segment[5]! };
    } else if (OTHER_SOF.has(marker)) {
      return { declined: "jpeg-coding" }; // Lossless or arithmetic coding: not for DCTDecode.
    } else if (marker === 0xee && segment.subarray(0, 5).toString("latin1") === "Adobe") {
      adobe = true;
    } else if (marker === 0xe1 && segment.subarray(0, 6).toString("latin1") === "Exif\0\0") {
      orientation = exifOrientation(segment.subarray(6)) ?? 1;
    } else if (marker === 0xe2 && segment.subarray(0, 12).toString("latin1") === "ICC_PROFILE\0") {
      icc.push({ seq: segment[12]!, data: segment.subarray(14) });
    }
    const jfif = marker === 0xe0 && segment.subarray(0, 5).toString("latin1") === "JFIF\0";
    if ((isApp(marker) && !jfif && marker !== 0xee) || marker === 0xfe) dropped.push([offset, offset + 2 + length]);
    offset += 2 + length;
    if (marker === 0xda) {
      if (!frame) return damaged;
      scanned = true;
      // Entropy-coded data: 0xFF is followed by 0x00 (a stuffed byte), a restart marker, or the next marker.
      for (;;) {
        const next = jpeg.indexOf(0xff, offset);
        if (next < 0 || next + 1 >= jpeg.length) return damaged; // Truncated: no EOI.
        const after = jpeg[next + 1]!;
        if (after === 0x00 || (after >= 0xd0 && after <= 0xd7)) {
          offset = next + 2;
          continue;
        }
        offset = next;
        break;
      }
    }
  }
  if (!scanned || !frame || frame.width === 0 || frame.height === 0 || ![1, 3, 4].includes(frame.components)) return damaged;
  // A turned or mirrored photo would need its pixels moved: that is the normal path's work.
  if (orientation !== 1) return { declined: "orientation" };
  const profile = Buffer.concat(icc.sort((a, b) => a.seq - b.seq).map((c) => c.data));
  // The profile is what the samples mean: stripping it would change the colours, which needs the normal path.
  if (strip && profile.length > 0) return { declined: "strip-icc" };
  const device = frame.components === 1 ? "/DeviceGray" : frame.components === 3 ? "/DeviceRGB" : "/DeviceCMYK";
  return {
    width: frame.width,
    height: frame.height,
    colorSpace: profile.length >= 128 ? { icc: profile, components: frame.components, alternate: device } : device,
    // Adobe's CMYK JPEGs store inverted samples.
    entries: `/BitsPerComponent 8 /Filter /DCTDecode${frame.components === 4 && adobe ? " /Decode [1 0 1 0 1 0 1 0]" : ""}`,
    data: strip && dropped.length > 0 ? without(jpeg.subarray(0, end), dropped) : [jpeg.subarray(0, end)],
  };
}

/** `bytes` less the given [start, end) ranges (in order, not overlapping), as the pieces that remain. */
function without(bytes: Buffer, ranges: Array<[number, number]>): Buffer[] {
  const kept: Buffer[] = [];
  let at = 0;
  for (const [start, stop] of ranges) {
    kept.push(bytes.subarray(at, start));
    at = stop;
  }
  kept.push(bytes.subarray(at));
  return kept;
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

interface PngFacts {
  header: { width: number; height: number; depth: number; colorType: number; interlace: number };
  idat: Buffer[];
  palette?: Buffer;
  transparency: boolean;
  icc?: Buffer;
}

/** Walks the chunks up to IEND, checking each one's bounds and CRC-32; undefined when the file is damaged. */
function readPng(png: Buffer): PngFacts | undefined {
  let offset = 8;
  let header: PngFacts["header"] | undefined;
  const facts: Omit<PngFacts, "header"> = { idat: [], transparency: false };
  for (;;) {
    if (offset + 12 > png.length) return undefined; // Truncated: no IEND.
    const length = png.readUInt32BE(offset);
    if (length > 0x7fffffff || offset + 12 + length > png.length) return undefined;
    const type = png.toString("latin1", offset + 4, offset + 8);
    const data = png.subarray(offset + 8, offset + 8 + length);
    if (crc32(png.subarray(offset + 4, offset + 8 + length)) !== png.readUInt32BE(offset + 8 + length)) return undefined;
    if (type === "IHDR") {
      if (length !== 13) return undefined;
      header = { width: data.readUInt32BE(0), height: data.readUInt32BE(4), depth: data[8]!, colorType: data[9]!, interlace: data[12]! };
    } else if (type === "PLTE") facts.palette = data;
    else if (type === "tRNS") facts.transparency = true;
    else if (type === "iCCP") {
      const nul = data.indexOf(0);
      try {
        facts.icc = inflateSync(data.subarray(nul + 2), { maxOutputLength: 16 * 1024 * 1024 });
      } catch {
        return undefined;
      }
    } else if (type === "IDAT") facts.idat.push(data);
    else if (type === "IEND") break;
    offset += 12 + length;
  }
  if (!header || facts.idat.length === 0 || header.width === 0 || header.height === 0) return undefined;
  return { header, ...facts };
}

function pngPlan(png: Buffer, strip: boolean): PassthroughPlan | Declined {
  const facts = readPng(png);
  if (!facts) return { declined: "damaged" };
  const { header, palette, icc } = facts;
  const { width, height, depth, colorType } = header;
  if (header.interlace !== 0) return { declined: "interlaced" };
  if (facts.transparency) return { declined: "transparency" };
  if (![0, 2, 3, 4, 6].includes(colorType) || (colorType === 3 && !palette)) return { declined: "damaged" };
  // A palette's colours are sRGB by definition here (the palette is written as DeviceRGB); any profile is unused.
  const profile = icc && icc.length >= 128 && colorType !== 3 ? icc : undefined;
  if (strip && profile) return { declined: "strip-icc" };
  if (colorType === 0 || colorType === 2 || colorType === 3) {
    return { mode: "png-idat", width, height, image: idatImage(facts, profile) };
  }
  // Grey or RGB with alpha: PDF has no interleaved alpha, so preparing splits it off.
  if (depth !== 8 && depth !== 16) return { declined: "damaged" };
  return { mode: "png-split", width, height, image: { png: facts, icc: profile } };
}

/** The entries of a Flate image whose rows carry PNG filter types, as IDAT data does. */
function pngPredicted(depth: number, colours: number, width: number): string {
  return `/BitsPerComponent ${depth} /Filter /FlateDecode /DecodeParms << /Predictor 15 /Colors ${colours} /BitsPerComponent ${depth} /Columns ${width} >>`;
}

/** The image XObject of a PNG without alpha: its IDAT as they are, with the PNG predictors. */
function idatImage({ header, palette, idat }: PngFacts, icc: Buffer | undefined): ImageObject {
  const { width, height, depth, colorType } = header;
  const colours = colorType === 2 ? 3 : 1;
  const device = colorType === 0 ? "/DeviceGray" : "/DeviceRGB";
  return {
    width,
    height,
    colorSpace:
      colorType === 3
        ? `[/Indexed /DeviceRGB ${palette!.length / 3 - 1} <${palette!.toString("hex")}>]`
        : icc
          ? { icc, components: colours, alternate: device }
          : device,
    entries: pngPredicted(depth, colours, width),
    data: idat,
  };
}

/** PNG filter types: None, Sub, Up, Average, Paeth. */
const LAST_FILTER_TYPE = 4;

/**
 * Splits a grey+alpha or RGBA PNG into a colour image and an alpha image (the SMask) without unfiltering a pixel.
 * Every PNG filter predicts a byte from the same byte of the pixel to its left and of the pixel above (Paeth also
 * from the one above-left), so a row's filtered bytes, sorted by channel, are exactly that row's filter applied to
 * the colour samples alone and to the alpha samples alone: each part keeps the row's filter type, which PDF's PNG
 * predictor (/Predictor 15, a type per row) undoes. What costs is inflating the rows and compressing the two parts
 * again; run-length deflate compresses filtered rows almost as well as the default, several times faster.
 */
async function splitAlpha(png: PngFacts, icc: Buffer | undefined, onStep: StepObserver = () => undefined): Promise<ImageObject | Declined> {
  const { width, height, depth, colorType } = png.header;
  const sampleBytes = depth / 8;
  const colours = colorType === 4 ? 1 : 3;
  const pixelBytes = (colours + 1) * sampleBytes;
  const colourBytes = colours * sampleBytes;
  const rowBytes = width * pixelBytes;
  const expected = height * (1 + rowBytes);
  let rows: Buffer;
  let since = performance.now();
  const stepDone = (step: AlphaSplitStep) => {
    const now = performance.now();
    onStep(step, now - since);
    since = now;
  };
  try {
    rows = await inflateAsync(Buffer.concat(png.idat), { maxOutputLength: expected + 1, chunkSize: ZLIB_CHUNK });
  } catch {
    return { declined: "damaged" }; // A bad stream, or more data than the header declares.
  }
  if (rows.length !== expected) return { declined: "damaged" };
  stepDone("inflate");
  const colour = Buffer.allocUnsafe(height * (1 + width * colourBytes));
  const alpha = Buffer.allocUnsafe(height * (1 + width * sampleBytes));
  let from = 0;
  let c = 0;
  let a = 0;
  for (let y = 0; y < height; y++) {
    const filter = rows[from++]!;
    if (filter > LAST_FILTER_TYPE) return { declined: "damaged" };
    colour[c++] = filter;
    alpha[a++] = filter;
    const end = from + rowBytes;
    if (colours === 3 && sampleBytes === 1) {
      // 8-bit RGBA, the common case, unrolled.
      for (; from < end; from += 4) {
        colour[c++] = rows[from]!;
        colour[c++] = rows[from + 1]!;
        colour[c++] = rows[from + 2]!;
        alpha[a++] = rows[from + 3]!;
      }
    } else {
      for (; from < end; ) {
        for (let k = 0; k < colourBytes; k++) colour[c++] = rows[from++]!;
        for (let k = 0; k < sampleBytes; k++) alpha[a++] = rows[from++]!;
      }
    }
  }
  stepDone("split");
  const compress = { strategy: constants.Z_RLE, chunkSize: ZLIB_CHUNK };
  const [colourData, alphaData] = await Promise.all([deflateAsync(colour, compress), deflateAsync(alpha, compress)]);
  stepDone("compress");
  const device = colours === 1 ? "/DeviceGray" : "/DeviceRGB";
  return {
    width,
    height,
    colorSpace: icc ? { icc, components: colours, alternate: device } : device,
    entries: pngPredicted(depth, colours, width),
    data: [colourData],
    smask: { data: [alphaData], entries: `/ColorSpace /DeviceGray ${pngPredicted(depth, 1, width)}` },
  };
}
