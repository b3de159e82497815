/**
 * The PDF engine through the image service (real s3rver, real ImageMagick, poppler and qpdf to look inside):
 * PASSTHROUGH writes exactly the input's pixels for every image it can take, and anything that needs a change falls
 * back to ImageMagick and still converts correctly; PDF_ENGINE_UNSPECIFIED follows IMAGE_PDF_ENGINE.
 *
 * How identity is checked: `pdfimages -png` (poppler decodes the PDF's stream, colour and soft mask separately) against
 * sharp's decoding of the original, wherever poppler writes the samples as they are. Two cases it cannot show, so
 * there the decoded stream itself (`qpdf --filtered-stream-data`) is compared: 16-bit samples (pdfimages -png
 * writes 8) and an ICC profile (pdfimages -png converts through it). A CMYK JPEG is extracted as is (`pdfimages -all`).
 */
import { execFile } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { Code, ConnectError } from "@connectrpc/connect";
import { PdfEngine, Quality, ValidationErrorSchema } from "@mcsv/sdk";
import sharp from "sharp";
import { loadImageConfig } from "../../services/image/config.js";
import { pdfEnginesTotal } from "../../services/image/metrics.js";
import { decode, extractImages, gradientPixels, listImages, qpdfCheck, splitAlpha, startImageHarness, streamData, type ConvertInit, type ImageHarness } from "./support.js";

const run = promisify(execFile);

// 0.3 MP, like the benchmark's smallest images.
const W = 640;
const H = 480;
const rgb = gradientPixels(W, H, 3);
const rgba = gradientPixels(W, H, 4);
const raw3 = () => sharp(rgb, { raw: { width: W, height: H, channels: 3 } });

let harness: ImageHarness;

beforeAll(async () => {
  harness = await startImageHarness();
}, 60_000);

afterAll(async () => {
  await harness?.stop();
});

async function convert(bytes: Buffer, inputFormat: "jpeg" | "png", options: ConvertInit["options"] = {}) {
  return harness.convert({ imageUrl: await harness.upload(bytes), inputFormat, options: { engine: PdfEngine.PASSTHROUGH, ...options } });
}

