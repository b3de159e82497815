/**
 * ImageService.ConvertImage end to end against a real s3rver and a real ImageMagick: the PDFs are checked with qpdf,
 * their pixels extracted with pdfimages and rendered with pdftocairo, and compared with what went in.
 */
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Quality } from "@mcsv/sdk";
import sharp from "sharp";
import { registry } from "../../services/shared/metrics.js";
import {
  decode,
  encodePng,
  extractImages,
  gradientPixels,
  listImages,
  meanAbsoluteError,
  pageSize,
  qpdfCheck,
  renderPage,
  splitAlpha,
  startImageHarness,
  streamData,
  uncompressed,
  type ImageHarness,
} from "./support.js";

let harness: ImageHarness;

beforeAll(async () => {
  harness = await startImageHarness();
});

afterAll(async () => {
  await harness?.stop();
});

describe("LOSSLESS", () => {
  test("an RGB PNG becomes a valid one-page PDF holding exactly its pixels", async () => {
    const pixels = gradientPixels(64, 48, 3);
    const png = await encodePng(pixels, 64, 48, 3);
    const { request, response, pdf } = await harness.convert({ imageUrl: await harness.upload(png), inputFormat: "png" });

    expect(response.pdfKey).toBe(`pdfs/${request.conversionId}.pdf`);
    expect(response).toMatchObject({ width: 64, height: 48, inputSize: BigInt(png.length), outputSize: BigInt(pdf.length) });
    expect(timestampDate(response.pdfUrlExpiresAt!).getTime()).toBeGreaterThan(Date.now());
    expect(pdf.subarray(0, 5).toString("latin1")).toBe("%PDF-");

    await expect(qpdfCheck(pdf)).resolves.toMatch(/No syntax or stream encoding errors/);
    expect(await pageSize(pdf)).toEqual({ width: 64, height: 48 });
    expect(await listImages(pdf)).toEqual([expect.objectContaining({ type: "image", width: 64, height: 48, color: "rgb", bpc: 8, enc: "image" })]);

    const [embedded] = await extractImages(pdf);
    const extracted = await decode(embedded!);
    expect(extracted.channels).toBe(3);
    expect(extracted.data.equals(pixels)).toBe(true);

    // What a viewer shows: poppler renders the page at one pixel per point.
    const rendered = await decode(await renderPage(pdf));
    expect([rendered.width, rendered.height]).toEqual([64, 48]);
    expect(rendered.data.equals(pixels)).toBe(true);
  });

  test("an RGBA PNG keeps its colours exactly and its alpha channel as the SMask", async () => {
    const pixels = gradientPixels(64, 48, 4);
    const { rgb, alpha } = splitAlpha(pixels);
    const { pdf } = await harness.convert({ imageUrl: await harness.upload(await encodePng(pixels, 64, 48, 4)), inputFormat: "png" });

    await qpdfCheck(pdf);
    expect((await listImages(pdf)).map((i) => [i.type, i.color, i.width, i.height])).toEqual([
      ["image", "rgb", 64, 48],
      ["smask", "gray", 64, 48],
    ]);
    const [colour, mask] = await extractImages(pdf);
    expect((await decode(colour!)).data.equals(rgb)).toBe(true);
    const maskPixels = await sharp(mask!).extractChannel(0).raw().toBuffer();
    expect(maskPixels.equals(alpha)).toBe(true);
  });
});

