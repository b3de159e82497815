/** Checks on PDFs with the real tools: qpdf for structure, pdfimages for the embedded pixels. */
import { execFile } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import sharp from "sharp";

const run = promisify(execFile);

export async function qpdfCheck(pdf: Uint8Array): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), "mcsv-pdf-"));
  try {
    writeFileSync(join(dir, "in.pdf"), pdf);
    const { stdout } = await run("qpdf", ["--check", join(dir, "in.pdf")]);
    return stdout;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export interface RawImage {
  data: Buffer;
  width: number;
  height: number;
  channels: number;
}

/** The images embedded in a PDF, extracted losslessly by `pdfimages -png`, as raw pixels. */
export async function extractImages(pdf: Uint8Array): Promise<RawImage[]> {
  const dir = mkdtempSync(join(tmpdir(), "mcsv-pdf-"));
  try {
    writeFileSync(join(dir, "in.pdf"), pdf);
    await run("pdfimages", ["-png", join(dir, "in.pdf"), join(dir, "img")]);
    const files = readdirSync(dir).filter((f) => f.startsWith("img")).sort();
    // `await` here, or the finally block removes the files before sharp reads them.
    return await Promise.all(
      files.map(async (f) => {
        const { data, info } = await sharp(join(dir, f)).raw().toBuffer({ resolveWithObject: true });
        return { data, width: info.width, height: info.height, channels: info.channels };
      }),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function rawPixels(image: Uint8Array): Promise<RawImage> {
  const { data, info } = await sharp(image).raw().toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height, channels: info.channels };
}

/** A photographic-like test image: smooth gradients plus noise, so that no encoder can cheat. */
export async function photoLikePng(width: number, height: number, channels: 3 | 4 = 3): Promise<Buffer> {
  const pixels = Buffer.alloc(width * height * channels);
  let seed = 42;
  const noise = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % 32) - 16;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * channels;
      pixels[i] = Math.max(0, Math.min(255, Math.round((255 * x) / width) + noise()));
      pixels[i + 1] = Math.max(0, Math.min(255, Math.round((255 * y) / height) + noise()));
      pixels[i + 2] = Math.max(0, Math.min(255, 128 + Math.round(100 * Math.sin((x + y) / 9)) + noise()));
      if (channels === 4) pixels[i + 3] = Math.round((255 * (x + y)) / (width + height));
    }
  }
  return sharp(pixels, { raw: { width, height, channels } }).png().toBuffer();
}

/** Runs `fn` on `pdf` written to a private file, and removes it afterwards. */
async function withPdfFile<T>(pdf: Uint8Array, fn: (file: string) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), "mcsv-pdf-"));
  try {
    writeFileSync(join(dir, "in.pdf"), pdf);
    return await fn(join(dir, "in.pdf"));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The text `pdftotext` reads from a PDF (an OCR text layer included), in reading order. */
export async function pdfText(pdf: Uint8Array): Promise<string> {
  return withPdfFile(pdf, async (file) => (await run("pdftotext", [file, "-"])).stdout);
}

export interface PdfFont {
  name: string;
  type: string;
  embedded: boolean;
}

/** The fonts `pdffonts` lists: name, type and whether the font program is embedded. */
export async function pdfFonts(pdf: Uint8Array): Promise<PdfFont[]> {
  const { stdout } = await withPdfFile(pdf, (file) => run("pdffonts", [file]));
  const [, rule = "", ...rows] = stdout.split("\n");
  // Fixed-width columns (a name may hold spaces): the dashed rule under the heading gives each one's span.
  const columns = [...rule.matchAll(/-+/g)].map((dashes) => [dashes.index!, dashes.index! + dashes[0].length] as const);
  const cell = (line: string, column: number) => line.slice(...columns[column]!).trim();
  return rows.filter((line) => line.trim() !== "").map((line) => ({ name: cell(line, 0), type: cell(line, 1), embedded: cell(line, 3) === "yes" }));
}

export interface ImageStream {
  /** The image XObject's dictionary as qpdf prints it (Length, Filter, DecodeParms, ColorSpace, …). */
  dictionary: string;
  /** Its stream exactly as stored in the file, still compressed. */
  data: Buffer;
}

/** Every image XObject `pdfimages -list` finds (in page order), its stored bytes read by qpdf without decoding. */
export async function imageStreams(pdf: Uint8Array): Promise<ImageStream[]> {
  return withPdfFile(pdf, async (file) => {
    const { stdout } = await run("pdfimages", ["-list", file]);
    // Columns: page num type width height color comp bpc enc interp object gen x-ppi y-ppi size ratio.
    const objects = stdout
      .split("\n")
      .slice(2)
      .filter((line) => line.trim() !== "")
      .map((line) => line.trim().split(/\s+/)[10]!);
    return Promise.all(
      objects.map(async (object) => ({
        dictionary: (await run("qpdf", [`--show-object=${object}`, file])).stdout.trim(),
        data: (await run("qpdf", [`--show-object=${object}`, "--raw-stream-data", file], { encoding: "buffer", maxBuffer: 1 << 30 })).stdout,
      })),
    );
  });
}

export interface PdfInfo {
  pages: number;
  /** Every page's width and height in points. */
  pageSizes: Array<[number, number]>;
  title: string | undefined;
  /** Every Info entry pdfinfo prints (Title, Author, Subject, Keywords, …). */
  entries: Record<string, string>;
}

/** pdfinfo, every page's size included. */
export async function pdfInfo(pdf: Uint8Array): Promise<PdfInfo> {
  // -l past the last page is clamped to it: every page's size.
  const text = await withPdfFile(pdf, async (file) => (await run("pdfinfo", ["-f", "1", "-l", "100000", file])).stdout);
  // "Name:   value", the value possibly empty (never the next line's).
  const entries = Object.fromEntries([...text.matchAll(/^([A-Za-z ]+?):[ \t]*(.*)$/gm)].map((match) => [match[1]!, match[2]!.trimEnd()]));
  return {
    pages: Number(/^Pages:\s+(\d+)$/m.exec(text)?.[1]),
    pageSizes: [...text.matchAll(/^Page\s+\d+ size:\s+([\d.]+) x ([\d.]+) pts/gm)].map((match) => [Number(match[1]), Number(match[2])]),
    title: entries["Title"] || undefined,
    entries,
  };
}

/** Each embedded image (soft masks left out) with its page and size in pixels, in page order (pdfimages -list). */
export async function pageImages(pdf: Uint8Array): Promise<Array<{ page: number; width: number; height: number }>> {
  const listing = await withPdfFile(pdf, async (file) => (await run("pdfimages", ["-list", file])).stdout);
  return listing
    .split("\n")
    .slice(2)
    .map((line) => line.trim().split(/\s+/))
    .filter((columns) => columns[2] === "image")
    .map(([page, , , width, height]) => ({ page: Number(page), width: Number(width), height: Number(height) }));
}
