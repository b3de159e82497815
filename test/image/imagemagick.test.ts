/** The ImageMagick runner on its own: the PDF arguments, and what happens when the process misbehaves. */
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
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

/** Whether process `pid` still runs (a zombie waiting for its parent to reap it counts as gone). */
function running(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

/**
 * A shell that writes its own pid and a child's to a file, then waits for the child (which never ends by itself):
 * what the runner must kill, whole process group included.
 */
function hangingGroup(): { args: string[]; pids: () => number[] } {
  const file = join(mkdtempSync(join(tmpdir(), "mcsv-kill-")), "pids");
  return {
    args: ["-c", 'sleep 300 & echo $! > "$0"; echo $$ >> "$0"; wait', file],
    pids: () => readFileSync(file, "utf8").trim().split("\n").map(Number),
  };
}

async function expectAllGone(pids: number[]): Promise<void> {
  expect(pids).toHaveLength(2);
  const deadline = Date.now() + 5_000;
  while (pids.some(running) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  expect(pids.filter(running)).toEqual([]);
}

test("a process over its time is killed with its whole group and reported as deadline_exceeded", async () => {
  const group = hangingGroup();
  const error = await failure(runImageMagick("sh", group.args, Buffer.alloc(0), { ...options, timeoutMs: 300 }));
  expect(error.code).toBe(Code.DeadlineExceeded);
  await expectAllGone(group.pids());
});

test("an aborted signal kills the process group with the signal's reason", async () => {
  const controller = new AbortController();
  const group = hangingGroup();
  const run = failure(runImageMagick("sh", group.args, Buffer.alloc(0), { ...options, signal: controller.signal }));
  // Once the shell has written both pids, it is waiting for its child.
  while (!existsSync(group.args[2]!) || readFileSync(group.args[2]!, "utf8").trim().split("\n").length < 2) await new Promise((r) => setTimeout(r, 10));
  controller.abort(new ConnectError("client gone", Code.Canceled));
  expect((await run).code).toBe(Code.Canceled);
  await expectAllGone(group.pids());
});

test("output past maxOutputBytes kills the process (resource_exhausted), however long it would write", async () => {
  const file = join(mkdtempSync(join(tmpdir(), "mcsv-kill-")), "pid");
  // An endless writer: only the runner can stop it.
  const error = await failure(runImageMagick("sh", ["-c", 'echo $$ > "$0"; exec cat /dev/zero', file], Buffer.alloc(0), { ...options, maxOutputBytes: 1000 }));
  expect(error.code).toBe(Code.ResourceExhausted);
  const pid = Number(readFileSync(file, "utf8").trim());
  const deadline = Date.now() + 5_000;
  while (running(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  expect(running(pid)).toBe(false);
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
