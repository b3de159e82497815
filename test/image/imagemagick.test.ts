/** The ImageMagick runner on its own: the PDF arguments, and what happens when the process misbehaves. */
import { Code, ConnectError } from "@connectrpc/connect";
import { Quality } from "@mcsv/sdk";
import { detectImageMagickCommand, ImageMagickPdfRenderer, pdfArguments, runImageMagick } from "../../services/image/imagemagick.js";
import { qualityPreset } from "../../services/image/quality.js";
import { decode, extractImages, gradientPixels, pageSize, qpdfCheck } from "./support.js";

const limits = { memory: "256MiB", map: "512MiB", disk: "0", timeSeconds: 30 };
const command = detectImageMagickCommand();
const options = { timeoutMs: 30_000, maxOutputBytes: 64 * 1024 * 1024 };

const failure = (promise: Promise<unknown>) =>
  promise.then(
    () => {
      throw new Error("it succeeded");
    },
    (e: unknown) => ConnectError.from(e),
  );

test("runs the service's arguments on a buffer (as a benchmark would) and writes an exact lossless PDF", async () => {
  const pixels = gradientPixels(20, 10, 3);
  const image = { encoding: "raw" as const, width: 20, height: 10, channels: 3 as const };
  const args = pdfArguments(image, qualityPreset(Quality.LOSSLESS)!, limits);
  expect(args).toEqual(expect.arrayContaining(["-size", "20x10", "rgb:-", "pdf:-", "-compress", "Zip"]));
  const pdf = await runImageMagick(command, args, pixels, options);
  await qpdfCheck(pdf);
  expect((await decode((await extractImages(pdf))[0]!)).data.equals(pixels)).toBe(true);
});

test("a very long image gets a page no viewer refuses (at most 200 inches), its pixels untouched", async () => {
  const pixels = gradientPixels(15_000, 2, 3);
  const args = pdfArguments({ encoding: "raw", width: 15_000, height: 2, channels: 3 }, qualityPreset(Quality.LOSSLESS)!, limits);
  const pdf = await runImageMagick(command, args, pixels, options);
  const page = await pageSize(pdf);
  expect(page.width).toBeLessThanOrEqual(14_400);
  expect(page.width / page.height).toBeCloseTo(7_500, -1);
  expect((await decode((await extractImages(pdf))[0]!)).data.equals(pixels)).toBe(true);
});

test("a non-zero exit is an internal error carrying a summary of stderr", async () => {
  const error = await failure(runImageMagick(command, ["-size", "4x4", "-depth", "8", "rgb:-", "pdf:-"], Buffer.alloc(5), options));
  expect(error.code).toBe(Code.Internal);
  expect(error.rawMessage).toMatch(/^ImageMagick failed \(exit code \d+\): .+/);
});

test("an image beyond ImageMagick's width limit is refused as invalid, not as our failure", async () => {
  const wide = pdfArguments({ encoding: "raw", width: 20_000, height: 2, channels: 3 }, qualityPreset(Quality.LOSSLESS)!, limits);
  const tooWide = await failure(runImageMagick(command, ["-limit", "width", "16384", ...wide], Buffer.alloc(20_000 * 2 * 3), options));
  expect(tooWide.code).toBe(Code.InvalidArgument);
  expect(tooWide.rawMessage).toMatch(/width or height exceeds limit/);
});

test("a process over its time is killed and reported as deadline_exceeded", async () => {
  const error = await failure(runImageMagick("sh", ["-c", "sleep 30"], Buffer.alloc(0), { ...options, timeoutMs: 50 }));
  expect(error.code).toBe(Code.DeadlineExceeded);
});

test("an aborted signal kills the process with the signal's reason", async () => {
  const controller = new AbortController();
  const running = failure(runImageMagick("sh", ["-c", "sleep 30"], Buffer.alloc(0), { ...options, signal: controller.signal }));
  controller.abort(new ConnectError("client gone", Code.Canceled));
  expect((await running).code).toBe(Code.Canceled);
});

test("output past maxOutputBytes kills the process (resource_exhausted)", async () => {
  const error = await failure(runImageMagick("sh", ["-c", "head -c 1000000 /dev/zero"], Buffer.alloc(0), { ...options, maxOutputBytes: 1000 }));
  expect(error.code).toBe(Code.ResourceExhausted);
});

test("a command that does not exist is an internal error, and readiness probes again after a failure", async () => {
  const error = await failure(runImageMagick("/nonexistent/magick", [], Buffer.alloc(0), options));
  expect(error.code).toBe(Code.Internal);
  const renderer = new ImageMagickPdfRenderer({ command: "/nonexistent/magick", limits, timeoutMs: 5_000, maxOutputBytes: 1_000_000 });
  await expect(renderer.ready()).rejects.toThrow(/cannot write a PDF/);
  await expect(renderer.ready()).rejects.toThrow(/cannot write a PDF/);
  const working = new ImageMagickPdfRenderer({ command, limits, timeoutMs: 30_000, maxOutputBytes: 1_000_000 });
  await expect(working.ready()).resolves.toBeUndefined();
});
