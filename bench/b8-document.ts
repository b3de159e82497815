/**
 * B8: a ten-page document of photos on A4, the image fitted into a 36-point margin. mcsv's passthrough document path,
 * in-process as the image service runs it page by page (services/image/document-pipeline.ts: read the file,
 * `inspectPassthrough` + `preparePassthrough`, `placeImage`; then `writeDocument` once), against Debian's img2pdf with
 * the same layout (`--pagesize A4 --border 36pt:36pt --fit into --auto-orient`), spawned once per document with the
 * ten files on its command line. Both start from the same files on disk and end with the PDF in memory; the two
 * alternate within each round (order swapped every round) after one untimed document each.
 *
 * The ten images are made with sharp at start (photoLikePixels with a seed per page, no binary fixtures): JPEGs
 * (4:4:4 and 4:2:0), opaque RGB and grey PNGs and RGBA PNGs, landscape and portrait, 1.9–4.3 MP each (a tenth of the
 * pixels with --quick). Every PNG is written with its IDAT data in one chunk, for both tools (img2pdf joins many
 * chunks one by one, which is quadratic; see B6).
 *
 * "The same pixels": each page's image (and soft mask) through `pdfimages -png` is equal in both PDFs, `pdfimages
 * -list` gives both the same images per page (size, colour, bits, and the same resolution on the page, i.e. the same
 * drawn size), `pdfinfo` the same page sizes; and mcsv's pages hold exactly the originals' pixels (libvips' decoding).
 */
import { spawn } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { PAGE_SIZES, placeImage, type PageLayout } from "../services/image/page-layout.js";
import { writeDocument, type DocumentPage } from "../services/image/pdf-document.js";
import { inspectPassthrough, preparePassthrough } from "../services/image/passthrough-pdf.js";
import type { BenchOptions } from "./lib/context.js";
import { photoLikePixels, withOneIdat } from "./lib/images.js";
import { median, round } from "./lib/stats.js";

type Tool = "mcsv" | "img2pdf";
type Kind = "jpeg-444" | "jpeg-420" | "png-rgb" | "png-grey" | "png-rgba";

export interface B8Page {
  name: string;
  kind: Kind;
  width: number;
  height: number;
  inputBytes: number;
  /** How the passthrough path took it ("dct", "png-idat", "png-split"). */
  mode: string;
  /** mcsv's median time for this page: reading the file, inspecting and preparing it, placing it. */
  mcsvMs?: number;
}

/** One image `pdfimages -list` reports. */
interface ListedImage {
  page: number;
  type: string;
  width: number;
  height: number;
  color: string;
  comp: number;
  bpc: number;
  enc: string;
  xPpi: number;
  yPpi: number;
}

export interface B8Check {
  /** `pdfinfo`: every page of both PDFs the same size (to 0.01 pt). */
  pageSizesMatch: boolean;
  /** `pdfimages -list`: the same images on the same pages, same size, colour, bits and resolution on the page. */
  imagesMatch: boolean;
  /** `pdfimages -png`: every extracted image (colour and soft mask) has the same pixels in both PDFs. */
  pixelsIdentical: boolean;
  /** mcsv's images and soft masks equal libvips' decoding of the originals. */
  originalPixels: boolean;
  pageCount: Record<Tool, number>;
  /** The first few differences found, for the log and the results. */
  mismatches: string[];
}

export interface B8Result {
  pages: B8Page[];
  layout: { pageSize: "A4"; margin: number; fit: string; orientation: string };
  img2pdf: string | undefined;
  img2pdfArgs: string[];
  rounds: number;
  /** Medians of the rounds, ms per ten-page document. */
  msPerDocument: Partial<Record<Tool, number>>;
  /** mcsv's median time in writeDocument (the rest of its time is the pages', see B8Page.mcsvMs). */
  mcsvWriteMs?: number;
  /** Every round's time, in the order run. */
  roundMs: Partial<Record<Tool, number[]>>;
  /** img2pdf's time over mcsv's: the median of the rounds' ratios (> 1: mcsv is faster). */
  speedup?: number;
  roundSpeedups?: number[];
  pdfBytes: Partial<Record<Tool, number>>;
  check?: B8Check;
  targets: { faster: { above: number; met: boolean }; samePixels: { met: boolean } };
  errors: Partial<Record<Tool, string>>;
}

