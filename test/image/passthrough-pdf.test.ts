/**
 * The lossless fast-path PDF writer: JPEGs go in byte for byte, PNGs as their own IDAT stream (or split into colour
 * and an SMask when they carry alpha), every sample exact, the file valid for qpdf and poppler; what it cannot take
 * unchanged it declines.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { endianness, tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { crc32, deflateSync } from "node:zlib";
import sharp from "sharp";
import { inspectPassthrough, passthroughPdf, preparePassthrough, type PassthroughPlan } from "../../services/image/passthrough-pdf.js";
import { decode, extractImages, gradientPixels, listImages, meanAbsoluteError, noise, pageSize, qpdfCheck, renderPage, splitAlpha, streamData, uncompressed } from "./support.js";

const W = 97;
const H = 61;
const rgb = gradientPixels(W, H, 3);
const rgba = gradientPixels(W, H, 4);

const run = promisify(execFile);

/** `qpdf --show-object` with `--raw-stream-data` (the bytes as stored) or the dictionary alone. */
async function showObject(pdf: Uint8Array, objectId: number, rawStream: boolean): Promise<Buffer> {
  const dir = mkdtempSync(join(tmpdir(), "mcsv-pt-"));
  try {
    writeFileSync(join(dir, "in.pdf"), pdf);
    const args = [`--show-object=${objectId}`, ...(rawStream ? ["--raw-stream-data"] : []), join(dir, "in.pdf")];
    return (await run("qpdf", args, { encoding: "buffer", maxBuffer: 64 * 1024 * 1024 })).stdout;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The object number of an image's soft mask (pdfimages lists a mask under its image's number). */
async function smaskOf(pdf: Uint8Array, imageId: number): Promise<number> {
  const ref = /\/SMask (\d+) 0 R/.exec((await showObject(pdf, imageId, false)).toString("latin1"))?.[1];
  if (!ref) throw new Error(`image ${imageId} has no SMask`);
  return Number(ref);
}

async function pdfOf(file: Buffer) {
  const result = await passthroughPdf(file);
  if (!result) throw new Error("declined");
  await qpdfCheck(result.pdf);
  const [image, ...rest] = await listImages(result.pdf);
  return { ...result, image: image!, rest };
}

test("a JPEG goes in byte for byte (baseline, progressive, 4:2:0 and 4:4:4, grey, Adobe CMYK), on a page of its size", async () => {
  const raw = sharp(rgb, { raw: { width: W, height: H, channels: 3 } });
  const cases = [
    { jpeg: await raw.clone().jpeg({ quality: 80 }).toBuffer(), color: "rgb" },
    { jpeg: await raw.clone().jpeg({ quality: 92, chromaSubsampling: "4:4:4", progressive: true }).toBuffer(), color: "rgb" },
    { jpeg: await raw.clone().toColourspace("b-w").jpeg().toBuffer(), color: "gray" },
    { jpeg: await raw.clone().toColourspace("cmyk").jpeg().toBuffer(), color: "cmyk" },
  ];
  for (const { jpeg, color } of cases) {
    const { pdf, mode, image } = await pdfOf(jpeg);
    expect(mode).toBe("dct");
    expect([image.enc, image.color, image.width, image.height]).toEqual(["jpeg", color, W, H]);
    expect((await showObject(pdf, image.objectId, true)).equals(jpeg)).toBe(true);
    expect(await pageSize(pdf)).toEqual({ width: W, height: H });
    if (color === "cmyk") {
      // Adobe's inverted CMYK samples come out the right way round (inverted they would be off by ~115 on average;
      // what remains is poppler's plain CMYK conversion against libvips' colour-managed one).
      const page = await decode(await renderPage(pdf));
      expect(meanAbsoluteError(page.data, await sharp(jpeg).toColourspace("srgb").raw().toBuffer())).toBeLessThan(25);
    }
  }
});

test("a PNG without alpha goes in as its own IDAT stream with its predictors: every sample exact", async () => {
  const cases = [
    { png: await sharp(rgb, { raw: { width: W, height: H, channels: 3 } }).png().toBuffer(), channels: 3 },
    { png: await sharp(rgb, { raw: { width: W, height: H, channels: 3 } }).toColourspace("b-w").png().toBuffer(), channels: 1 },
    { png: await sharp(rgb, { raw: { width: W, height: H, channels: 3 } }).png({ palette: true, colours: 16 }).toBuffer(), channels: 3 },
  ];
  for (const { png, channels } of cases) {
    const { pdf, mode, image } = await pdfOf(png);
    expect(mode).toBe("png-idat");
    // sharp hands out grey as RGB unless asked for the one channel.
    const expected = await (channels === 1 ? sharp(png).extractChannel(0) : sharp(png)).raw().toBuffer({ resolveWithObject: true });
    expect(expected.info.channels).toBe(channels);
    if (image.color === "index") {
      // A palette image stays indexed (its stream holds indices); poppler's colours must be the original's.
      const [extracted] = await extractImages(pdf);
      expect((await decode(extracted!)).data.equals(expected.data)).toBe(true);
      continue;
    }
    expect((await streamData(pdf, image.objectId)).equals(expected.data)).toBe(true);
  }
});

test("a 16-bit grey PNG keeps its 16 bits", async () => {
  const png = await sharp(rgb, { raw: { width: W, height: H, channels: 3 } }).greyscale().toColourspace("grey16").png().toBuffer();
  const { mode, image } = await pdfOf(png);
  expect(mode).toBe("png-idat");
  expect([image.color, image.bpc]).toEqual(["gray", 16]);
});

test("an RGBA PNG becomes colour plus an SMask, both exact", async () => {
  const png = await sharp(rgba, { raw: { width: W, height: H, channels: 4 } }).png().toBuffer();
  const { pdf, mode, image, rest } = await pdfOf(png);
  expect(mode).toBe("png-split");
  expect(rest.map((r) => r.type)).toEqual(["smask"]);
  const { rgb: colour, alpha } = splitAlpha(rgba);
  expect((await streamData(pdf, image.objectId)).equals(colour)).toBe(true);
  expect((await streamData(pdf, await smaskOf(pdf, image.objectId))).equals(alpha)).toBe(true);

  // Grey with alpha too.
  const greyAlpha = Buffer.alloc(W * H * 2);
  for (let i = 0; i < W * H; i++) [greyAlpha[2 * i], greyAlpha[2 * i + 1]] = [rgb[3 * i]!, rgba[4 * i + 3]!];
  const greyPng = await sharp(greyAlpha, { raw: { width: W, height: H, channels: 2 } }).toColourspace("b-w").png().toBuffer();
  expect((await sharp(greyPng).metadata()).channels).toBe(2);
  const grey = await pdfOf(greyPng);
  expect([grey.mode, grey.image.color, grey.rest.map((r) => r.type)]).toEqual(["png-split", "gray", ["smask"]]);
  const greyPixels = Buffer.from(greyAlpha.filter((_, i) => i % 2 === 0));
  expect((await streamData(grey.pdf, grey.image.objectId)).equals(greyPixels)).toBe(true);
});

/** PNG's five filters, on one row's bytes with `bpp` bytes per pixel (prior: the row above, zeros for the first). */
function filterRow(type: number, row: Buffer, prior: Buffer, bpp: number): Buffer {
  const out = Buffer.alloc(row.length);
  for (let i = 0; i < row.length; i++) {
    const a = i >= bpp ? row[i - bpp]! : 0;
    const b = prior[i]!;
    const c = i >= bpp ? prior[i - bpp]! : 0;
    const p = a + b - c;
    const [pa, pb, pc] = [Math.abs(p - a), Math.abs(p - b), Math.abs(p - c)];
    const paeth = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
    const predicted = [0, a, b, (a + b) >> 1, paeth][type]!;
    out[i] = (row[i]! - predicted) & 0xff;
  }
  return out;
}

function chunk(type: string, data: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(type, "latin1"), data]);
  const framed = Buffer.alloc(body.length + 8);
  framed.writeUInt32BE(data.length, 0);
  body.copy(framed, 4);
  framed.writeUInt32BE(crc32(body), body.length + 4);
  return framed;
}