describe("quality presets", () => {
  test("LOW < MEDIUM < HIGH in size, HIGH close to the original, LOSSLESS exact, UNSPECIFIED is HIGH", async () => {
    // Photographic-like: smooth gradients and mild noise, so JPEG quality matters.
    const pixels = gradientPixels(320, 240, 3, 11, 6);
    const imageUrl = await harness.upload(await encodePng(pixels, 320, 240, 3));
    const sizes: Record<string, number> = {};
    const decoded: Record<string, Buffer> = {};
    for (const [name, quality] of [
      ["low", Quality.LOW],
      ["medium", Quality.MEDIUM],
      ["high", Quality.HIGH],
      ["lossless", Quality.LOSSLESS],
      ["unspecified", Quality.UNSPECIFIED],
    ] as const) {
      const { pdf } = await harness.convert({ imageUrl, inputFormat: "png", options: { quality } });
      await qpdfCheck(pdf);
      const [listed] = await listImages(pdf);
      expect(listed).toMatchObject({ width: 320, height: 240, enc: quality === Quality.LOSSLESS ? "image" : "jpeg" });
      sizes[name] = pdf.length;
      decoded[name] = (await decode((await extractImages(pdf))[0]!)).data;
    }
    expect(sizes["low"]).toBeLessThan(sizes["medium"]!);
    expect(sizes["medium"]).toBeLessThan(sizes["high"]!);
    expect(sizes["high"]).toBeLessThan(sizes["lossless"]!);
    expect(decoded["lossless"]!.equals(pixels)).toBe(true);
    expect(meanAbsoluteError(decoded["high"]!, pixels)).toBeLessThan(3);
    expect(meanAbsoluteError(decoded["low"]!, pixels)).toBeGreaterThan(meanAbsoluteError(decoded["high"]!, pixels));
    expect(decoded["unspecified"]!.equals(decoded["high"]!)).toBe(true);
  });

  test("lossy presets flatten transparency onto white", async () => {
    const pixels = Buffer.alloc(8 * 8 * 4); // fully transparent black
    const { pdf } = await harness.convert({
      imageUrl: await harness.upload(await encodePng(pixels, 8, 8, 4)),
      inputFormat: "png",
      options: { quality: Quality.HIGH },
    });
    expect((await listImages(pdf)).map((i) => i.type)).toEqual(["image"]);
    const { data } = await decode((await extractImages(pdf))[0]!);
    expect(Math.min(...data)).toBeGreaterThanOrEqual(250);
  });
});

describe("normalisation", () => {
  const source = gradientPixels(64, 48, 3);

  test.each([
    [{ maxWidth: 32 }, 32, 24],
    [{ maxHeight: 12 }, 16, 12],
    [{ maxWidth: 40, maxHeight: 15 }, 20, 15],
    [{ maxWidth: 1000, maxHeight: 1000 }, 64, 48], // never enlarged
  ])("resizes within %o to %i×%i", async (limits, width, height) => {
    const { response, pdf } = await harness.convert({ imageUrl: await harness.upload(await encodePng(source, 64, 48, 3)), inputFormat: "png", options: limits });
    expect([response.width, response.height]).toEqual([width, height]);
    expect((await listImages(pdf)).map((i) => [i.width, i.height])).toEqual([[width, height]]);
    expect(await pageSize(pdf)).toEqual({ width, height });
  });

  test("applies the EXIF orientation (6: rotate 90° clockwise)", async () => {
    const jpeg = await sharp(source, { raw: { width: 64, height: 48, channels: 3 } }).jpeg().withMetadata({ orientation: 6 }).toBuffer();
    const { response, pdf } = await harness.convert({ imageUrl: await harness.upload(jpeg), inputFormat: "jpeg" });
    expect([response.width, response.height]).toEqual([48, 64]);
    const upright = await sharp(jpeg).autoOrient().raw().toBuffer();
    expect((await decode((await extractImages(pdf))[0]!)).data.equals(upright)).toBe(true);
  });

  test("every accepted format converts", async () => {
    const image = sharp(source, { raw: { width: 64, height: 48, channels: 3 } });
    const encoded = {
      png: await image.clone().png().toBuffer(),
      jpeg: await image.clone().jpeg().toBuffer(),
      webp: await image.clone().webp().toBuffer(),
      tiff: await image.clone().tiff().toBuffer(),
      gif: await image.clone().gif().toBuffer(),
      avif: await image.clone().avif().toBuffer(),
    };
    for (const [format, bytes] of Object.entries(encoded)) {
      const { response, pdf } = await harness.convert({ imageUrl: await harness.upload(bytes), inputFormat: format });
      expect([format, response.width, response.height]).toEqual([format, 64, 48]);
      await qpdfCheck(pdf);
      // The PDF holds what sharp decodes from the original.
      expect((await decode((await extractImages(pdf))[0]!)).data.equals(await sharp(bytes).raw().toBuffer())).toBe(true);
    }
  });

  describe("metadata", () => {
    let original: Buffer;
    let profile: Buffer;
    beforeAll(async () => {
      // A Display P3 image with EXIF: sharp converts the pixels into P3 and embeds the profile.
      original = await sharp(source, { raw: { width: 64, height: 48, channels: 3 } })
        .withIccProfile("p3")
        .withExif({ IFD0: { Artist: "Ada Exif-Marker" } })
        .png()
        .toBuffer();
      profile = (await sharp(original).metadata()).icc!;
      expect(profile).toBeDefined();
    });

    test("strip_metadata converts to sRGB and embeds no profile and no EXIF", async () => {
      const { pdf } = await harness.convert({ imageUrl: await harness.upload(original), inputFormat: "png", options: { stripMetadata: true } });
      const text = await uncompressed(pdf);
      expect(text).not.toContain("/ICCBased");
      expect(text).not.toContain("Exif-Marker");
      const [listed] = await listImages(pdf);
      expect(listed!.color).toBe("rgb");
      expect((await streamData(pdf, listed!.objectId)).equals(await sharp(original).toColourspace("srgb").raw().toBuffer())).toBe(true);
    });

    test("without strip_metadata the ICC profile is kept with untouched pixels (EXIF has no place in a PDF)", async () => {
      const { pdf } = await harness.convert({ imageUrl: await harness.upload(original), inputFormat: "png", options: { stripMetadata: false } });
      await qpdfCheck(pdf);
      const text = await uncompressed(pdf);
      expect(text).toContain("/ICCBased");
      expect(text).not.toContain("Exif-Marker");
      const [listed] = await listImages(pdf);
      expect(listed!.color).toBe("icc");
      expect((await streamData(pdf, listed!.objectId)).equals(await decode(original, { ignoreIcc: true }).then((d) => d.data))).toBe(true);
      // The embedded profile is the original's, byte for byte (qdf output holds streams uncompressed).
      expect(text).toContain(profile.toString("latin1"));
    });
  });
});