const MARGIN = 36;
const LAYOUT: PageLayout = { size: PAGE_SIZES.a4, fit: "into", margin: MARGIN, orientation: "auto" };
/** img2pdf's equivalent of LAYOUT (0.4.4): A4 portrait, turned landscape for a landscape image (`--auto-orient`). */
const IMG2PDF_ARGS = ["--pagesize", "A4", "--border", `${MARGIN}pt:${MARGIN}pt`, "--fit", "into", "--auto-orient"];
const FASTER_THAN = 1;

/** The ten pages: kind, size in pixels (full run), seed. */
const PAGES: ReadonlyArray<{ kind: Kind; width: number; height: number }> = [
  { kind: "jpeg-444", width: 2400, height: 1600 },
  { kind: "png-rgb", width: 1600, height: 1200 },
  { kind: "jpeg-420", width: 1500, height: 2000 },
  { kind: "png-rgba", width: 1800, height: 1350 },
  { kind: "jpeg-444", width: 2048, height: 1536 },
  { kind: "png-grey", width: 1600, height: 2000 },
  { kind: "jpeg-420", width: 1800, height: 2400 },
  { kind: "png-rgb", width: 2000, height: 1500 },
  { kind: "jpeg-444", width: 2200, height: 1650 },
  { kind: "png-rgba", width: 1200, height: 1600 },
];


async function makePage(index: number, kind: Kind, width: number, height: number): Promise<Buffer> {
  const channels = kind === "png-rgba" ? 4 : 3;
  const raw = sharp(photoLikePixels(width, height, channels, 1000 + index), { raw: { width, height, channels } });
  switch (kind) {
    case "jpeg-444":
      return raw.jpeg({ quality: 92, chromaSubsampling: "4:4:4" }).toBuffer();
    case "jpeg-420":
      return raw.jpeg({ quality: 88, chromaSubsampling: "4:2:0" }).toBuffer();
    case "png-grey":
      return withOneIdat(await raw.toColourspace("b-w").png({ compressionLevel: 6 }).toBuffer());
    default:
      return withOneIdat(await raw.png({ compressionLevel: 6 }).toBuffer());
  }
}

/**
 * mcsv's document path, as the image service runs it: one page at a time, then the document written once. `steps`
 * gets each page's time (read, inspect, prepare, place) and the writer's.
 */
async function mcsvDocument(files: readonly string[], steps?: { pageMs: number[]; writeMs: number }): Promise<Buffer> {
  const pages: DocumentPage[] = [];
  for (const [index, file] of files.entries()) {
    const started = performance.now();
    const plan = inspectPassthrough(await readFile(file));
    if ("declined" in plan) throw new Error(`${file}: the passthrough path declined it (${plan.declined})`);
    const prepared = await preparePassthrough(plan);
    if ("declined" in prepared) throw new Error(`${file}: the passthrough path declined it (${prepared.declined})`);
    pages.push({ image: prepared.image, placement: placeImage(prepared.width, prepared.height, LAYOUT) });
    if (steps) steps.pageMs[index] = performance.now() - started;
  }
  const started = performance.now();
  const pdf = writeDocument(pages);
  if (steps) steps.writeMs = performance.now() - started;
  return pdf;
}

/** Runs a program without a shell; resolves with its stdout once it exited 0. */
export function runProgram(command: string, args: readonly string[], env?: NodeJS.ProcessEnv): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], ...(env ? { env } : {}) });
    const out: Buffer[] = [];
    let err = "";
    child.stdout.on("data", (c: Buffer) => out.push(c));
    child.stderr.on("data", (c: Buffer) => (err.length < 4096 ? (err += c.toString()) : undefined));
    child.once("error", reject);
    child.once("close", (code, signal) =>
      code === 0 ? resolve(Buffer.concat(out)) : reject(new Error(`${command} exited ${code ?? signal}: ${err.trim().split("\n").slice(-2).join(" ")}`)),
    );
  });
}

async function img2pdfVersion(): Promise<string | undefined> {
  try {
    return (await runProgram("img2pdf", ["--version"])).toString().trim();
  } catch {
    return undefined;
  }
}

