/**
 * The gateway refuses at once what an image's header shows (issue #10, point 9): sharp reads the header without
 * decoding a pixel, so a header claiming too many pixels is resource_exhausted and an unreadable one
 * invalid_argument, inline or uploaded, and nothing is stored or queued. Only what needs a full decode (a truncated
 * body) is accepted and left to fail in the image service. Against real Postgres and s3rver.
 */
import { Code } from "@connectrpc/connect";
import { ConversionState } from "@mcsv/sdk";
import { imageEnv } from "../../services/image/config.js";
import { userEnv } from "../../services/user/config.js";
import { HEADER_BYTES, mayContinue, readImageHeader, sniffImageFormat } from "../../services/user/image-format.js";
import { claimedSizePng, gifGarbage, noise, tiffWithTrailingHeader } from "../support/hostile-images.js";
import { badFields, failure, image, startGateway, startInfra, type Gateway, type Infra } from "./support.js";

const MAX_PIXELS = 1_000_000;

describe("readImageHeader", () => {
  test("reads every supported format's dimensions without decoding", async () => {
    for (const format of ["png", "jpeg", "webp", "tiff", "gif", "avif"] as const) {
      expect({ format, header: await readImageHeader(await image(format, 24), format, MAX_PIXELS) }).toEqual({ format, header: { width: 24, height: 24 } });
    }
  });

  test("too many pixels, an unreadable header, a header of another format", async () => {
    expect(await readImageHeader(claimedSizePng(100_000, 100_000), "png", 100_000_000)).toEqual({ tooManyPixels: true });
    expect(await readImageHeader(claimedSizePng(1_001, 1_000), "png", MAX_PIXELS)).toEqual({ tooManyPixels: true });
    expect(await readImageHeader(claimedSizePng(1_000, 1_000), "png", MAX_PIXELS)).toEqual({ width: 1_000, height: 1_000 });
    expect(await readImageHeader(gifGarbage(), "gif", MAX_PIXELS)).toEqual({ unreadable: expect.stringMatching(/^has a gif header that cannot be read \(.+\)$/) });
    const jpegStartThenGarbage = Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46, 0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00]), noise(2048)]);
    expect(await readImageHeader(jpegStartThenGarbage, "jpeg", MAX_PIXELS)).toEqual({ unreadable: expect.stringContaining("jpeg header that cannot be read") });
    expect(await readImageHeader(await image("jpeg"), "png", MAX_PIXELS)).toEqual({ unreadable: "starts as png but its header reads as jpeg" });
  });

  test("a body cut short behind a whole header passes: only a full decode notices", async () => {
    const png = await image("png", 64);
    expect(await readImageHeader(png.subarray(0, Math.floor(png.byteLength / 2)), "png", MAX_PIXELS)).toEqual({ width: 64, height: 64 });
  });

  test("a TIFF's directory may lie beyond the first bytes read of an upload: then more is read, and only then", async () => {
    const tiff = await tiffWithTrailingHeader(200, 200);
    expect(tiff.byteLength).toBeGreaterThan(HEADER_BYTES);
    const start = tiff.subarray(0, HEADER_BYTES);
    // file-type names a TIFF from its directory, sharp reads the dimensions there.
    expect(await sniffImageFormat(start)).toHaveProperty("refused");
    expect(await sniffImageFormat(tiff)).toEqual({ format: "tiff" });
    expect(await readImageHeader(start, "tiff", MAX_PIXELS)).toHaveProperty("unreadable");
    expect(await readImageHeader(tiff, "tiff", MAX_PIXELS)).toEqual({ width: 200, height: 200 });
    expect(mayContinue(start, await sniffImageFormat(start) as { refused: string })).toBe(true);
    // Bytes that are no image at all, or a header that was read, never make the gateway read a whole upload.
    expect(mayContinue(Buffer.from("<svg/>"), { refused: "is not a recognised image format" })).toBe(false);
    expect(mayContinue(start, { width: 1, height: 1 })).toBe(false);
    expect(mayContinue(start, { tooManyPixels: true })).toBe(false);
  });

  test("the gateway's default pixel limit is the image service's", () => {
    expect(userEnv.GATEWAY_MAX_IMAGE_PIXELS.parse(undefined)).toBe(imageEnv.IMAGE_MAX_PIXELS.parse(undefined));
  });
});

