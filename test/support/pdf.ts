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