/** `pdfinfo`'s page sizes, [width, height] in points, page by page. */
async function pageSizes(file: string): Promise<Array<[number, number]>> {
  const out = (await runProgram("pdfinfo", ["-f", "1", "-l", "100000", file])).toString("latin1");
  return [...out.matchAll(/^Page\s+\d+ size:\s+([\d.]+) x ([\d.]+) pts/gm)].map((m) => [Number(m[1]), Number(m[2])]);
}

/** `pdfimages -list`, in the order `pdfimages -png` numbers its files. */
async function listImages(file: string): Promise<ListedImage[]> {
  const out = (await runProgram("pdfimages", ["-list", file])).toString("latin1");
  // Columns: page num type width height color comp bpc enc interp object ID x-ppi y-ppi size ratio.
  return out
    .split("\n")
    .slice(2)
    .filter((line) => line.trim() !== "")
    .map((line) => {
      const c = line.trim().split(/\s+/);
      return { page: Number(c[0]), type: c[2]!, width: Number(c[3]), height: Number(c[4]), color: c[5]!, comp: Number(c[6]), bpc: Number(c[7]), enc: c[8]!, xPpi: Number(c[12]), yPpi: Number(c[13]) };
    });
}

/** Every image `pdfimages -png` writes, as raw pixels, in its numbering order. */
async function extractedPixels(file: string, dir: string): Promise<Array<{ data: Buffer; width: number; height: number; channels: number }>> {
  await runProgram("pdfimages", ["-png", file, join(dir, "img")]);
  const names = (await readdir(dir)).filter((f) => f.startsWith("img")).sort();
  const images = [];
  for (const name of names) {
    const { data, info } = await sharp(join(dir, name)).raw().toBuffer({ resolveWithObject: true });
    images.push({ data, width: info.width, height: info.height, channels: info.channels });
  }
  return images;
}

/** Whether colour image and soft mask hold the original's samples (libvips' decoding). */
async function holdsOriginal(original: Buffer, image: { data: Buffer; channels: number }, mask: { data: Buffer; channels: number } | undefined): Promise<boolean> {
  const { data, info } = await sharp(original).raw().toBuffer({ resolveWithObject: true });
  const alpha = info.channels === 2 || info.channels === 4;
  const colours = alpha ? info.channels - 1 : info.channels;
  if (image.channels !== colours || alpha !== (mask !== undefined)) return false;
  const pixels = info.width * info.height;
  if (image.data.length !== pixels * colours) return false;
  for (let i = 0; i < pixels; i++) {
    for (let c = 0; c < colours; c++) if (image.data[i * colours + c] !== data[i * info.channels + c]) return false;
    if (mask && mask.data[i * mask.channels] !== data[i * info.channels + colours]) return false;
  }
  return true;
}