test("the same conversion id twice leaves one PDF, the second overwriting the first", async () => {
  const conversionId = crypto.randomUUID();
  const first = await harness.convert({ conversionId, imageUrl: await harness.upload(await encodePng(gradientPixels(16, 16, 3, 1), 16, 16, 3)), inputFormat: "png" });
  const second = await harness.convert({ conversionId, imageUrl: await harness.upload(await encodePng(gradientPixels(40, 30, 3, 2), 40, 30, 3)), inputFormat: "png" });
  expect(second.response.pdfKey).toBe(first.response.pdfKey);
  const stored = [];
  for await (const object of harness.store.list(`pdfs/${conversionId}`)) stored.push(object);
  expect(stored.map((o) => [o.key, o.size])).toEqual([[`pdfs/${conversionId}.pdf`, second.pdf.length]]);
  const head = await harness.store.head(`pdfs/${conversionId}.pdf`);
  expect(head?.contentType).toBe("application/pdf");
});

test("conversions are counted by outcome and quality, timed by stage, and their bytes summed", async () => {
  const value = async (name: string, labels: Record<string, string>) => {
    const metric = await registry.getSingleMetric(name)!.get();
    return metric.values
      .filter((v) => Object.entries(labels).every(([key, want]) => v.labels[key] === want))
      .reduce((sum, v) => sum + v.value, 0);
  };
  expect(await value("mcsv_conversions_total", { outcome: "ok", quality: "lossless" })).toBeGreaterThan(0);
  expect(await value("mcsv_conversions_total", { outcome: "ok", quality: "low" })).toBe(1);
  for (const stage of ["fetch", "normalise", "pdf", "upload"]) {
    const histogram = (await registry.getSingleMetric("mcsv_conversion_stage_duration_seconds")!.get()).values;
    expect(histogram.find((v) => (v as { metricName?: string }).metricName === "mcsv_conversion_stage_duration_seconds_count" && v.labels["stage"] === stage)?.value).toBeGreaterThan(0);
  }
  expect(await value("mcsv_conversion_bytes_total", { direction: "in" })).toBeGreaterThan(0);
  expect(await value("mcsv_conversion_bytes_total", { direction: "out" })).toBeGreaterThan(0);
  // And they are served on /metrics.
  expect(await (await fetch(`${harness.service.url}/metrics`)).text()).toContain("mcsv_conversions_total{");
  expect(await harness.ready()).toBe(200);
});