/** The first image's raw stream as stored (`qpdf --raw-stream-data`): a DCT image's JPEG bytes. */
async function rawStream(pdf: Buffer): Promise<Buffer> {
  const [image] = await listImages(pdf);
  const dir = mkdtempSync(join(tmpdir(), "mcsv-engine-"));
  try {
    writeFileSync(join(dir, "in.pdf"), pdf);
    return (await run("qpdf", [`--show-object=${image!.objectId}`, "--raw-stream-data", join(dir, "in.pdf")], { encoding: "buffer", maxBuffer: 64 << 20 })).stdout;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Every image of the PDF in its native format (`pdfimages -all`): a DCT image comes out as its JPEG file. */
async function extractNative(pdf: Buffer): Promise<Buffer[]> {
  const dir = mkdtempSync(join(tmpdir(), "mcsv-engine-"));
  try {
    writeFileSync(join(dir, "in.pdf"), pdf);
    await run("pdfimages", ["-all", join(dir, "in.pdf"), join(dir, "img")]);
    return readdirSync(dir)
      .filter((f) => f.startsWith("img"))
      .sort()
      .map((f) => readFileSync(join(dir, f)));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** `pdfimages -png` of the PDF's one image, decoded by sharp, equals sharp's decoding of the original. */
async function expectSamePixels(pdf: Buffer, original: Buffer): Promise<void> {
  const [extracted, ...rest] = await extractImages(pdf);
  expect(rest).toHaveLength(0);
  const [got, want] = await Promise.all([decode(extracted!), decode(original)]);
  expect([got.width, got.height, got.channels]).toEqual([want.width, want.height, want.channels]);
  expect(got.data.equals(want.data)).toBe(true);
}

async function engineCount(engine: string, fallback: string): Promise<number> {
  return (await pdfEnginesTotal.get()).values.find((v) => v.labels["engine"] === engine && v.labels["fallback"] === fallback)?.value ?? 0;
}

describe("PASSTHROUGH writes exactly the input's pixels", () => {
  test("JPEG at 4:4:4 and 4:2:0, progressive, grey: the DCT data as is, poppler's decoding equals the original's", async () => {
    const cases = {
      "rgb 4:4:4": await raw3().jpeg({ quality: 92, chromaSubsampling: "4:4:4" }).toBuffer(),
      "rgb 4:2:0": await raw3().jpeg({ quality: 80 }).toBuffer(),
      progressive: await raw3().jpeg({ quality: 85, progressive: true }).toBuffer(),
      grey: await raw3().toColourspace("b-w").jpeg().toBuffer(),
    };
    for (const [name, jpeg] of Object.entries(cases)) {
      // Under a lossy preset too: re-encoding cannot add quality, so the original's data stays.
      const { pdf, response } = await convert(jpeg, "jpeg", { quality: Quality.HIGH });
      expect([name, response.engine, response.width, response.height]).toEqual([name, PdfEngine.PASSTHROUGH, W, H]);
      await qpdfCheck(pdf);
      expect((await listImages(pdf))[0]!.enc).toBe("jpeg");
      expect((await rawStream(pdf)).equals(jpeg)).toBe(true);
      await expectSamePixels(pdf, jpeg);
    }
  });

  test("an Adobe CMYK JPEG is extracted byte for byte", async () => {
    const cmyk = await raw3().toColourspace("cmyk").jpeg().toBuffer();
    const { pdf, response } = await convert(cmyk, "jpeg");
    expect(response.engine).toBe(PdfEngine.PASSTHROUGH);
    expect((await listImages(pdf))[0]!.color).toBe("cmyk");
    const [extracted] = await extractNative(pdf);
    expect(extracted!.equals(cmyk)).toBe(true);
  });

  test("PNG: RGB, grey and palette (pdfimages), 16-bit and with an ICC profile (the decoded stream)", async () => {
    const eightBit = {
      rgb: await raw3().png().toBuffer(),
      grey: await raw3().toColourspace("b-w").png().toBuffer(),
      palette: await raw3().png({ palette: true, colours: 64 }).toBuffer(),
    };
    for (const [name, png] of Object.entries(eightBit)) {
      const { pdf, response } = await convert(png, "png");
      expect([name, response.engine]).toEqual([name, PdfEngine.PASSTHROUGH]);
      await qpdfCheck(pdf);
      await expectSamePixels(pdf, png);
    }

    // 16 bits per sample that are not 8-bit values widened (libvips' own 16-bit sRGB conversion).
    const deep = await raw3().toColourspace("rgb16").png().toBuffer();
    const deepPdf = await convert(deep, "png");
    expect(deepPdf.response.engine).toBe(PdfEngine.PASSTHROUGH);
    const [deepImage] = await listImages(deepPdf.pdf);
    expect(deepImage!.bpc).toBe(16);
    const samples = await streamData(deepPdf.pdf, deepImage!.objectId); // big-endian, as PDF and PNG store them
    const expected = await sharp(deep).toColourspace("rgb16").raw({ depth: "ushort" }).toBuffer(); // native order
    expect(Buffer.from(samples).swap16().equals(expected)).toBe(true);

    // With a (Display P3) profile: the samples as stored, the profile as the colour space.
    const p3 = await raw3().withIccProfile("p3").png().toBuffer();
    const p3Pdf = await convert(p3, "png");
    expect(p3Pdf.response.engine).toBe(PdfEngine.PASSTHROUGH);
    const [p3Image] = await listImages(p3Pdf.pdf);
    expect(p3Image!.color).toBe("icc");
    expect((await streamData(p3Pdf.pdf, p3Image!.objectId)).equals((await decode(p3, { ignoreIcc: true })).data)).toBe(true);
  });

  test("RGBA PNG: pdfimages gives the colour and the soft mask, each exactly the original's", async () => {
    const png = await sharp(rgba, { raw: { width: W, height: H, channels: 4 } }).png().toBuffer();
    const { pdf, response } = await convert(png, "png", { quality: Quality.LOSSLESS });
    expect(response.engine).toBe(PdfEngine.PASSTHROUGH);
    expect((await listImages(pdf)).map((i) => i.type)).toEqual(["image", "smask"]);
    const [colour, mask] = await extractImages(pdf);
    const original = splitAlpha((await decode(png)).data);
    expect((await decode(colour!)).data.equals(original.rgb)).toBe(true);
    expect((await sharp(mask!).extractChannel(0).raw().toBuffer()).equals(original.alpha)).toBe(true);
  });

  // Which segments stay (JFIF, Adobe) is shown in passthrough-pdf.test.ts; libvips writes neither here.
  test("strip_metadata: a JPEG's EXIF and XMP are dropped, the pixels untouched", async () => {
    const tagged = await raw3()
      .jpeg({ quality: 90 })
      .withExif({ IFD0: { Copyright: "mcsv-exif-marker" } })
      .withXmp('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">mcsv-xmp-marker</rdf:RDF></x:xmpmeta>')
      .toBuffer();
    expect(tagged.includes("mcsv-exif-marker")).toBe(true);
    expect(tagged.includes("mcsv-xmp-marker")).toBe(true);

    const kept = await convert(tagged, "jpeg");
    expect((await rawStream(kept.pdf)).equals(tagged)).toBe(true); // without stripping: byte for byte

    const stripped = await convert(tagged, "jpeg", { stripMetadata: true });
    expect(stripped.response.engine).toBe(PdfEngine.PASSTHROUGH);
    await qpdfCheck(stripped.pdf);
    const stream = await rawStream(stripped.pdf);
    expect([stream.includes("Exif"), stream.includes("mcsv-exif-marker"), stream.includes("mcsv-xmp-marker")]).toEqual([false, false, false]);
    expect(stream.length).toBeLessThan(tagged.length);
    await expectSamePixels(stripped.pdf, tagged);
  });
});

describe("what needs a change falls back to ImageMagick and still converts correctly", () => {
  test("EXIF orientation, a size over max_width, an interlaced PNG, tRNS, alpha under a lossy preset, a profile to strip", async () => {
    const before = {
      orientation: await engineCount("imagemagick", "orientation"),
      resize: await engineCount("imagemagick", "resize"),
      interlaced: await engineCount("imagemagick", "interlaced"),
      transparency: await engineCount("imagemagick", "transparency"),
      flatten: await engineCount("imagemagick", "alpha-flatten"),
      strip: await engineCount("imagemagick", "strip-icc"),
    };

    // Orientation 6: the page shows the photo upright, W × H turned to H × W.
    const turned = await raw3().jpeg({ quality: 90 }).withMetadata({ orientation: 6 }).toBuffer();
    const upright = await convert(turned, "jpeg");
    expect([upright.response.engine, upright.response.width, upright.response.height]).toEqual([PdfEngine.IMAGEMAGICK, H, W]);
    const [page] = await extractImages(upright.pdf);
    const want = await sharp(turned).rotate().raw().toBuffer();
    expect((await decode(page!)).data.equals(want)).toBe(true); // LOSSLESS: the normalised pixels exactly

    const scaled = await convert(await raw3().png().toBuffer(), "png", { maxWidth: W / 2 });
    expect([scaled.response.engine, scaled.response.width, scaled.response.height]).toEqual([PdfEngine.IMAGEMAGICK, W / 2, H / 2]);

    const interlaced = await raw3().png({ progressive: true }).toBuffer();
    const deinterlaced = await convert(interlaced, "png");
    expect(deinterlaced.response.engine).toBe(PdfEngine.IMAGEMAGICK);
    await expectSamePixels(deinterlaced.pdf, interlaced);

    const trns = await raw3().png({ palette: true, colours: 4 }).ensureAlpha(0.5).toBuffer();
    const masked = await convert(trns, "png");
    expect(masked.response.engine).toBe(PdfEngine.IMAGEMAGICK);
    expect((await listImages(masked.pdf)).map((i) => i.type)).toEqual(["image", "smask"]);

    const alpha = await sharp(rgba, { raw: { width: W, height: H, channels: 4 } }).png().toBuffer();
    const flattened = await convert(alpha, "png", { quality: Quality.HIGH });
    expect(flattened.response.engine).toBe(PdfEngine.IMAGEMAGICK);
    expect((await listImages(flattened.pdf)).map((i) => [i.type, i.enc])).toEqual([["image", "jpeg"]]);

    const profiled = await raw3().withIccProfile("p3").jpeg().toBuffer();
    const srgb = await convert(profiled, "jpeg", { stripMetadata: true });
    expect(srgb.response.engine).toBe(PdfEngine.IMAGEMAGICK);
    expect((await listImages(srgb.pdf))[0]!.color).toBe("rgb");

    for (const pdf of [upright.pdf, scaled.pdf, deinterlaced.pdf, masked.pdf, flattened.pdf, srgb.pdf]) await qpdfCheck(pdf);
    expect({
      orientation: await engineCount("imagemagick", "orientation"),
      resize: await engineCount("imagemagick", "resize"),
      interlaced: await engineCount("imagemagick", "interlaced"),
      transparency: await engineCount("imagemagick", "transparency"),
      flatten: await engineCount("imagemagick", "alpha-flatten"),
      strip: await engineCount("imagemagick", "strip-icc"),
    }).toEqual({
      orientation: before.orientation + 1,
      resize: before.resize + 1,
      interlaced: before.interlaced + 1,
      transparency: before.transparency + 1,
      flatten: before.flatten + 1,
      strip: before.strip + 1,
    });
  });

  test("damaged files are not passed through: a flipped bit in a PNG's rows, a truncated JPEG", async () => {
    const png = await raw3().png().toBuffer();
    const flipped = Buffer.from(png);
    const idat = flipped.indexOf("IDAT");
    flipped[idat + 4 + 100]! ^= 0x10; // inside the compressed rows; the chunk's CRC no longer matches
    const jpeg = await raw3().jpeg({ quality: 90 }).toBuffer();
    const truncated = jpeg.subarray(0, Math.floor(jpeg.length * 0.6));
    const damaged = await engineCount("imagemagick", "damaged");

    for (const [bytes, format] of [[flipped, "png"], [truncated, "jpeg"]] as const) {
      const error = await convert(bytes, format).then(
        () => undefined,
        (caught: unknown) => ConnectError.from(caught),
      );
      // ImageMagick's path decodes it and, under IMAGE_FAIL_ON=warning, refuses it.
      expect([format, error?.code]).toEqual([format, Code.InvalidArgument]);
      expect(error!.rawMessage).toMatch(/damaged or truncated/);
    }
    expect(await engineCount("imagemagick", "damaged")).toBe(damaged + 2);
  });
});

describe("choosing the engine", () => {
  test("UNSPECIFIED follows IMAGE_PDF_ENGINE; an explicit engine wins; an unknown one is refused", async () => {
    const jpeg = await raw3().jpeg({ quality: 90 }).toBuffer();
    const byDefault = await convert(jpeg, "jpeg", { engine: PdfEngine.UNSPECIFIED });
    expect(byDefault.response.engine).toBe(PdfEngine.IMAGEMAGICK); // the default of IMAGE_PDF_ENGINE
    expect((await listImages(byDefault.pdf))[0]!.enc).not.toBe("jpeg"); // LOSSLESS: re-encoded with Flate

    const passing = await startImageHarness({ IMAGE_PDF_ENGINE: "passthrough" });
    try {
      const url = await passing.upload(jpeg);
      const unspecified = await passing.convert({ imageUrl: url, inputFormat: "jpeg", options: { engine: PdfEngine.UNSPECIFIED } });
      expect(unspecified.response.engine).toBe(PdfEngine.PASSTHROUGH);
      const explicit = await passing.convert({ imageUrl: url, inputFormat: "jpeg", options: { engine: PdfEngine.IMAGEMAGICK } });
      expect(explicit.response.engine).toBe(PdfEngine.IMAGEMAGICK);
    } finally {
      await passing.stop();
    }

    const error = await convert(jpeg, "jpeg", { engine: 99 as PdfEngine }).then(
      () => undefined,
      (caught: unknown) => ConnectError.from(caught),
    );
    expect(error?.code).toBe(Code.InvalidArgument);
    expect(error!.findDetails(ValidationErrorSchema).flatMap((d) => d.violations.map((v) => v.field))).toEqual(["options.engine"]);
  });

  test("IMAGE_PDF_ENGINE takes imagemagick or passthrough only", () => {
    expect(() => loadImageConfig({ IMAGE_PDF_ENGINE: "fast" })).toThrow(/IMAGE_PDF_ENGINE/);
  });
});
