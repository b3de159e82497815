/**
 * Writes PDFs with a spawned ImageMagick (7's `magick` or 6's `convert`), bytes in on stdin and out on stdout, never
 * through temporary files. The input coder is always named (`rgb:-`, `rgba:-`, `png:-`) so ImageMagick never guesses a
 * format from content, its resources are capped with `-limit`, and a process that overstays is killed (child-process.ts runs it).
 *
 * `runImageMagick` runs any argument list on a buffer; `pdfArguments` builds the list the service uses, so a
 * benchmark can run exactly what the service runs. A pool of ready processes could later sit behind `PdfRenderer`.
 */
import { spawnSync } from "node:child_process";
import { PassThrough, type Readable } from "node:stream";
import { Code } from "@connectrpc/connect";
import type { Span } from "@opentelemetry/api";
import { withSpan } from "../shared/tracing.js";
import { collectChildProcess, spawnChildProcess, type ChildProgram, type ChildRunOptions } from "./child-process.js";
import type { NormalisedImage } from "./normalise.js";
import { pageDensity } from "./page-layout.js";
import { Quality } from "@mcsv/sdk";
import { qualityPreset, type QualityPreset } from "./quality.js";

export interface ImageMagickLimits {
  /** ImageMagick sizes, e.g. "1GiB". */
  memory: string;
  map: string;
  disk: string;
  timeSeconds: number;
}

/** How long ImageMagick may run, how much it may write, what stops it, and its environment (MAGICK_CONFIGURE_PATH: policy.ts). */
export type RunOptions = ChildRunOptions;

/** What the pipeline needs from a PDF writer. */
/** A PDF as its writer produces it: `output` streams it, `done` resolves with its size once the writer succeeded. */
export interface PdfStream {
  output: Readable;
  done: Promise<number>;
}

export interface PdfRenderer {
  /** Starts writing the PDF of `image`; the caller stores `output` as it comes (the PDF is never held whole). */
  streamPdf(image: NormalisedImage, preset: QualityPreset, signal?: AbortSignal): Promise<PdfStream>;
  /** A document page's image, encoded at the preset (JPEG, or PNG for LOSSLESS) for the document writer to place. */
  encodeImage(image: NormalisedImage, preset: QualityPreset, signal?: AbortSignal): Promise<Buffer>;
  /** Resolves when the writer can produce PDFs; rejects with the reason otherwise. */
  ready(): Promise<void>;
}

/**
 * A refusal by ImageMagick's resource limits is not a bug: an image beyond its width/height/area policy never fits
 * (invalid_argument, permanent), exhausted memory or time may fit later (resource_exhausted). Anything else is ours.
 */
function codeOfFailure(stderr: string): Code {
  if (/width or height exceeds limit|area exceeds|exceeds limit/i.test(stderr)) return Code.InvalidArgument;
  if (/memory allocation failed|cache resources exhausted|time limit exceeded|resource limit/i.test(stderr)) return Code.ResourceExhausted;
  return Code.Internal;
}

/** ImageMagick as the child-process runner names it in errors and spans. */
const IMAGEMAGICK: ChildProgram = {
  displayName: "ImageMagick",
  outputName: "the PDF",
  attributePrefix: "mcsv.imagemagick",
  classifyFailure: codeOfFailure,
};

/** `magick` when it runs, else ImageMagick 6's `convert` (checked once, at start-up). */
export function detectImageMagickCommand(): string {
  const probe = spawnSync("magick", ["-version"], { encoding: "utf8", timeout: 10_000 });
  return probe.status === 0 && /ImageMagick \d/.test(probe.stdout) ? "magick" : "convert";
}

/**
 * Runs `command args` with `input` on stdin and resolves with everything it wrote on stdout, in a span that records
 * the arguments, process id, exit code (or the signal that killed it), duration, and bytes in and out.
 */
export async function runImageMagick(command: string, args: readonly string[], input: Uint8Array, options: RunOptions): Promise<Buffer> {
  return traced(command, args, input, (span) => collectChildProcess(IMAGEMAGICK, command, args, input, options, span));
}

/**
 * Runs `command args` like runImageMagick, but passes its stdout on as it comes, pausing ImageMagick while `output`
 * is not read (the timeout still applies). `output` ends once ImageMagick succeeded, or fails with its error.
 */
export function streamImageMagick(command: string, args: readonly string[], input: Uint8Array, options: RunOptions): PdfStream {
  const output = new PassThrough();
  const done = traced(command, args, input, (span) =>
    spawnChildProcess(IMAGEMAGICK, command, args, input, options, span, (chunk, pause) => {
      if (!output.write(chunk)) pause((resume) => output.once("drain", resume));
    }),
  ).then(
    (bytes) => {
      output.end();
      return bytes;
    },
    (error: unknown) => {
      output.destroy(error as Error);
      throw error;
    },
  );
  return { output, done };
}