describe("ConvertImage", () => {
  let infra: Infra;
  let gw: Gateway;

  beforeAll(async () => {
    infra = await startInfra();
    gw = await startGateway(infra, { GATEWAY_MAX_IMAGE_PIXELS: String(MAX_PIXELS), UPLOAD_MAX_BYTES: String(1024 * 1024) });
  });

  afterAll(async () => {
    await gw?.stop();
    await infra?.stop();
  });

  afterEach(() => {
    expect(infra.jobs.invalid).toEqual([]);
  });

  /** What a refused request must not have left behind: conversions, originals, convert_image jobs. */
  async function footprint() {
    const { rows } = await gw.db.query<{ n: number }>("select count(*)::int as n from mcsv_user.conversions");
    let originals = 0;
    for await (const _ of gw.store.list("originals/")) originals++;
    return { conversions: rows[0]!.n, originals, convertJobs: infra.jobs.jobs("convert_image").length };
  }

  async function upload(bytes: Uint8Array, contentType: string): Promise<string> {
    const ticket = await gw.client.createUploadUrl({ userEmail: "header@example.com", filename: "x", contentType, size: BigInt(bytes.byteLength) });
    const put = await fetch(ticket.uploadUrl, { method: "PUT", headers: ticket.headers, body: bytes });
    await put.arrayBuffer();
    expect(put.status).toBe(200);
    return ticket.uploadId;
  }

  const inline = (bytes: Uint8Array) => gw.client.convertImage({ userEmail: "header@example.com", source: { case: "imageData", value: bytes } });
  const byUpload = (uploadId: string) => gw.client.convertImage({ userEmail: "header@example.com", source: { case: "uploadId", value: uploadId } });

  test("a header claiming too many pixels is resource_exhausted at once, inline or uploaded, and nothing is kept", async () => {
    const before = await footprint();
    for (const bytes of [claimedSizePng(100_000, 100_000), claimedSizePng(1_001, 1_000)]) {
      const error = await failure(inline(bytes));
      expect(error.code).toBe(Code.ResourceExhausted);
      expect(error.rawMessage).toBe("the image's header claims more pixels than the limit of 1,000,000 (width × height); send a smaller image");
    }
    const uploaded = await failure(byUpload(await upload(claimedSizePng(100_000, 100_000), "image/png")));
    expect(uploaded.code).toBe(Code.ResourceExhausted);
    expect(await footprint()).toEqual(before);
    // The limit itself is accepted.
    expect((await inline(claimedSizePng(1_000, 1_000))).conversion).toMatchObject({ state: ConversionState.QUEUED, inputFormat: "png" });
  });

  test("an unreadable header is invalid_argument naming imageData or uploadId, and nothing is kept", async () => {
    const before = await footprint();
    const refused = await failure(inline(gifGarbage()));
    expect(refused.code).toBe(Code.InvalidArgument);
    expect(badFields(refused)).toEqual(["imageData"]);
    expect(refused.rawMessage).toMatch(/imageData: has a gif header that cannot be read \(.+\); send an undamaged png/);

    const uploaded = await failure(byUpload(await upload(gifGarbage(), "image/gif")));
    expect(uploaded.code).toBe(Code.InvalidArgument);
    expect(badFields(uploaded)).toEqual(["uploadId"]);

    // Cut inside the header: the PNG signature and half an IHDR.
    const png = await image("png");
    expect(badFields(await failure(inline(png.subarray(0, 20))))).toEqual(["imageData"]);
    expect(await footprint()).toEqual(before);
  });

  test("a truncated body behind a whole header is accepted: it fails later, in the image service", async () => {
    const png = await image("png", 64);
    const { conversion } = await inline(png.subarray(0, Math.floor(png.byteLength / 2)));
    expect(conversion).toMatchObject({ state: ConversionState.QUEUED, inputFormat: "png" });
  });

  test("an upload whose header is past the first bytes read is read whole, within the upload limit", async () => {
    const tiff = await tiffWithTrailingHeader(200, 200);
    expect(tiff.byteLength).toBeGreaterThan(HEADER_BYTES);
    const { conversion } = await byUpload(await upload(tiff, "image/tiff"));
    expect(conversion).toMatchObject({ state: ConversionState.QUEUED, inputFormat: "tiff", inputSize: BigInt(tiff.byteLength) });
    // Inline, the whole image is there from the start.
    expect((await inline(tiff)).conversion).toMatchObject({ state: ConversionState.QUEUED, inputFormat: "tiff" });
  });
});
