/**
 * The lossless fast-path PDF writer: JPEGs go in byte for byte, PNGs as their own IDAT stream (or split into colour
 * and an SMask when they carry alpha), every sample exact, the file valid for qpdf and poppler; what it cannot take
 * unchanged it declines.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import sharp from "sharp";
import { inspectPassthrough, passthroughPdf } from "../../services/image/passthrough-pdf.js";
import { decode, extractImages, gradientPixels, listImages, meanAbsoluteError, pageSize, qpdfCheck, renderPage, splitAlpha, streamData } from "./support.js";

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
  const smask = Number(/\/SMask (\d+) 0 R/.exec((await showObject(pdf, image.objectId, false)).toString("latin1"))?.[1]);
  expect((await streamData(pdf, smask)).equals(alpha)).toBe(true);

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
