/**
 * Writes PDFs with a spawned ImageMagick (7's `magick` or 6's `convert`), bytes in on stdin and out on stdout, never
 * through temporary files. The input coder is always named (`rgb:-`, `rgba:-`, `png:-`) so ImageMagick never guesses a
 * format from content, its resources are capped with `-limit`, and a process that overstays is killed.
 *
 * `runImageMagick` runs any argument list on a buffer; `pdfArguments` builds the list the service uses, so a
 * benchmark can run exactly what the service runs. A pool of ready processes could later sit behind `PdfRenderer`.
 */
import { spawn, spawnSync } from "node:child_process";
import { PassThrough, type Readable } from "node:stream";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Span } from "@opentelemetry/api";
import { withSpan } from "../shared/tracing.js";
import type { NormalisedImage } from "./normalise.js";
import { Quality } from "@mcsv/sdk";
import { qualityPreset, type QualityPreset } from "./quality.js";

export interface ImageMagickLimits {
  /** ImageMagick sizes, e.g. "1GiB". */
  memory: string;
  map: string;
  disk: string;
  timeSeconds: number;
}

export interface RunOptions {
  /** The process is killed with SIGKILL after this long (deadline_exceeded). */
  timeoutMs: number;
  /** Largest output accepted; the process is killed when it writes more (resource_exhausted). */
  maxOutputBytes: number;
  /** Kills the process when aborted (the RPC's deadline or cancellation). */
  signal?: AbortSignal | undefined;
  /** Environment of the process (the service's own when unset); carries MAGICK_CONFIGURE_PATH (see policy.ts). */
  env?: NodeJS.ProcessEnv | undefined;
}

/** What the pipeline needs from a PDF writer. */
/** A PDF as its writer produces it: `output` streams it, `done` resolves with its size once the writer succeeded. */
export interface PdfStream {
  output: Readable;
  done: Promise<number>;
}

export interface PdfRenderer {
  /** Starts writing the PDF of `image`; the caller stores `output` as it comes (the PDF is never held whole). */
  streamPdf(image: NormalisedImage, preset: QualityPreset, signal?: AbortSignal): Promise<PdfStream>;
  /** Resolves when the writer can produce PDFs; rejects with the reason otherwise. */
  ready(): Promise<void>;
}

const STDERR_KEPT = 4_096;

/** ImageMagick's complaint, first lines only (it never echoes image bytes, but keep it short for logs and errors). */
function summarise(stderr: string): string {
  const lines = stderr
    .split("\n")
    .map((line) => line.trim())
    .filter(Boolean);
  const text = lines.slice(0, 3).join("; ");
  return text.length > 300 ? `${text.slice(0, 300)}…` : text || "no message";
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
  const chunks: Buffer[] = [];
  const bytes = await traced(command, args, input, (span) => spawnImageMagick(command, args, input, options, span, (chunk) => void chunks.push(chunk)));
  return Buffer.concat(chunks, bytes);
}

/**
 * Runs `command args` like runImageMagick, but passes its stdout on as it comes, pausing ImageMagick while `output`
 * is not read (the timeout still applies). `output` ends once ImageMagick succeeded, or fails with its error.
 */
