/**
 * B6 (moonshot): the lossless fast-path PDF writer (services/image/passthrough-pdf.ts, the engine that
 * `options.engine = PDF_ENGINE_PASSTHROUGH` or IMAGE_PDF_ENGINE=passthrough selects) against ImageMagick and Debian's
 * img2pdf, on the same files, one conversion at a time, the three in turn within each round (a quick run takes
 * 0.3 MP only). JPEGs are compared with what the service does by default (ImageMagick re-encoding at HIGH), PNGs with its
 * LOSSLESS preset; img2pdf, like the fast path, copies a JPEG as it is. img2pdf gets each PNG with its IDAT chunks
 * merged into one beforehand (not timed): it joins them one by one, which is quadratic. Reports time per image, PDF
 * size, and whether each PDF holds exactly the original's pixels (`pdfimages -png`, colour and soft mask, against
 * libvips' decoding of the original).
 */
import { spawn } from "node:child_process";
import { Quality } from "@mcsv/sdk";
import sharp from "sharp";
import { pdfArguments, runImageMagick } from "../services/image/imagemagick.js";
import { passthroughPdf, type AlphaSplitStep } from "../services/image/passthrough-pdf.js";
import { qualityPreset } from "../services/image/quality.js";
import type { BenchOptions } from "./lib/context.js";
import { photoLikePixels, SIZES, withOneIdat, type TestImage } from "./lib/images.js";
import { DEFAULT_LIMITS, POLICY_ENV } from "./lib/imagemagick.js";
import { median, round } from "./lib/stats.js";
import { extractImages, rawPixels } from "../test/support/pdf.js";

type Engine = "passthrough" | "imagemagick" | "img2pdf";

export interface B6ImageResult {
  image: string;
  inputBytes: number;
  /** The fast path's mode, or why it declined. */
  mode: string;
  imageMagickPreset: "high" | "lossless";
  msPerImage: Partial<Record<Engine, number>>;
  pdfBytes: Partial<Record<Engine, number>>;
  /** ImageMagick's time per image over the fast path's: how many times faster the fast path is. */
  speedupOverImageMagick?: number;
  /** img2pdf's time per image over the fast path's. */
  speedupOverImg2pdf?: number;
  /** For "png-split": the median time of each step of splitting alpha off (the rest of the fast path's time is
   * reading the chunks and joining the PDF). */
  alphaSplitMs?: Record<AlphaSplitStep, number>;
  /** Whether the engine's PDF holds exactly the original's pixels (alpha included). */
  pixelIdentical: Partial<Record<Engine, boolean>>;
  targets: { speedup: { min: number; met: boolean }; fasterThanImg2pdf?: { met: boolean }; pixelIdentical: { met: boolean } };
  errors: Partial<Record<Engine, string>>;
}

export interface B6Result {
  rounds: number;
  img2pdf: string | undefined;
  images: B6ImageResult[];
}

const SPEEDUP_TARGET = 20;


/**
 * Whether the PDF's image (and soft mask) hold exactly the original's samples: poppler's extraction against libvips'
 * decoding of the original.
 */
async function holdsOriginalPixels(pdf: Buffer, original: Buffer): Promise<boolean> {
  const want = await rawPixels(original);
  const [image, mask, ...more] = await extractImages(pdf);
  if (!image || more.length > 0 || image.width !== want.width || image.height !== want.height) return false;
  const colours = want.channels === 4 ? 3 : want.channels;
  if (image.channels !== colours || (want.channels === 4) !== (mask !== undefined)) return false;
  const pixels = want.width * want.height;
  for (let i = 0; i < pixels; i++) {
    for (let c = 0; c < colours; c++) if (image.data[i * colours + c] !== want.data[i * want.channels + c]) return false;
    if (mask && mask.data[i * mask.channels] !== want.data[i * 4 + 3]) return false;
  }
  return true;
}

function runImg2pdf(input: Uint8Array): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn("img2pdf", ["-"], { stdio: ["pipe", "pipe", "pipe"] });
    const out: Buffer[] = [];
    let err = "";
    child.stdout.on("data", (c: Buffer) => out.push(c));
    child.stderr.on("data", (c: Buffer) => (err += c.toString()));
    child.stdin.on("error", () => undefined);
    child.once("error", reject);
    child.once("close", (code) => (code === 0 ? resolve(Buffer.concat(out)) : reject(new Error(`img2pdf exited ${code}: ${err.split("\n")[0]}`))));
    child.stdin.end(input);
  });
}

async function img2pdfVersion(): Promise<string | undefined> {
  return new Promise((resolve) => {
    const child = spawn("img2pdf", ["--version"], { stdio: ["ignore", "pipe", "ignore"] });
    let out = "";
    child.stdout.on("data", (c: Buffer) => (out += c.toString()));
    child.once("error", () => resolve(undefined));
    child.once("close", (code) => resolve(code === 0 ? out.trim() : undefined));
  });
}

async function images(quick: boolean): Promise<TestImage[]> {
  const out: TestImage[] = [];
  for (const size of quick ? [SIZES.small] : [SIZES.small, SIZES.medium, SIZES.large]) {
    for (const kind of ["jpeg-rgb", "png-rgb", "png-rgba"] as const) {
      const channels = kind === "png-rgba" ? 4 : 3;
      const raw = sharp(photoLikePixels(size.width, size.height, channels), { raw: { width: size.width, height: size.height, channels } });
      const format = kind === "jpeg-rgb" ? "jpeg" : "png";
      const bytes = format === "jpeg" ? await raw.jpeg({ quality: 92, chromaSubsampling: "4:4:4" }).toBuffer() : await raw.png({ compressionLevel: 6 }).toBuffer();
      out.push({ name: `${size.label}-${kind}`, size, channels, format, bytes });
    }
  }
  return out;
}