async function check(dir: string, pdfs: Record<Tool, Buffer>, originals: readonly Buffer[]): Promise<B8Check> {
  const mismatches: string[] = [];
  const note = (m: string) => mismatches.length < 8 && mismatches.push(m);
  const files = { mcsv: join(dir, "mcsv.pdf"), img2pdf: join(dir, "img2pdf.pdf") };
  await writeFile(files.mcsv, pdfs.mcsv);
  await writeFile(files.img2pdf, pdfs.img2pdf);

  const sizes = { mcsv: await pageSizes(files.mcsv), img2pdf: await pageSizes(files.img2pdf) };
  let pageSizesMatch = sizes.mcsv.length === originals.length && sizes.img2pdf.length === originals.length;
  if (!pageSizesMatch) note(`pages: mcsv ${sizes.mcsv.length}, img2pdf ${sizes.img2pdf.length}, images ${originals.length}`);
  sizes.mcsv.forEach(([w, h], i) => {
    const [w2, h2] = sizes.img2pdf[i] ?? [Number.NaN, Number.NaN];
    if (!(Math.abs(w - w2) <= 0.01 && Math.abs(h - h2) <= 0.01)) {
      pageSizesMatch = false;
      note(`page ${i + 1} size: mcsv ${w} x ${h}, img2pdf ${w2} x ${h2} pts`);
    }
  });

  const listed = { mcsv: await listImages(files.mcsv), img2pdf: await listImages(files.img2pdf) };
  let imagesMatch = listed.mcsv.length === listed.img2pdf.length;
  if (!imagesMatch) note(`images: mcsv ${listed.mcsv.length}, img2pdf ${listed.img2pdf.length}`);
  listed.mcsv.forEach((a, i) => {
    const b = listed.img2pdf[i];
    const same =
      b && a.page === b.page && a.type === b.type && a.width === b.width && a.height === b.height && a.color === b.color && a.comp === b.comp && a.bpc === b.bpc &&
      // pdfimages rounds the resolution to whole dots per inch.
      Math.abs(a.xPpi - b.xPpi) <= 1 && Math.abs(a.yPpi - b.yPpi) <= 1;
    if (!same) {
      imagesMatch = false;
      note(`image ${i}: mcsv ${JSON.stringify(a)}, img2pdf ${JSON.stringify(b)}`);
    }
  });

  const extracted: Partial<Record<Tool, Awaited<ReturnType<typeof extractedPixels>>>> = {};
  for (const tool of ["mcsv", "img2pdf"] as const) {
    const out = await mkdtemp(join(dir, `${tool}-`));
    extracted[tool] = await extractedPixels(files[tool], out);
    await rm(out, { recursive: true, force: true });
  }
  let pixelsIdentical = extracted.mcsv!.length === extracted.img2pdf!.length && extracted.mcsv!.length > 0;
  extracted.mcsv!.forEach((a, i) => {
    const b = extracted.img2pdf![i];
    if (!b || a.width !== b.width || a.height !== b.height || a.channels !== b.channels || !a.data.equals(b.data)) {
      pixelsIdentical = false;
      note(`pdfimages image ${i} (page ${listed.mcsv[i]?.page}, ${listed.mcsv[i]?.type}) differs`);
    }
  });

  let originalPixels = true;
  for (const [index, original] of originals.entries()) {
    const onPage = listed.mcsv.flatMap((image, i) => (image.page === index + 1 ? [{ image, pixels: extracted.mcsv![i]! }] : []));
    const colour = onPage.find((p) => p.image.type === "image")?.pixels;
    const mask = onPage.find((p) => p.image.type === "smask")?.pixels;
    if (!colour || !(await holdsOriginal(original, colour, mask))) {
      originalPixels = false;
      note(`page ${index + 1}: mcsv's image is not the original's pixels`);
    }
  }
  return { pageSizesMatch, imagesMatch, pixelsIdentical, originalPixels, pageCount: { mcsv: sizes.mcsv.length, img2pdf: sizes.img2pdf.length }, mismatches };
}

