/**
 * The image service's documents (ConvertDocument, and ConvertImage with document options) on the real s3rver,
 * ImageMagick and ocrmypdf: progress page by page on the stream, the layout applied by both engines, the limits,
 * PDF/A's colour rule, and OCR refused with failed_precondition where it cannot run.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { Code, ConnectError } from "@connectrpc/connect";
import { PageFit, PageSize, PdfEngine, Quality, type ImageServiceConvertDocumentResponse } from "@mcsv/sdk";
import sharp from "sharp";
import { startImageHarness, type ImageHarness } from "./support.js";
import { pdfInfo, photoLikePng } from "../support/pdf.js";
import { checkPdfA2b } from "../support/pdfa.js";

const run = promisify(execFile);
let harness: ImageHarness;

beforeAll(async () => {
  harness = await startImageHarness({ DOCUMENT_MAX_PAGES: "3", DOCUMENT_MAX_PIXELS: "200000" });
}, 60_000);

afterAll(async () => {
  await harness?.stop();
});

async function pages(images: Uint8Array[], format = "png") {
  return Promise.all(images.map(async (image) => ({ imageUrl: await harness.upload(image), inputFormat: format })));
}

async function convertDocument(request: Parameters<ImageHarness["client"]["convertDocument"]>[0]): Promise<ImageServiceConvertDocumentResponse[]> {
  const steps: ImageServiceConvertDocumentResponse[] = [];
  for await (const step of harness.client.convertDocument(request)) steps.push(step);
  return steps;
}

const download = async (url: string) => new Uint8Array(await (await fetch(url)).arrayBuffer());

test("ConvertDocument streams page k of n, then the stored PDF", async () => {
  const images = [await photoLikePng(60, 40), await photoLikePng(40, 60), await photoLikePng(50, 50)];
  const steps = await convertDocument({ conversionId: crypto.randomUUID(), pages: await pages(images), options: { quality: Quality.LOSSLESS } });
  expect(steps.map((s) => [s.pagesDone, s.pageCount, s.result !== undefined])).toEqual([
    [1, 3, false],
    [2, 3, false],
    [3, 3, false],
    [3, 3, true],
  ]);
  const result = steps.at(-1)!.result!;
  expect(result.pageCount).toBe(3);
  expect([result.width, result.height]).toEqual([60, 40]);
  const pdf = await download(result.pdfUrl);
  expect(Number(result.outputSize)).toBe(pdf.byteLength);
  // Each page its image's own size, with no layout asked for.
  expect((await pdfInfo(pdf)).pageSizes).toEqual([
    [60, 40],
    [40, 60],
    [50, 50],
  ]);
});

test.each([
  ["passthrough", PdfEngine.PASSTHROUGH],
  ["imagemagick", PdfEngine.IMAGEMAGICK],
])("both engines lay a page out alike (%s): a Letter page, fitted into its margins", async (_name, engine) => {
  const [page] = await pages([await sharp({ create: { width: 400, height: 100, channels: 3, background: "#336699" } }).jpeg().toBuffer()], "jpeg");
  const steps = await convertDocument({
    conversionId: crypto.randomUUID(),
    pages: [page!],
    options: { quality: Quality.HIGH, engine, layout: { size: PageSize.LETTER, fit: PageFit.INTO, margin: 36 } },
  });
  const pdf = await download(steps.at(-1)!.result!.pdfUrl);
  expect((await pdfInfo(pdf)).pageSizes).toEqual([[792, 612]]);
  // The image's box: 720 points wide inside the margins, 180 high (its aspect kept), centred.
  const dir = mkdtempSync(join(tmpdir(), "mcsv-doc-"));
  try {
    writeFileSync(join(dir, "in.pdf"), pdf);
    const { stdout } = await run("qpdf", ["--qdf", "--object-streams=disable", join(dir, "in.pdf"), "-"], { encoding: "latin1", maxBuffer: 64 * 1024 * 1024 });
    expect(stdout).toMatch(/\b720 0 0 180 36 216 cm\b/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a CMYK JPEG in a PDF/A document goes through ImageMagick, so that its colours fit the sRGB output intent", async () => {
  const cmyk = await sharp({ create: { width: 64, height: 48, channels: 3, background: "#cc3311" } }).toColourspace("cmyk").jpeg().toBuffer();
  expect((await sharp(cmyk).metadata()).space).toBe("cmyk");
  const steps = await convertDocument({ conversionId: crypto.randomUUID(), pages: await pages([cmyk], "jpeg"), options: { engine: PdfEngine.PASSTHROUGH, pdfa: true } });
  const result = steps.at(-1)!.result!;
  expect(result.engine).toBe(PdfEngine.IMAGEMAGICK);
  expect(await checkPdfA2b(Buffer.from(await download(result.pdfUrl)))).toEqual([]);
});

describe("limits", () => {
  test("more pages than DOCUMENT_MAX_PAGES: invalid_argument", async () => {
    const png = await photoLikePng(8, 8);
    const error = await convertDocument({ conversionId: crypto.randomUUID(), pages: await pages([png, png, png, png]) }).catch((e: unknown) => e);
    expect(ConnectError.from(error).code).toBe(Code.InvalidArgument);
    expect(ConnectError.from(error).rawMessage).toMatch(/pages: must name at most 3 pages/);
  });

  test("more pixels together than DOCUMENT_MAX_PIXELS: resource_exhausted, and no PDF stored", async () => {
    const png = await photoLikePng(300, 300);
    const conversionId = crypto.randomUUID();
    const error = await convertDocument({ conversionId, pages: await pages([png, png, png]) }).catch((e: unknown) => e);
    expect(ConnectError.from(error).code).toBe(Code.ResourceExhausted);
    expect(await harness.store.head(`pdfs/${conversionId}.pdf`)).toBeUndefined();
  });

  test("OCR in a language not installed: failed_precondition naming the installed ones, before any page", async () => {
    const error = await convertDocument({ conversionId: crypto.randomUUID(), pages: await pages([await photoLikePng(8, 8)]), options: { ocrLanguages: ["tlh"] } }).catch((e: unknown) => e);
    expect(ConnectError.from(error).code).toBe(Code.FailedPrecondition);
    expect(ConnectError.from(error).rawMessage).toMatch(/"tlh" is not installed here; installed: .*eng/);
  });
});

test("where OCR is not installed, a request for it is failed_precondition, and readiness says so without failing", async () => {
  const bare = await startImageHarness({ OCR_COMMAND: "/nonexistent/ocrmypdf" });
  try {
    const page = await bare.upload(await photoLikePng(8, 8));
    const error = await bare.client.convertImage({ conversionId: crypto.randomUUID(), imageUrl: page, inputFormat: "png", options: { ocrLanguages: ["eng"] } }).catch((e: unknown) => e);
    expect(ConnectError.from(error).code).toBe(Code.FailedPrecondition);
    expect(ConnectError.from(error).rawMessage).toMatch(/OCR is not available/);
    const readiness = await fetch(`${bare.service.url}/health/ready`);
    expect(readiness.status).toBe(200);
    expect(((await readiness.json()) as { checks: Record<string, string> }).checks["ocr"]).toMatch(/not available|not installed/);
  } finally {
    await bare.stop();
  }
}, 60_000);
