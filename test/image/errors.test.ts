/**
 * Requests the image service must refuse, each with the right Connect code, and the service still ready afterwards.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { ImageServiceConvertImageRequestSchema, Quality, ValidationErrorSchema } from "@mcsv/sdk";
import sharp from "sharp";
import { createLogger } from "../../services/shared/logger.js";
import { encodePng, gradientPixels, noise, startImageHarness, type ConvertInit, type ImageHarness } from "./support.js";

let harness: ImageHarness;
let png: Buffer;

beforeAll(async () => {
  harness = await startImageHarness({ IMAGE_MAX_INPUT_BYTES: "1000000" });
  png = await encodePng(gradientPixels(64, 48, 3), 64, 48, 3);
});

afterAll(async () => {
  await harness?.stop();
});

afterEach(async () => {
  expect(await harness.ready()).toBe(200);
});

async function refusal(init: ConvertInit | ReturnType<typeof create<typeof ImageServiceConvertImageRequestSchema>>): Promise<ConnectError> {
  const request = "$typeName" in init ? init : create(ImageServiceConvertImageRequestSchema, { conversionId: crypto.randomUUID(), ...init });
  try {
    await harness.client.convertImage(request);
  } catch (error) {
    return ConnectError.from(error);
  }
  throw new Error("the conversion succeeded");
}

const fieldsOf = (error: ConnectError) => error.findDetails(ValidationErrorSchema).flatMap((d) => d.violations.map((v) => v.field));

describe("request validation", () => {
  test("a URL outside the storage endpoint or bucket is refused without being fetched", async () => {
    let hits = 0;
    const trap: Server = createServer((_req, res) => {
      hits++;
      res.end("gotcha");
    });
    await new Promise<void>((resolve) => trap.listen(0, "127.0.0.1", resolve));
    try {
      const trapUrl = `http://127.0.0.1:${(trap.address() as AddressInfo).port}`;
      const genuine = new URL(await harness.upload(png));
      for (const imageUrl of [
        `${trapUrl}/mcsv${genuine.pathname.slice("/mcsv".length)}${genuine.search}`, // another origin, same path
        `${harness.s3.endpoint}/another-bucket/uploads/x`, // our endpoint, another bucket
        `${trapUrl.replace("http:", "file:")}/etc/passwd`,
        "not a url",
      ]) {
        const error = await refusal({ imageUrl, inputFormat: "png" });
        expect([imageUrl, error.code]).toEqual([imageUrl, Code.InvalidArgument]);
        expect(fieldsOf(error)).toEqual(["imageUrl"]);
      }
      expect(hits).toBe(0);
    } finally {
      await new Promise((resolve) => trap.close(resolve));
    }
  });

  test("every bad field is named at once", async () => {
    const error = await refusal(
      create(ImageServiceConvertImageRequestSchema, {
        conversionId: "not-a-uuid",
        imageUrl: "",
        inputFormat: "bmp",
        options: { quality: 99 as Quality, maxWidth: 2_000_000 },
      }),
    );
    expect(error.code).toBe(Code.InvalidArgument);
    expect(fieldsOf(error).sort()).toEqual(["conversionId", "imageUrl", "inputFormat", "options.maxWidth", "options.quality"]);
  });

  test("an unknown quality value is refused", async () => {
    const error = await refusal({ imageUrl: await harness.upload(png), inputFormat: "png", options: { quality: 7 as Quality } });
    expect(error.code).toBe(Code.InvalidArgument);
    expect(fieldsOf(error)).toEqual(["options.quality"]);
  });
});

describe("the original in storage", () => {
  test("an expired URL is a failed precondition", async () => {
    const url = new URL(await harness.upload(png));
    url.searchParams.set("X-Amz-Date", "20200101T000000Z");
    const error = await refusal({ imageUrl: url.toString(), inputFormat: "png" });
    expect(error.code).toBe(Code.FailedPrecondition);
  });

  test("a missing object is not found", async () => {
    const { url } = await harness.store.presignGet(`uploads/${crypto.randomUUID()}`);
    const error = await refusal({ imageUrl: url, inputFormat: "png" });
    expect(error.code).toBe(Code.NotFound);
  });

  test("an original over IMAGE_MAX_INPUT_BYTES is refused", async () => {
    const next = noise(3);
    const big = Buffer.alloc(1_500_000, 0).map(() => next());
    const error = await refusal({ imageUrl: await harness.upload(big), inputFormat: "png" });
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.rawMessage).toMatch(/larger than the limit/);
  });
});

describe("the image itself", () => {
  test("text is not an image", async () => {
    const error = await refusal({ imageUrl: await harness.upload(Buffer.from("hello, I am a text file\n".repeat(20))), inputFormat: "png" });
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.rawMessage).toMatch(/not an image/);
  });

  test("a truncated PNG is refused", async () => {
    const error = await refusal({ imageUrl: await harness.upload(png.subarray(0, Math.floor(png.length / 2))), inputFormat: "png" });
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.rawMessage).toMatch(/damaged or truncated/);
  });

  test("an image that is not the declared format is refused", async () => {
    const error = await refusal({ imageUrl: await harness.upload(png), inputFormat: "jpeg" });
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.rawMessage).toMatch(/is png, not jpeg/);
  });

  test("a decompression bomb is refused from its header, without decoding it", async () => {
    // 10,001 × 10,000 black pixels: ~300 KB of PNG, 300 MB once decoded, just over the 100,000,000-pixel limit.
    const bomb = await sharp({ create: { width: 10_001, height: 10_000, channels: 3, background: "#000" } }).png({ compressionLevel: 9 }).toBuffer();
    const imageUrl = await harness.upload(bomb);
    const before = process.memoryUsage().rss;
    const error = await refusal({ imageUrl, inputFormat: "png" });
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.rawMessage).toMatch(/more pixels than the limit of 100,000,000/);
    expect(process.memoryUsage().rss - before).toBeLessThan(200 * 1024 * 1024);
  });
});

describe("a broken ImageMagick", () => {
  let broken: ImageHarness;
  beforeAll(async () => {
    // Its errors are expected here: keep them out of the test output.
    const logger = createLogger("image-svc");
    logger.silent = true;
    broken = await startImageHarness({ IMAGEMAGICK_COMMAND: "false" }, { logger });
  });
  afterAll(async () => {
    await broken?.stop();
  });

  test("makes the service not ready and conversions fail as internal errors", async () => {
    const readiness = await fetch(`${broken.service.url}/health/ready`);
    expect(readiness.status).toBe(503);
    const body = (await readiness.json()) as { checks: Record<string, string> };
    expect(body.checks["s3"]).toBe("ok");
    expect(body.checks["imagemagick"]).toMatch(/cannot write a PDF/);

    const error = await broken.client
      .convertImage(create(ImageServiceConvertImageRequestSchema, { conversionId: crypto.randomUUID(), imageUrl: await broken.upload(png), inputFormat: "png" }))
      .then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
    expect(error?.code).toBe(Code.Internal);
    expect(error?.rawMessage).toMatch(/ImageMagick failed \(exit code 1\)/);
  });
});
