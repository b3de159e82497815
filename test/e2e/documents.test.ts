/**
 * Documents across the five real processes: several images into one PDF (ConvertDocument), laid out on A4, with
 * metadata, PDF/A-2b and searchable text by the real ocrmypdf, checked with qpdf, poppler and the PDF/A checks of
 * test/support/pdfa.ts; progress page by page through WatchConversion; and the limits.
 */
import { spawnSync } from "node:child_process";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { ConversionState, PageFit, PageSize, PdfEngine, Quality, UserService, ValidationErrorSchema, type Conversion } from "@mcsv/sdk";
import sharp from "sharp";
import { extractImages, pageImages, pdfInfo, pdfText, photoLikePng, qpdfCheck, type RawImage } from "../support/pdf.js";
import { checkPdfA2b, readXmp } from "../support/pdfa.js";
import { startTestSystem, type TestSystem } from "../support/system.js";

let system: TestSystem;

/** Small limits, so that the limit tests need no large images. */
const MAX_PAGES = 4;
const MAX_PIXELS = 400_000;

beforeAll(async () => {
  system = await startTestSystem({ DOCUMENT_MAX_PAGES: String(MAX_PAGES), DOCUMENT_MAX_PIXELS: String(MAX_PIXELS) });
}, 120_000);

afterAll(async () => {
  await system?.close();
});

/** A page of printed text, drawn by ImageMagick with a real font (what a scan of a receipt looks like to OCR). */
function textImage(text: string): Buffer {
  const drawn = spawnSync("convert", ["-size", "900x300", "xc:white", "-font", "DejaVu-Sans", "-pointsize", "40", "-fill", "black", "-annotate", "+40+160", text, "png:-"], {
    maxBuffer: 16 * 1024 * 1024,
  });
  if (drawn.status !== 0) throw new Error(`convert failed: ${drawn.stderr.toString()}`);
  return drawn.stdout;
}

/** Watches the conversion to its end; returns every snapshot. */
async function watch(id: string): Promise<Conversion[]> {
  const seen: Conversion[] = [];
  for await (const update of system.client(UserService, "user").watchConversion({ conversionId: id })) seen.push(update.conversion!);
  return seen;
}

/** An extracted image's pixels as 8-bit RGB: a grey image may be stored with one channel, its pixels the same. */
const rgbOf = (image: RawImage) =>
  sharp(image.data, { raw: { width: image.width, height: image.height, channels: image.channels as 1 | 3 | 4 } }).toColourspace("srgb").removeAlpha().raw().toBuffer();

const download = async (conversion: Conversion) => new Uint8Array(await (await fetch(conversion.pdfUrl)).arrayBuffer());

test.each([
  ["passthrough", PdfEngine.PASSTHROUGH],
  ["imagemagick", PdfEngine.IMAGEMAGICK],
])("three images become one A4 PDF/A-2b with metadata and searchable text (%s engine), page by page", async (_name, engine) => {
  const users = system.client(UserService, "user");
  // Three sizes, so that the order is visible in pdfimages' listing.
  const sources = [await photoLikePng(300, 200), textImage("Invoice number 4711 total amount"), await photoLikePng(120, 160, 4)];
  const created = new Date("2024-05-06T07:08:09Z");
  const { conversion } = await users.convertDocument({
    userEmail: "scans@example.com",
    filename: "scans.pdf",
    images: sources.map((png) => ({ source: { case: "imageData", value: png } })),
    options: {
      quality: Quality.LOSSLESS,
      engine,
      layout: { size: PageSize.A4, fit: PageFit.INTO, margin: 36 },
      metadata: { title: "Scans – März", author: "Grace Hopper", subject: "Receipts", keywords: ["receipts", "2024"], createdAt: timestampFromDate(created) },
      pdfa: true,
      ocrLanguages: ["eng"],
    },
  });
  expect(conversion?.pageCount).toBe(3);
  expect(conversion?.inputFormat).toBe("png");

  const snapshots = await watch(conversion!.id);
  const done = snapshots.at(-1)!;
  expect(done.state).toBe(ConversionState.SUCCEEDED);
  // Progress moves forward page by page: every snapshot says "page k of 3", and k never goes back.
  const progress = snapshots.map((s) => s.pagesDone);
  expect([...progress].sort()).toEqual(progress);
  expect(snapshots.every((s) => s.pageCount === 3)).toBe(true);
  expect(done.pagesDone).toBe(3);
  expect(done.text?.languages).toEqual(["eng"]);
  expect(done.text?.wordCount).toBeGreaterThanOrEqual(5);

  const pdf = await download(done);
  expect(await qpdfCheck(pdf)).toMatch(/No syntax or stream encoding errors/);
  // One image a page, in order, with the sources' pixels exactly (LOSSLESS); the third's alpha is its SMask.
  expect(await pageImages(pdf)).toEqual([
    { page: 1, width: 300, height: 200 },
    { page: 2, width: 900, height: 300 },
    { page: 3, width: 120, height: 160 },
  ]);
  // pdfimages lists each page's image, the third's alpha (its SMask) after it.
  const [first, second, third, alpha] = await extractImages(pdf);
  for (const [embedded, source] of [
    [first!, sources[0]!],
    [second!, sources[1]!],
    [third!, sources[2]!],
  ] as const) {
    expect((await rgbOf(embedded)).equals(await sharp(source).removeAlpha().toColourspace("srgb").raw().toBuffer())).toBe(true);
  }
  const embeddedAlpha = await sharp(alpha!.data, { raw: { width: alpha!.width, height: alpha!.height, channels: alpha!.channels as 1 | 3 } }).extractChannel(0).raw().toBuffer();
  expect(embeddedAlpha.equals(await sharp(sources[2]!).extractChannel(3).raw().toBuffer())).toBe(true);

  // Every page is A4, whatever its image's size, turned to landscape for an image wider than tall (orientation auto).
  const info = await pdfInfo(pdf);
  expect(info.pageSizes.map(([w, h]) => [Math.round(w), Math.round(h)])).toEqual([
    [842, 595],
    [842, 595],
    [595, 842],
  ]);
  // The metadata, back through the Info dictionary and the XMP.
  expect(info.entries).toMatchObject({ Title: "Scans – März", Author: "Grace Hopper", Subject: "Receipts", Keywords: "receipts, 2024" });
  const xmp = (await readXmp(Buffer.from(pdf)))!;
  expect([xmp["dc:title"], xmp["dc:creator"], xmp["dc:description"], xmp["pdf:Keywords"]].map(String)).toEqual(["Scans – März", "Grace Hopper", "Receipts", "receipts, 2024"]);
  expect(new Date(String(xmp["xmp:CreateDate"])).toISOString()).toBe(created.toISOString());
  // Searchable: the words drawn into the second page come back as text.
  expect((await pdfText(pdf)).split(/\s+/).join(" ")).toMatch(/Invoice number 4711 total amount/);
  expect(await checkPdfA2b(Buffer.from(pdf))).toEqual([]);
}, 120_000);