/**
 * A PNG written here, not by libvips, so that its rows use every filter type in turn (row y: type y % 5); `rows`
 * replaces the inflated row data, to build a file whose chunks are sound but whose rows are not.
 */
function handMadePng(samples: Buffer, width: number, height: number, colorType: 4 | 6, depth: 8 | 16, extra: { icc?: Buffer; rows?: Buffer } = {}): Buffer {
  const bpp = ((colorType === 6 ? 4 : 2) * depth) / 8;
  const stride = width * bpp;
  const rows: Buffer[] = [];
  for (let y = 0; y < height; y++) {
    const row = samples.subarray(y * stride, (y + 1) * stride);
    const prior = y > 0 ? samples.subarray((y - 1) * stride, y * stride) : Buffer.alloc(stride);
    rows.push(Buffer.from([y % 5]), filterRow(y % 5, row, prior, bpp));
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([depth, colorType, 0, 0, 0], 8);
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr),
    ...(extra.icc ? [chunk("iCCP", Buffer.concat([Buffer.from("icc\0\0", "latin1"), deflateSync(extra.icc)]))] : []),
    chunk("IDAT", deflateSync(extra.rows ?? Buffer.concat(rows))),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

/** The given channels of interleaved samples. */
function keepChannels(samples: Buffer, channels: number, sampleBytes: number, keep: number[]): Buffer {
  const out: number[] = [];
  for (let i = 0; i < samples.length; i += channels * sampleBytes) {
    for (const c of keep) out.push(...samples.subarray(i + c * sampleBytes, i + (c + 1) * sampleBytes));
  }
  return Buffer.from(out);
}

/** Interleaved samples split into the colour samples and the alpha samples. */
function channelsApart(samples: Buffer, channels: number, sampleBytes: number): { colour: Buffer; alpha: Buffer } {
  const pixel = channels * sampleBytes;
  const colour: number[] = [];
  const alpha: number[] = [];
  for (let i = 0; i < samples.length; i += pixel) {
    colour.push(...samples.subarray(i, i + pixel - sampleBytes));
    alpha.push(...samples.subarray(i + pixel - sampleBytes, i + pixel));
  }
  return { colour: Buffer.from(colour), alpha: Buffer.from(alpha) };
}

test("alpha is split from the filtered rows, every filter type, grey and RGB, 8 and 16 bits: each sample exact", async () => {
  for (const [colorType, depth] of [[6, 8], [6, 16], [4, 8], [4, 16]] as const) {
    const channels = colorType === 6 ? 4 : 2;
    const samples = Buffer.alloc(W * H * channels * (depth / 8));
    const random = noise(colorType * 100 + depth);
    // Gradients with noise in every byte (the low byte of a 16-bit sample too), so that every filter has work.
    for (let i = 0; i < samples.length; i++) samples[i] = (rgba[i % rgba.length]! + Math.floor(random() * 9)) & 0xff;
    const png = handMadePng(samples, W, H, colorType, depth);
    // libvips reads the hand-made file as the same samples (the encoder above is right). It hands grey as RGB, and
    // 16 bits in the machine's byte order where PNG stores them big-endian.
    const decoded = await sharp(png).toColourspace(depth === 16 ? "rgb16" : "srgb").raw({ depth: depth === 16 ? "ushort" : "uchar" }).toBuffer();
    const bigEndian = depth === 16 && endianness() === "LE" ? Buffer.from(decoded).swap16() : decoded;
    const read = channels === 4 ? bigEndian : keepChannels(bigEndian, 4, depth / 8, [0, 3]);
    expect(read.equals(samples)).toBe(true);

    const { pdf, mode, image, rest } = await pdfOf(png);
    expect([mode, image.color, image.bpc, rest.map((r) => [r.type, r.bpc])]).toEqual(["png-split", colorType === 6 ? "rgb" : "gray", depth, [["smask", depth]]]);
    const { colour, alpha } = channelsApart(samples, channels, depth / 8);
    expect((await streamData(pdf, image.objectId)).equals(colour)).toBe(true);
    expect((await streamData(pdf, await smaskOf(pdf, image.objectId))).equals(alpha)).toBe(true);
  }
});

test("the alpha split reports its steps; an opaque image has none", async () => {
  const steps: string[] = [];
  const onStep = (step: string, ms: number) => {
    expect(ms).toBeGreaterThanOrEqual(0);
    steps.push(step);
  };
  await passthroughPdf(handMadePng(rgba, W, H, 6, 8), { onStep });
  expect(steps).toEqual(["inflate", "split", "compress"]);
  steps.length = 0;
  await passthroughPdf(await sharp(rgb, { raw: { width: W, height: H, channels: 3 } }).png().toBuffer(), { onStep });
  expect(steps).toEqual([]);
});

test("an RGBA PNG's ICC profile stays the colour's profile", async () => {
  const profile = (await sharp(await sharp(rgba, { raw: { width: W, height: H, channels: 4 } }).withIccProfile("p3").png().toBuffer()).metadata()).icc!;
  const png = handMadePng(rgba, W, H, 6, 8, { icc: profile });
  const { pdf, mode, image } = await pdfOf(png);
  expect([mode, image.color]).toEqual(["png-split", "icc"]);
  expect((await uncompressed(pdf)).includes("/ICCBased")).toBe(true);
  expect((await streamData(pdf, image.objectId)).equals(splitAlpha(rgba).rgb)).toBe(true);
});

test("a PNG with alpha whose sound chunks hold unsound rows is declined as damaged", async () => {
  const stride = 1 + W * 4;
  const good = Buffer.concat(Array.from({ length: H }, () => Buffer.concat([Buffer.from([0]), Buffer.alloc(W * 4, 7)])));
  const short = handMadePng(rgba, W, H, 6, 8, { rows: good.subarray(0, stride * (H - 1)) });
  const long = handMadePng(rgba, W, H, 6, 8, { rows: Buffer.concat([good, Buffer.alloc(stride)]) });
  const badFilter = Buffer.from(good);
  badFilter[stride * 3] = 9;
  const cases = [short, long, handMadePng(rgba, W, H, 6, 8, { rows: badFilter })];
  for (const png of cases) {
    const plan = inspectPassthrough(png);
    expect(plan).toMatchObject({ mode: "png-split" });
    expect(await preparePassthrough(plan as PassthroughPlan)).toEqual({ declined: "damaged" });
    expect(await passthroughPdf(png)).toBeUndefined();
  }
  // The same rows, sound, are taken.
  expect(await passthroughPdf(handMadePng(rgba, W, H, 6, 8, { rows: good }))).toMatchObject({ mode: "png-split" });
});

test("declines what it cannot take unchanged: a turned JPEG, an interlaced PNG, tRNS transparency, other formats", async () => {
  const raw = () => sharp(rgb, { raw: { width: W, height: H, channels: 3 } });
  expect(await passthroughPdf(await raw().jpeg().withMetadata({ orientation: 6 }).toBuffer())).toBeUndefined();
  expect(await passthroughPdf(await raw().png({ progressive: true }).toBuffer())).toBeUndefined();
  expect(await passthroughPdf(await raw().png({ palette: true, colours: 4 }).ensureAlpha(0.5).toBuffer())).toBeUndefined();
  expect(await passthroughPdf(await raw().webp().toBuffer())).toBeUndefined();
  expect(await passthroughPdf(Buffer.from("not an image"))).toBeUndefined();
});

test("a page never exceeds 200 inches: a very long image gets more dots per inch, its pixels untouched", async () => {
  const png = await sharp({ create: { width: 20_000, height: 4, channels: 3, background: "#336699" } }).png().toBuffer();
  const { pdf } = await pdfOf(png);
  const size = await pageSize(pdf);
  expect(size.width).toBeLessThanOrEqual(14_400);
  expect(size.width / size.height).toBeCloseTo(20_000 / 4, 0);
});

/** A JPEG segment: marker, big-endian length, payload. */
const segment = (marker: number, payload: string | Buffer) => {
  const body = typeof payload === "string" ? Buffer.from(payload, "latin1") : payload;
  const head = Buffer.from([0xff, marker, 0, 0]);
  head.writeUInt16BE(body.length + 2, 2);
  return Buffer.concat([head, body]);
};

test("stripMetadata drops a JPEG's APPn and COM segments but JFIF and Adobe; an ICC profile it would drop is declined", async () => {
  const cmyk = await sharp(rgb, { raw: { width: W, height: H, channels: 3 } }).toColourspace("cmyk").jpeg().toBuffer();
  expect(cmyk.includes("Adobe")).toBe(true);
  const jfif = segment(0xe0, Buffer.from("JFIF\0\x01\x02\0\0\x01\0\x01\0\0", "latin1"));
  const exif = segment(0xe1, "Exif\0\0MM\0*\0\0\0\x08\0\0mcsv-exif");
  const comment = segment(0xfe, "mcsv-comment");
  const xmp = segment(0xe1, "http://ns.adobe.com/xap/1.0/\0mcsv-xmp");
  const tagged = Buffer.concat([cmyk.subarray(0, 2), jfif, exif, comment, xmp, cmyk.subarray(2)]);
  // Bytes after EOI (an appended archive, say) are never embedded.
  const trailed = Buffer.concat([tagged, Buffer.from("PK\x03\x04 trailing", "latin1")]);

  const kept = await passthroughPdf(trailed);
  const [image] = await listImages(kept!.pdf);
  expect((await showObject(kept!.pdf, image!.objectId, true)).equals(tagged)).toBe(true);

  const stripped = await passthroughPdf(trailed, { stripMetadata: true });
  await qpdfCheck(stripped!.pdf);
  const stream = await showObject(stripped!.pdf, (await listImages(stripped!.pdf))[0]!.objectId, true);
  expect(stream.equals(Buffer.concat([cmyk.subarray(0, 2), jfif, cmyk.subarray(2)]))).toBe(true);
  expect([stream.includes("JFIF"), stream.includes("Adobe"), stream.includes("mcsv-")]).toEqual([true, true, false]);

  const profiled = await sharp(rgb, { raw: { width: W, height: H, channels: 3 } }).withIccProfile("p3").jpeg().toBuffer();
  expect(inspectPassthrough(profiled)).toMatchObject({ mode: "dct" });
  expect(inspectPassthrough(profiled, { stripMetadata: true })).toEqual({ declined: "strip-icc" });
  const profiledPng = await sharp(rgb, { raw: { width: W, height: H, channels: 3 } }).withIccProfile("p3").png().toBuffer();
  expect(inspectPassthrough(profiledPng, { stripMetadata: true })).toEqual({ declined: "strip-icc" });
});

test("damaged containers are declined: a PNG chunk failing its CRC, a PNG without IEND, a truncated or malformed JPEG", async () => {
  const raw = () => sharp(rgb, { raw: { width: W, height: H, channels: 3 } });
  const png = await raw().png().toBuffer();
  expect(inspectPassthrough(png)).toMatchObject({ mode: "png-idat" });
  const flipped = Buffer.from(png);
  flipped[flipped.indexOf("IDAT") + 40]! ^= 0x01;
  expect(inspectPassthrough(flipped)).toEqual({ declined: "damaged" });
  expect(inspectPassthrough(png.subarray(0, png.length - 12))).toEqual({ declined: "damaged" });

  const jpeg = await raw().jpeg({ progressive: true }).toBuffer();
  expect(inspectPassthrough(jpeg)).toMatchObject({ mode: "dct" });
  expect(inspectPassthrough(jpeg.subarray(0, jpeg.length - 2))).toEqual({ declined: "damaged" }); // no EOI
  expect(inspectPassthrough(jpeg.subarray(0, Math.floor(jpeg.length / 2)))).toEqual({ declined: "damaged" });
  const sos = jpeg.indexOf(Buffer.from([0xff, 0xda]));
  const badMarker = Buffer.from(jpeg);
  badMarker.set([0xff, 0xd8], sos + 40); // an SOI inside the entropy-coded data
  expect(inspectPassthrough(badMarker)).toEqual({ declined: "damaged" });
  const badLength = Buffer.from(jpeg);
  badLength.writeUInt16BE(0xfff0, 4); // the first segment claims to run past the end of the file
  expect(inspectPassthrough(badLength)).toEqual({ declined: "damaged" });
});