export async function runB6(options: BenchOptions & { imageMagick: string }): Promise<B6Result> {
  const rounds = options.quick ? 1 : 3;
  const version = await img2pdfVersion();
  if (!version) options.log("B6: img2pdf is not installed (apt-get install img2pdf); its column stays empty");
  const results: B6ImageResult[] = [];
  for (const image of await images(options.quick)) {
    const preset = image.format === "jpeg" ? Quality.HIGH : Quality.LOSSLESS;
    const args = pdfArguments({ encoding: "png", width: image.size.width, height: image.size.height, channels: image.channels }, qualityPreset(preset)!, DEFAULT_LIMITS).map((a) =>
      a === "png:-" ? `${image.format}:-` : a,
    );
    const forImg2pdf = withOneIdat(image.bytes);
    const steps: Partial<Record<AlphaSplitStep, number[]>> = {};
    const engines: Record<Engine, (() => Promise<Buffer>) | undefined> = {
      passthrough: async () => {
        const result = await passthroughPdf(image.bytes, { onStep: (step, ms) => (steps[step] ??= []).push(ms) });
        if (!result) throw new Error("declined");
        return result.pdf;
      },
      imagemagick: () => runImageMagick(options.imageMagick, args, image.bytes, { timeoutMs: 120_000, maxOutputBytes: 1 << 30, env: POLICY_ENV }),
      img2pdf: version ? () => runImg2pdf(forImg2pdf) : undefined,
    };
    const mode = (await passthroughPdf(image.bytes))?.mode ?? "declined";
    const times: Partial<Record<Engine, number[]>> = {};
    const pdfs: Partial<Record<Engine, Buffer>> = {};
    const errors: Partial<Record<Engine, string>> = {};
    const perRound = image.size.width * image.size.height < 1e6 ? 5 : image.size.width * image.size.height < 5e6 ? 2 : 1;
    // An engine that took longer than this once is not run again for this image (img2pdf takes ~45 s on a 12 MP PNG).
    const slowMs = 5_000;
    for (let r = 0; r < rounds; r++) {
      for (const engine of Object.keys(engines) as Engine[]) {
        const run = engines[engine];
        if (!run || errors[engine] || (times[engine]?.some((t) => t > slowMs) ?? false)) continue;
        try {
          const started = performance.now();
          let pdf: Buffer | undefined;
          for (let i = 0; i < perRound; i++) pdf = await run();
          (times[engine] ??= []).push((performance.now() - started) / perRound);
          pdfs[engine] = pdf!;
        } catch (error) {
          errors[engine] = error instanceof Error ? error.message.slice(0, 200) : String(error);
        }
      }
    }
    const sizes = Object.fromEntries(Object.entries(pdfs).map(([engine, pdf]) => [engine, pdf.byteLength])) as B6ImageResult["pdfBytes"];
    const pixelIdentical: B6ImageResult["pixelIdentical"] = {};
    for (const [engine, pdf] of Object.entries(pdfs) as Array<[Engine, Buffer]>) pixelIdentical[engine] = await holdsOriginalPixels(pdf, image.bytes);
    const msPerImage = Object.fromEntries(Object.entries(times).map(([k, v]) => [k, round(median(v), 1)])) as B6ImageResult["msPerImage"];
    const speedupOverImageMagick = msPerImage.passthrough && msPerImage.imagemagick ? round(msPerImage.imagemagick / msPerImage.passthrough, 1) : undefined;
    const speedupOverImg2pdf = msPerImage.passthrough && msPerImage.img2pdf ? round(msPerImage.img2pdf / msPerImage.passthrough, 1) : undefined;
    const result: B6ImageResult = {
      image: image.name,
      inputBytes: image.bytes.byteLength,
      mode,
      imageMagickPreset: preset === Quality.HIGH ? "high" : "lossless",
      msPerImage,
      pdfBytes: sizes,
      ...(speedupOverImageMagick !== undefined ? { speedupOverImageMagick } : {}),
      ...(speedupOverImg2pdf !== undefined ? { speedupOverImg2pdf } : {}),
      ...(steps.inflate ? { alphaSplitMs: Object.fromEntries(Object.entries(steps).map(([k, v]) => [k, round(median(v), 1)])) as Record<AlphaSplitStep, number> } : {}),
      pixelIdentical,
      targets: {
        speedup: { min: SPEEDUP_TARGET, met: (speedupOverImageMagick ?? 0) >= SPEEDUP_TARGET },
        ...(speedupOverImg2pdf !== undefined ? { fasterThanImg2pdf: { met: speedupOverImg2pdf > 1 } } : {}),
        pixelIdentical: { met: pixelIdentical.passthrough === true },
      },
      errors,
    };
    results.push(result);
    options.log(
      `B6 ${image.name} (${mode}): ${Object.entries(msPerImage).map(([k, v]) => `${k} ${v} ms`).join(", ")}; PDF bytes ${Object.entries(sizes).map(([k, v]) => `${k} ${v}`).join(", ")}; ` +
        `pixel-identical ${Object.entries(pixelIdentical).map(([k, v]) => `${k} ${v}`).join(", ")}` +
        (Object.keys(errors).length ? `; errors ${JSON.stringify(errors)}` : ""),
    );
  }
  return { rounds, img2pdf: version, images: results };
}