/** One ImageMagick run in its span, timed. */
function traced<T>(command: string, args: readonly string[], input: Uint8Array, run: (span: Span) => Promise<T>): Promise<T> {
  const attributes = { "process.executable.name": command, "process.command_args": [command, ...args], "mcsv.imagemagick.input_bytes": input.byteLength };
  return withSpan(`imagemagick ${command}`, attributes, async (span) => {
    const started = performance.now();
    try {
      return await run(span);
    } finally {
      span.setAttribute("mcsv.imagemagick.duration_ms", Math.round(performance.now() - started));
    }
  });
}

/** The resource limits, and the input coder that reads `image` from stdin. */
function inputArguments(image: Pick<NormalisedImage, "encoding" | "width" | "height" | "channels">, limits: ImageMagickLimits): string[] {
  const input =
    image.encoding === "png"
      ? ["png:-"]
      : ["-size", `${image.width}x${image.height}`, "-depth", "8", image.channels === 4 ? "rgba:-" : "rgb:-"];
  return [
    "-limit", "memory", limits.memory,
    "-limit", "map", limits.map,
    "-limit", "disk", limits.disk,
    "-limit", "time", String(limits.timeSeconds),
    ...input,
  ];
}

/** Arguments that turn `image` on stdin into a one-page PDF on stdout, the page the image's size. */
export function pdfArguments(image: Pick<NormalisedImage, "encoding" | "width" | "height" | "channels">, preset: QualityPreset, limits: ImageMagickLimits): string[] {
  return [
    ...inputArguments(image, limits),
    "-units", "PixelsPerInch",
    "-density", String(pageDensity(image.width, image.height)),
    ...preset.compressArgs,
    "pdf:-",
  ];
}

/**
 * Arguments that turn `image` on stdin into the encoded image a document's page embeds, on stdout: a JPEG at the
 * preset's quality (what ImageMagick's own PDF would hold), or for LOSSLESS an 8-bit truecolour PNG (its pixels
 * exactly, never a palette). ImageMagick keeps the image's ICC profile in either.
 */
export function encodeArguments(image: Pick<NormalisedImage, "encoding" | "width" | "height" | "channels">, preset: QualityPreset, limits: ImageMagickLimits): string[] {
  const output =
    preset.name === "lossless"
      ? ["-define", `png:color-type=${image.channels === 4 ? 6 : 2}`, "-define", "png:bit-depth=8", "png:-"]
      : ["jpeg:-"];
  return [...inputArguments(image, limits), ...preset.compressArgs, ...output];
}

export interface ImageMagickOptions {
  command: string;
  limits: ImageMagickLimits;
  timeoutMs: number;
  maxOutputBytes: number;
  /** Environment of every ImageMagick it runs (policy.ts: ImageMagickPolicy.env). */
  env?: NodeJS.ProcessEnv | undefined;
}

const PROBE_PIXEL = Uint8Array.of(255, 255, 255);

/** The service's PDF writer: one ImageMagick process per conversion. */
export class ImageMagickPdfRenderer implements PdfRenderer {
  private probed: Promise<void> | undefined;

  constructor(readonly options: ImageMagickOptions) {}

  async streamPdf(image: NormalisedImage, preset: QualityPreset, signal?: AbortSignal): Promise<PdfStream> {
    return streamImageMagick(this.options.command, pdfArguments(image, preset, this.options.limits), image.data, this.runOptions(signal));
  }

  async encodeImage(image: NormalisedImage, preset: QualityPreset, signal?: AbortSignal): Promise<Buffer> {
    return runImageMagick(this.options.command, encodeArguments(image, preset, this.options.limits), image.data, this.runOptions(signal));
  }

  private runOptions(signal?: AbortSignal): RunOptions {
    return { timeoutMs: this.options.timeoutMs, maxOutputBytes: this.options.maxOutputBytes, signal, env: this.options.env };
  }

  /**
   * Writes a 1×1 PDF the way conversions do; a success is cached for good, a failure is retried on the next call
   * (a policy or package fixed while the service runs is picked up).
   */
  ready(): Promise<void> {
    this.probed ??= this.probe().catch((error: unknown) => {
      this.probed = undefined;
      throw error;
    });
    return this.probed;
  }

  /** Both compressions the presets use: Flate, and JPEG (a separate delegate that may be missing). */
  private async probe(): Promise<void> {
    const image: NormalisedImage = { encoding: "raw", data: PROBE_PIXEL, width: 1, height: 1, channels: 3 };
    for (const quality of [Quality.LOSSLESS, Quality.HIGH]) {
      const pdf = await runImageMagick(this.options.command, pdfArguments(image, qualityPreset(quality)!, this.options.limits), image.data, this.runOptions()).catch((error: unknown) => {
        throw new Error(`${this.options.command} cannot write a PDF (is PDF writing allowed by its policy.xml?): ${error instanceof Error ? error.message : String(error)}`);
      });
      if (Buffer.from(pdf.buffer, pdf.byteOffset, Math.min(5, pdf.byteLength)).toString("latin1") !== "%PDF-") {
        throw new Error(`${this.options.command} did not write a PDF`);
      }
    }
  }
}