export function streamImageMagick(command: string, args: readonly string[], input: Uint8Array, options: RunOptions): PdfStream {
  const output = new PassThrough();
  const done = traced(command, args, input, (span) =>
    spawnImageMagick(command, args, input, options, span, (chunk, pause) => {
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
function traced(command: string, args: readonly string[], input: Uint8Array, run: (span: Span) => Promise<number>): Promise<number> {
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

/**
 * Spawns ImageMagick and hands `onOutput` each chunk of its stdout (which may pause the reading until it resumes it);
 * resolves with the bytes written once it exited well.
 */
function spawnImageMagick(
  command: string,
  args: readonly string[],
  input: Uint8Array,
  options: RunOptions,
  span: Span,
  onOutput: (chunk: Buffer, pause: (until: (resume: () => void) => void) => void) => void,
): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    options.signal?.throwIfAborted();
    // Its own process group, so that a kill also reaches any delegate it started.
    const child = spawn(command, args, { stdio: ["pipe", "pipe", "pipe"], detached: true, env: options.env ?? process.env });
    if (child.pid !== undefined) span.setAttribute("process.pid", child.pid);
    let outputBytes = 0;
    let stderr = "";
    let failure: ConnectError | undefined;

    const kill = (error: ConnectError) => {
      failure ??= error;
      try {
        if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL");
      } catch {
        child.kill("SIGKILL");
      }
    };
    const timer = setTimeout(
      () => kill(new ConnectError(`ImageMagick took longer than ${options.timeoutMs} ms and was stopped`, Code.DeadlineExceeded)),
      options.timeoutMs,
    );
    const onAbort = () => kill(ConnectError.from(options.signal?.reason));
    options.signal?.addEventListener("abort", onAbort, { once: true });

    child.stdout.on("data", (chunk: Buffer) => {
      outputBytes += chunk.byteLength;
      if (outputBytes > options.maxOutputBytes) {
        kill(new ConnectError(`the PDF would be larger than the limit of ${options.maxOutputBytes} bytes`, Code.ResourceExhausted));
        return;
      }
      onOutput(chunk, (until) => {
        child.stdout.pause();
        until(() => child.stdout.resume());
      });
    });
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (text: string) => {
      if (stderr.length < STDERR_KEPT) stderr += text;
    });
    // ImageMagick may exit (on an error) before reading all of stdin: the EPIPE is expected, its exit code says why.
    child.stdin.on("error", () => undefined);
    child.stdin.end(input);

    let settled = false;
    const settle = (error: ConnectError | undefined) => {
      if (settled) return;
      settled = true;
      span.setAttribute("mcsv.imagemagick.output_bytes", outputBytes);
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
      if (error) reject(error);
      else resolve(outputBytes);
    };
    // A process that cannot be spawned (ENOENT) reports "error" and may never report "close".
    child.once("error", (error) => settle(failure ?? new ConnectError(`ImageMagick could not be run (${command}): ${error.message}`, Code.Internal)));
    // Once killed, its exit is enough: a straggler holding the pipes open must not delay the answer.
    child.once("exit", (code, signal) => {
      if (code !== null) span.setAttribute("process.exit.code", code);
      if (signal) span.setAttribute("mcsv.imagemagick.signal", signal);
      if (!failure) return;
      child.stdout.destroy();
      child.stderr.destroy();
      settle(failure);
    });
    child.once("close", (code, signal) => {
      if (failure) return settle(failure);
      if (code !== 0) {
        return settle(new ConnectError(`ImageMagick failed (${signal ?? `exit code ${code}`}): ${summarise(stderr)}`, codeOfFailure(stderr)));
      }
      settle(undefined);
    });
  });
}

/** PDF viewers (Acrobat among them) refuse pages over 200 inches, i.e. 14,400 points, on a side. */
const MAX_PAGE_INCHES = 200;

/**
 * Dots per inch that make the page the image's size, one pixel per point (72 dpi), unless that would exceed the
 * largest page viewers accept: then just enough more dots per inch to fit, the pixels untouched.
 */
export function pageDensity(width: number, height: number): number {
  return Math.max(72, Math.ceil(Math.max(width, height) / MAX_PAGE_INCHES));
}

/** Arguments that turn `image` on stdin into a one-page PDF on stdout, the page the image's size. */
export function pdfArguments(image: Pick<NormalisedImage, "encoding" | "width" | "height" | "channels">, preset: QualityPreset, limits: ImageMagickLimits): string[] {
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
    "-units", "PixelsPerInch",
    "-density", String(pageDensity(image.width, image.height)),
    ...preset.compressArgs,
    "pdf:-",
  ];
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