test("ConvertImage takes the document options too: one image on a Letter page, with a title", async () => {
  const users = system.client(UserService, "user");
  const { conversion } = await users.convertImage({
    userEmail: "letter@example.com",
    source: { case: "imageData", value: await photoLikePng(200, 100) },
    options: { quality: Quality.LOSSLESS, layout: { size: PageSize.LETTER, fit: PageFit.FILL }, metadata: { title: "One page" } },
  });
  expect(conversion?.pageCount).toBe(1);
  const done = (await watch(conversion!.id)).at(-1)!;
  expect(done.state).toBe(ConversionState.SUCCEEDED);
  const info = await pdfInfo(await download(done));
  // An image wider than tall turns the page (orientation auto).
  expect(info.pageSizes).toEqual([[792, 612]]);
  expect(info.title).toBe("One page");
}, 60_000);

describe("limits and bad requests", () => {
  const fieldsOf = (error: unknown) =>
    ConnectError.from(error)
      .findDetails(ValidationErrorSchema)
      .flatMap((d) => d.violations.map((v) => v.field));

  test("more pages than DOCUMENT_MAX_PAGES is invalid_argument naming images", async () => {
    const png = await photoLikePng(8, 8);
    const error = await system
      .client(UserService, "user")
      .convertDocument({ userEmail: "many@example.com", images: Array.from({ length: MAX_PAGES + 1 }, () => ({ source: { case: "imageData", value: png } })) })
      .catch((e: unknown) => e);
    expect(ConnectError.from(error).code).toBe(Code.InvalidArgument);
    expect(fieldsOf(error)).toContain("images");
  });

  test("more pixels together than DOCUMENT_MAX_PIXELS is resource_exhausted, and stores nothing", async () => {
    // Each image is within every single-image limit; the three together are not.
    const png = await photoLikePng(400, 400);
    const error = await system
      .client(UserService, "user")
      .convertDocument({ userEmail: "big@example.com", images: [png, png, png].map((value) => ({ source: { case: "imageData", value } })) })
      .catch((e: unknown) => e);
    expect(ConnectError.from(error).code).toBe(Code.ResourceExhausted);
    expect(ConnectError.from(error).rawMessage).toMatch(/pixels together/);
    const { conversions } = await system.client(UserService, "user").listConversions({ userEmail: "big@example.com" });
    expect(conversions).toEqual([]);
  });

  test("every bad document field is named at once", async () => {
    const error = await system
      .client(UserService, "user")
      .convertDocument({
        userEmail: "bad@example.com",
        images: [{ source: { case: "imageData", value: new Uint8Array() } }, { source: { case: undefined } }],
        options: {
          layout: { size: PageSize.CUSTOM, customWidth: 10, customHeight: 100_000, margin: -1 },
          metadata: { title: "x".repeat(501), keywords: ["a,b", ""] },
          ocrLanguages: ["English"],
        },
      })
      .catch((e: unknown) => e);
    expect(ConnectError.from(error).code).toBe(Code.InvalidArgument);
    expect(fieldsOf(error).sort()).toEqual(
      [
        "images[0].imageData",
        "images[1].imageData",
        "options.layout.customWidth",
        "options.layout.customHeight",
        "options.layout.margin",
        "options.metadata.title",
        "options.metadata.keywords[0]",
        "options.metadata.keywords[1]",
        "options.ocrLanguages[0]",
      ].sort(),
    );
  });

  test("OCR in a language that is not installed fails the conversion with failed_precondition's reason", async () => {
    const users = system.client(UserService, "user");
    const { conversion } = await users.convertDocument({
      userEmail: "klingon@example.com",
      images: [{ source: { case: "imageData", value: await photoLikePng(16, 16) } }],
      options: { ocrLanguages: ["tlh"] },
    });
    const done = (await watch(conversion!.id)).at(-1)!;
    expect(done.state).toBe(ConversionState.FAILED);
    expect(done.error).toMatch(/OCR language "tlh" is not installed here; installed: .*eng/);
  }, 60_000);
});