export async function runB8(options: BenchOptions): Promise<B8Result> {
  const rounds = options.quick ? 5 : 7;
  const version = await img2pdfVersion();
  if (!version) options.log("B8: img2pdf is not installed (apt-get install img2pdf); only mcsv is timed");
  const dir = await mkdtemp(join(tmpdir(), "mcsv-b8-"));
  try {
    // --quick: a tenth of the pixels (each side / √10, rounded to even).
    const scale = options.quick ? 1 / Math.sqrt(10) : 1;
    const pages: B8Page[] = [];
    const files: string[] = [];
    const originals: Buffer[] = [];
    for (const [index, spec] of PAGES.entries()) {
      const width = 2 * Math.round((spec.width * scale) / 2);
      const height = 2 * Math.round((spec.height * scale) / 2);
      const bytes = await makePage(index, spec.kind, width, height);
      const name = `page-${String(index + 1).padStart(2, "0")}-${spec.kind}.${spec.kind.startsWith("jpeg") ? "jpg" : "png"}`;
      const file = join(dir, name);
      await writeFile(file, bytes);
      files.push(file);
      originals.push(bytes);
      const plan = inspectPassthrough(bytes);
      pages.push({ name, kind: spec.kind, width, height, inputBytes: bytes.byteLength, mode: "declined" in plan ? `declined: ${plan.declined}` : plan.mode });
    }
    const megapixels = pages.reduce((sum, p) => sum + p.width * p.height, 0) / 1e6;
    options.log(`B8: ${pages.length} pages, ${megapixels.toFixed(1)} MP, ${(pages.reduce((sum, p) => sum + p.inputBytes, 0) / 2 ** 20).toFixed(1)} MiB; ${rounds} rounds`);

    const img2pdfArgs = [...IMG2PDF_ARGS, ...files];
    const pageMs: number[][] = files.map(() => []);
    const writeMs: number[] = [];
    const tools: Record<Tool, (() => Promise<Buffer>) | undefined> = {
      mcsv: async () => {
        const steps = { pageMs: [] as number[], writeMs: 0 };
        const pdf = await mcsvDocument(files, steps);
        steps.pageMs.forEach((ms, i) => pageMs[i]!.push(ms));
        writeMs.push(steps.writeMs);
        return pdf;
      },
      img2pdf: version ? () => runProgram("img2pdf", img2pdfArgs) : undefined,
    };
    const times: Partial<Record<Tool, number[]>> = {};
    const pdfs: Partial<Record<Tool, Buffer>> = {};
    const errors: Partial<Record<Tool, string>> = {};
    const order = Object.keys(tools) as Tool[];
    // Round 0 is a warm-up (JIT, page cache, Python's bytecode cache), not timed.
    for (let r = 0; r <= rounds; r++) {
      for (const tool of r % 2 === 0 ? order : [...order].reverse()) {
        const run = tools[tool];
        if (!run || errors[tool]) continue;
        try {
          const started = performance.now();
          const pdf = await run();
          const ms = performance.now() - started;
          if (r > 0) (times[tool] ??= []).push(ms);
          pdfs[tool] = pdf;
        } catch (error) {
          errors[tool] = error instanceof Error ? error.message.slice(0, 300) : String(error);
        }
      }
    }
    // Per page and writer: the timed rounds only (the warm-up is the first entry).
    for (const [i, page] of pages.entries()) if (pageMs[i]!.length > 1) page.mcsvMs = round(median(pageMs[i]!.slice(1)), 1);
    const msPerDocument: B8Result["msPerDocument"] = {};
    for (const tool of order) if (times[tool]) msPerDocument[tool] = round(median(times[tool]), 1);
    const roundSpeedups = times.mcsv && times.img2pdf && times.img2pdf.length === times.mcsv.length ? times.img2pdf.map((t, i) => round(t / times.mcsv![i]!, 2)) : undefined;
    const speedup = roundSpeedups ? round(median(roundSpeedups), 2) : undefined;
    const pdfBytes = Object.fromEntries(Object.entries(pdfs).map(([k, v]) => [k, v.byteLength])) as B8Result["pdfBytes"];
    const result: B8Result = {
      pages,
      layout: { pageSize: "A4", margin: MARGIN, fit: LAYOUT.fit, orientation: LAYOUT.orientation },
      img2pdf: version,
      img2pdfArgs: IMG2PDF_ARGS,
      rounds,
      msPerDocument,
      ...(writeMs.length > 1 ? { mcsvWriteMs: round(median(writeMs.slice(1)), 1) } : {}),
      roundMs: Object.fromEntries(Object.entries(times).map(([k, v]) => [k, v.map((t) => round(t, 1))])),
      ...(speedup !== undefined ? { speedup, roundSpeedups } : {}),
      pdfBytes,
      targets: { faster: { above: FASTER_THAN, met: (speedup ?? 0) > FASTER_THAN }, samePixels: { met: false } },
      errors,
    };
    if (pdfs.mcsv && pdfs.img2pdf) {
      result.check = await check(dir, { mcsv: pdfs.mcsv, img2pdf: pdfs.img2pdf }, originals);
      const c = result.check;
      result.targets.samePixels.met = c.pageSizesMatch && c.imagesMatch && c.pixelsIdentical && c.originalPixels;
    }
    const c = result.check;
    options.log(
      `B8: mcsv ${msPerDocument.mcsv ?? "–"} ms, img2pdf ${msPerDocument.img2pdf ?? "–"} ms per document (× ${speedup ?? "–"}, rounds ${roundSpeedups?.join(", ") ?? "–"}); ` +
        `PDF bytes mcsv ${pdfBytes.mcsv ?? "–"}, img2pdf ${pdfBytes.img2pdf ?? "–"}` +
        (c ? `; page sizes ${c.pageSizesMatch ? "match" : "differ"}, images ${c.imagesMatch ? "match" : "differ"}, pixels ${c.pixelsIdentical ? "identical" : "differ"}, originals' pixels ${c.originalPixels ? "yes" : "no"}` : "") +
        (c?.mismatches.length ? `; ${c.mismatches.join("; ")}` : "") +
        (Object.keys(errors).length ? `; errors ${JSON.stringify(errors)}` : ""),
    );
    return result;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
