/**
 * The document writer on the real tools: pages in order with their images' samples exact (pdfimages), page sizes as
 * laid out (pdfinfo), metadata in the Info dictionary and the XMP (pdfinfo, readXmp), the fill layout's clip (a
 * poppler rendering), and PDF/A-2b (checkPdfA2b), still after ocrmypdf adds a text layer.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import sharp from "sharp";
import { inspectPassthrough, preparePassthrough } from "../../services/image/passthrough-pdf.js";
import { PAGE_SIZES, placeImage, type PageLayout, type Placement } from "../../services/image/page-layout.js";
import { pdfaAllows, srgbProfile, writeDocument, type DocumentMetadata, type DocumentPage, type ImageObject } from "../../services/image/pdf-document.js";
import { checkPdfA2b, readXmp } from "../support/pdfa.js";
import { decode, extractImages, gradientPixels, listImages, qpdfCheck, splitAlpha, streamData } from "./support.js";

const run = promisify(execFile);

/** Runs a poppler tool (or ocrmypdf) on the PDF in a temporary directory; `out` names a file it writes there. */
async function withTool(pdf: Buffer, command: string, args: (file: string, dir: string) => string[], out?: string): Promise<{ stdout: string; output?: Buffer }> {
  const dir = mkdtempSync(join(tmpdir(), "mcsv-doc-"));
  try {
    const file = join(dir, "in.pdf");
    writeFileSync(file, pdf);
    const { stdout } = await run(command, args(file, dir), { maxBuffer: 64 * 1024 * 1024, timeout: 120_000 });
    return out === undefined ? { stdout } : { stdout, output: readFileSync(join(dir, out)) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const pdfinfo = async (pdf: Buffer, ...args: string[]) => (await withTool(pdf, "pdfinfo", (file) => [...args, file])).stdout;

/** An image file as the passthrough code makes it an XObject. */
async function imageObject(file: Buffer): Promise<ImageObject> {
  const plan = inspectPassthrough(file);
  if ("declined" in plan) throw new Error(`declined: ${plan.declined}`);
  const prepared = await preparePassthrough(plan);
  if ("declined" in prepared) throw new Error(`declined: ${prepared.declined}`);
  return prepared.image;
}

/** Dark words on white, for OCR to find. */
async function textJpeg(words: string): Promise<Buffer> {
  const white = { r: 255, g: 255, b: 255 };
  const text = await sharp({ text: { text: words, font: "DejaVu Sans 28", dpi: 200 } }).png().toBuffer();
  return sharp(text).negate({ alpha: false }).flatten({ background: white }).extend({ top: 24, bottom: 24, left: 24, right: 24, background: white }).jpeg({ quality: 95 }).toBuffer();
}

const WORDS = "Invoice number 4711";
const METADATA: DocumentMetadata = {
  title: "Ünïcode – 文書",
  author: "Ada (the) \\ Lovelace)",
  subject: `Tags <b> & "quotes" 'here'`,
  keywords: ["alpha", "beta γ"],
  createdAt: new Date("2024-05-06T07:08:09.654Z"),
};
const NOW = new Date("2025-01-02T03:04:05Z");

/** Three pages: a JPEG of words on A4, an RGBA PNG on Letter (alpha as SMask), a tall ICC PNG filling a custom page. */
async function threePages() {
  const jpeg = await textJpeg(WORDS);
  const rgba = await sharp(gradientPixels(120, 160, 4), { raw: { width: 120, height: 160, channels: 4 } }).png().toBuffer();
  const icc = await sharp(gradientPixels(90, 250, 3, 11), { raw: { width: 90, height: 250, channels: 3 } }).withIccProfile("p3").png().toBuffer();
  const layouts: PageLayout[] = [
    { size: PAGE_SIZES.a4, fit: "into", margin: 36, orientation: "auto" },
    { size: PAGE_SIZES.letter, fit: "shrink", margin: 0, orientation: "auto" },
    { size: { width: 300, height: 400 }, fit: "fill", margin: 20, orientation: "auto" },
  ];
  const sources = [jpeg, rgba, icc];
  const pages: DocumentPage[] = [];
  for (const [i, source] of sources.entries()) {
    const image = await imageObject(source);
    pages.push({ image, placement: placeImage(image.width, image.height, layouts[i]!) });
  }
  return { sources, pages };
}

let document: Awaited<ReturnType<typeof threePages>>;
let pdfa: Buffer;

beforeAll(async () => {
  document = await threePages();
  pdfa = writeDocument(document.pages, { metadata: METADATA, pdfa: true, outputProfile: await srgbProfile(), now: NOW });
});

test("one page per image, in order, every image's samples exact", async () => {
  expect(await qpdfCheck(pdfa)).toMatch(/No syntax or stream encoding errors/);
  const [jpeg, rgba, icc] = document.sources as [Buffer, Buffer, Buffer];
  const jpegSize = await sharp(jpeg).metadata();
  const listedImages = await listImages(pdfa);
  const listed = listedImages.map(({ type, width, height, color, enc }) => [type, width, height, color, enc]);
  expect(listed).toEqual([
    ["image", jpegSize.width, jpegSize.height, "rgb", "jpeg"],
    ["image", 120, 160, "rgb", "image"],
    ["smask", 120, 160, "gray", "image"],
    ["image", 90, 250, "icc", "image"],
  ]);
  const pages = (await withTool(pdfa, "pdfimages", (file) => ["-list", file])).stdout.split("\n").slice(2).filter(Boolean);
  expect(pages.map((line) => line.trim().split(/\s+/)[0])).toEqual(["1", "2", "2", "3"]);

  // The pixels as pdfimages extracts them and as sharp decodes the sources.
  const extracted = await extractImages(pdfa);
  expect((await decode(extracted[0]!)).data.equals((await decode(jpeg)).data)).toBe(true);
  const { rgb, alpha } = splitAlpha((await decode(rgba)).data);
  expect((await decode(extracted[1]!)).data.equals(rgb)).toBe(true);
  // pdfimages writes the soft mask as a grey PNG that sharp decodes to three equal channels: one is the alpha.
  expect((await sharp(extracted[2]).extractChannel(0).raw().toBuffer()).equals(alpha)).toBe(true);
  // pdfimages converts an ICC-based image to sRGB, so its stored samples are compared instead (qpdf undoes the
  // predictors), and its profile is the source's.
  const iccImage = listedImages[3]!.objectId;
  expect((await streamData(pdfa, iccImage)).equals((await decode(icc, { ignoreIcc: true })).data)).toBe(true);
  const dictionary = (await withTool(pdfa, "qpdf", (file) => [`--show-object=${iccImage}`, file])).stdout;
  const profile = Number(/\/ICCBased (\d+) 0 R/.exec(dictionary)?.[1]);
  expect((await streamData(pdfa, profile)).equals((await sharp(icc).metadata()).icc!)).toBe(true);
});

test("every page has its layout's size: A4 turned for a wide image, Letter, and the custom page", async () => {
  const info = await pdfinfo(pdfa, "-f", "1", "-l", "3");
  const sizes = [...info.matchAll(/^Page\s+(\d+) size:\s+([\d.]+) x ([\d.]+) pts(?: \((\w+)\))?/gm)].map((m) => ({ page: Number(m[1]), width: Number(m[2]), height: Number(m[3]), name: m[4] }));
  expect(sizes.map((s) => s.page)).toEqual([1, 2, 3]);
  document.pages.forEach(({ placement }, i) => {
    expect(sizes[i]!.width).toBeCloseTo(placement.pageWidth, 3);
    expect(sizes[i]!.height).toBeCloseTo(placement.pageHeight, 3);
  });
  expect(sizes.map((s) => s.name)).toEqual(["A4", "letter", undefined]);
  // The wide page of words is landscape A4.
  expect([sizes[0]!.width, sizes[0]!.height]).toEqual([PAGE_SIZES.a4.height, PAGE_SIZES.a4.width]);
});

test("each page draws its image where the layout puts it; fill clips to the box, so the margins stay white", async () => {
  // The writer leaves content streams uncompressed: each page's is in the file as it is, in page order.
  const contents = pdfa.toString("latin1").match(/^q .* \/Im0 Do Q$/gm);
  const number = (n: number) => String(Math.round(n * 1000) / 1000);
  const expected = document.pages.map(({ placement: p }: { placement: Placement }) => {
    const clip = p.clip ? `${[p.clip.x, p.clip.y, p.clip.width, p.clip.height].map(number).join(" ")} re W n ` : "";
    return `q ${clip}${number(p.width)} 0 0 ${number(p.height)} ${number(p.x)} ${number(p.y)} cm /Im0 Do Q`;
  });
  expect(contents).toEqual(expected);
  const fill = document.pages[2]!.placement;
  expect(fill.clip).toBeDefined();
  expect(fill.height).toBeGreaterThan(fill.clip!.height); // The tall image overflows the box above and below.

  // Rendered at 72 dpi (a pixel a point): the margin above and below the box is white, the box is the image.
  const { output } = await withTool(pdfa, "pdftoppm", (file, dir) => ["-f", "3", "-l", "3", "-r", "72", "-png", "-singlefile", file, join(dir, "page")], "page.png");
  const page = await decode(output!);
  expect([page.width, page.height]).toEqual([fill.pageWidth, fill.pageHeight]);
  const row = (y: number) => page.data.subarray(y * page.width * page.channels, (y + 1) * page.width * page.channels);
  const margin = fill.clip!.y;
  for (const y of [2, margin - 3, page.height - margin + 2, page.height - 3]) expect(row(y).every((v) => v === 255)).toBe(true);
  const middle = row(page.height / 2).subarray((margin + 5) * page.channels, (page.width - margin - 5) * page.channels);
  expect(middle.some((v) => v !== 255)).toBe(true);
});

test("the metadata is in the Info dictionary, as text strings of any script, and in the XMP, the same", async () => {
  const info = await pdfinfo(pdfa, "-isodates");
  const field = (name: string) => new RegExp(`^${name}:\\s+(.*)$`, "m").exec(info)?.[1];
  expect(field("Title")).toBe(METADATA.title);
  expect(field("Author")).toBe(METADATA.author);
  expect(field("Subject")).toBe(METADATA.subject);
  expect(field("Keywords")).toBe(METADATA.keywords!.join(", "));
  expect(field("Producer")).toBe("mcsv");
  const created = `${METADATA.createdAt!.toISOString().slice(0, 19)}Z`;
  expect(field("CreationDate")).toBe(created);
  expect(field("ModDate")).toBe(created);

  const xmp = (await readXmp(pdfa))!;
  expect(xmp).toMatchObject({
    "dc:format": "application/pdf",
    "dc:title": METADATA.title,
    "dc:creator": [METADATA.author],
    "dc:description": METADATA.subject,
    "pdf:Keywords": "alpha, beta γ",
    "pdf:Producer": "mcsv",
    "pdfaid:part": "2",
    "pdfaid:conformance": "B",
  });
  const instant = (value: unknown) => new Date(String(value)).getTime();
  expect(instant(xmp["xmp:CreateDate"])).toBe(Math.floor(METADATA.createdAt!.getTime() / 1000) * 1000);
  expect(instant(xmp["xmp:ModifyDate"])).toBe(instant(xmp["xmp:CreateDate"]));
  expect(instant(xmp["xmp:MetadataDate"])).toBe(NOW.getTime());
});

test("without metadata or PDF/A: no XMP, but the Info dictionary (producer, creation date now) and a file identifier", async () => {
  const plain = writeDocument(document.pages.slice(0, 1), { now: NOW });
  expect(await readXmp(plain)).toBeUndefined();
  const info = await pdfinfo(plain, "-isodates");
  expect(info).toMatch(/^Producer:\s+mcsv$/m);
  expect(info).toMatch(new RegExp(`^CreationDate:\\s+${NOW.toISOString().slice(0, 19)}Z$`, "m"));
  expect(info).not.toMatch(/^Title:/m);
  const id = /\/ID \[<([0-9A-F]{32})> <([0-9A-F]{32})>\]/.exec(plain.toString("latin1"));
  expect(id?.[1]).toBe(id?.[2]);
  // The identifier follows the content: the same document twice is the same file, another title another identifier.
  expect(writeDocument(document.pages.slice(0, 1), { now: NOW }).equals(plain)).toBe(true);
  const titled = writeDocument(document.pages.slice(0, 1), { now: NOW, metadata: { title: "Other" } }).toString("latin1");
  expect(/\/ID \[<([0-9A-F]{32})>/.exec(titled)?.[1]).not.toBe(id?.[1]);
});

test("text the XML cannot carry is left out of both the Info dictionary and the XMP, alike", async () => {
  const pdf = writeDocument(document.pages.slice(1, 2), { metadata: { title: "a\u0001b\u001fc\ud800d" }, now: NOW });
  expect(/^Title:\s+(.*)$/m.exec(await pdfinfo(pdf))?.[1]).toBe("abcd");
  expect((await readXmp(pdf))?.["dc:title"]).toBe("abcd");
});

test("PDF/A-2b: passes the checks, and still does once ocrmypdf has added a text layer", async () => {
  expect(await checkPdfA2b(pdfa)).toEqual([]);
  const { output: ocred } = await withTool(pdfa, "ocrmypdf", (file, dir) => ["--output-type", "pdf", "--optimize", "0", "-l", "eng", "--quiet", file, join(dir, "out.pdf")], "out.pdf");
  // The text layer's font is there (and embedded, as checkPdfA2b requires), and the words can be found.
  expect((await withTool(ocred!, "pdffonts", (file) => [file])).stdout.split("\n").length).toBeGreaterThan(3);
  expect((await withTool(ocred!, "pdftotext", (file) => [file, "-"])).stdout).toContain(WORDS);
  expect(await checkPdfA2b(ocred!)).toEqual([]);
}, 120_000);

describe("the PDF/A-2b check finds what is wrong", () => {
  test("a plain document: no identification, no output intent", async () => {
    const problems = await checkPdfA2b(writeDocument(document.pages, { metadata: METADATA, now: NOW }));
    expect(problems).toEqual([expect.stringMatching(/pdfaid:part/), expect.stringMatching(/pdfaid:conformance/), expect.stringMatching(/OutputIntent/)]);
    expect(await checkPdfA2b(writeDocument(document.pages, { now: NOW }))).toEqual([expect.stringMatching(/no XMP/), expect.stringMatching(/OutputIntent/)]);
  });

  // Edits that keep every byte offset, so that the file stays sound and only the one fault is there.
  const edited = (pdf: Buffer, from: string, to: string) => {
    expect(to.length).toBe(from.length);
    const text = pdf.toString("latin1");
    expect(text.split(from)).toHaveLength(2);
    return Buffer.from(text.replace(from, to), "latin1");
  };

  test("an Info entry that the XMP does not repeat", async () => {
    const pdf = writeDocument(document.pages, { metadata: { ...METADATA, title: "Plain title" }, pdfa: true, outputProfile: await srgbProfile(), now: NOW });
    expect(await checkPdfA2b(edited(pdf, "/Title (Plain title)", "/Title (Other title)"))).toEqual([expect.stringMatching(/Info Title "Other title" differs from XMP dc:title "Plain title"/)]);
  });

  test("a device CMYK image under the sRGB output intent, and a header without its binary comment", async () => {
    const cmyk = edited(pdfa, "/ColorSpace /DeviceRGB /BitsPerComponent 8 /Filter /DCTDecode", "/ColorSpace /DeviceCMYK/BitsPerComponent 8 /Filter /DCTDecode");
    expect(await checkPdfA2b(cmyk)).toEqual([expect.stringMatching(/is DeviceCMYK under a 3-component output intent/)]);
    expect(await checkPdfA2b(edited(pdfa, "%PDF-1.7\n%\xe2\xe3\xcf\xd3", "%PDF-1.7\n%abcd"))).toEqual([expect.stringMatching(/four bytes above 127/)]);
  });
});

test("PDF/A refuses device CMYK (an ICC-based CMYK image is fine), and needs the output profile", async () => {
  const orange = sharp({ create: { width: 16, height: 8, channels: 3, background: "#f80" } }).toColourspace("cmyk");
  const deviceCmyk = await imageObject(await orange.clone().jpeg().toBuffer());
  const iccCmyk = await imageObject(await orange.clone().withIccProfile("cmyk").jpeg().toBuffer());
  expect(deviceCmyk.colorSpace).toBe("/DeviceCMYK");
  expect(pdfaAllows(deviceCmyk)).toBe(false);
  expect(pdfaAllows(iccCmyk)).toBe(true);
  expect(document.pages.every((page) => pdfaAllows(page.image))).toBe(true);

  const outputProfile = await srgbProfile();
  const page = (image: ImageObject) => ({ image, placement: placeImage(image.width, image.height, { size: PAGE_SIZES.a4, fit: "into", margin: 0, orientation: "auto" }) });
  expect(() => writeDocument([document.pages[0]!, page(deviceCmyk)], { pdfa: true, outputProfile })).toThrow(/page 2: .*DeviceCMYK/);
  expect(await checkPdfA2b(writeDocument([page(iccCmyk)], { pdfa: true, outputProfile }))).toEqual([]);
  // Without PDF/A, device CMYK is written as it is.
  expect((await listImages(writeDocument([page(deviceCmyk)])))[0]?.color).toBe("cmyk");
  expect(() => writeDocument(document.pages, { pdfa: true })).toThrow(/output intent/);
  expect(() => writeDocument([])).toThrow(/at least one page/);
});

test("the output intent's profile is libvips' sRGB, an RGB display profile, made once", async () => {
  const profile = await srgbProfile();
  expect(profile.toString("latin1", 36, 40)).toBe("acsp");
  expect(profile.toString("latin1", 12, 20)).toBe("mntrRGB ");
  expect(await srgbProfile()).toBe(profile);
});
