/**
 * ImageMagick's PDF goes to storage as it is written (issue 15: the memory of a conversion bounded by the image, not
 * by its PDF held whole): a PDF larger than one part is stored by a multipart upload, with exactly the image's pixels;
 * and an ImageMagick run that fails after the first part has gone leaves no PDF in the bucket, not a truncated one.
 */
import { randomUUID } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import { PART_BYTES } from "../../services/shared/storage.js";
import { startHttpRelay, type HttpRelay } from "../support/http-relay.js";
import { extractImages } from "../support/pdf.js";
import { encodePng, noise, startImageHarness, type ImageHarness } from "./support.js";

/** Pixels that Flate cannot shrink: a LOSSLESS PDF of them is larger than the raw pixels. */
function incompressible(width: number, height: number): Buffer {
  const next = noise(42);
  return Buffer.from(Array.from({ length: width * height * 3 }, () => next()));
}

const WIDTH = 2400;
const HEIGHT = 2400;

let harness: ImageHarness;
let small: ImageHarness;
/** In front of the first harness's S3: the requests the image service makes to store a PDF. */
let relay: HttpRelay;

beforeAll(async () => {
  relay = await startHttpRelay();
  [harness, small] = await Promise.all([
    startImageHarness({ S3_ENDPOINT: relay.url }),
    // Room for one part and a bit: the run is stopped after the first part has been uploaded.
    startImageHarness({ IMAGE_MAX_OUTPUT_BYTES: String(PART_BYTES + 256 * 1024) }),
  ]);
  relay.target = Number(new URL(harness.s3.endpoint).port);
}, 60_000);

afterAll(async () => {
  await Promise.all([harness?.stop(), small?.stop()]);
  await relay?.close();
});

test("a PDF larger than one part is stored by a multipart upload, holding exactly the image's pixels", async () => {
  const pixels = incompressible(WIDTH, HEIGHT);
  expect(pixels.byteLength).toBeGreaterThan(PART_BYTES);
  const png = await encodePng(pixels, WIDTH, HEIGHT, 3);
  const { response, pdf } = await harness.convert({ imageUrl: await harness.upload(png), inputFormat: "png" });
  expect(pdf.byteLength).toBeGreaterThan(PART_BYTES);
  expect(Number(response.outputSize)).toBe(pdf.byteLength);
  // Stored in parts, as ImageMagick wrote it: the multipart upload's requests, and no PUT of the whole PDF.
  const path = `/${harness.store.bucket}/${response.pdfKey}`;
  const storing = relay.requests.filter((line) => line.split(" ")[1]!.startsWith(path)).map((line) => line.replace(/uploadId=[^&]+/, "uploadId=…").replace(/&x-id=\w+/, ""));
  expect(storing).toEqual([`POST ${path}?uploads=`, `PUT ${path}?partNumber=1&uploadId=…`, `PUT ${path}?partNumber=2&uploadId=…`, `POST ${path}?uploadId=…`, expect.stringMatching(new RegExp(`^GET ${path}`))]);
  const [embedded] = await extractImages(pdf);
  expect(embedded!.channels).toBe(3);
  expect(embedded!.data.equals(pixels)).toBe(true);
});

test("an ImageMagick run stopped after the first part leaves no PDF in the bucket", async () => {
  const png = await encodePng(incompressible(WIDTH, HEIGHT), WIDTH, HEIGHT, 3);
  const conversionId = randomUUID();
  const refused = await small.convert({ imageUrl: await small.upload(png), inputFormat: "png", conversionId }).then(
    () => undefined,
    (error: unknown) => ConnectError.from(error),
  );
  expect(refused?.code).toBe(Code.ResourceExhausted);
  expect(refused?.rawMessage).toMatch(/the PDF would be larger than the limit/);
  expect(await small.store.head(`pdfs/${conversionId}.pdf`)).toBeUndefined();
});
