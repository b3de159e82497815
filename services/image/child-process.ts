/**
 * Runs an external program the way the image service runs every one (ImageMagick in imagemagick.ts, ocrmypdf in
 * ocr.ts): arguments as an array, never a shell; bytes in on stdin and out on stdout; in its own process group, so
 * that one SIGKILL also reaches whatever it started (Ghostscript, tesseract, ImageMagick's delegates); killed when it
 * overstays, when the caller's AbortSignal fires, or when it writes more than allowed.
 */
import { spawn } from "node:child_process";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Span } from "@opentelemetry/api";

export interface ChildRunOptions {
  /** The process is killed with SIGKILL after this long (deadline_exceeded). */
  timeoutMs: number;
  /** Largest output accepted; the process is killed when it writes more (resource_exhausted). */
  maxOutputBytes: number;
  /** Kills the process when aborted (the RPC's deadline or cancellation). */
  signal?: AbortSignal | undefined;
  /** Environment of the process (the service's own when unset). */
  env?: NodeJS.ProcessEnv | undefined;
}

/** How one kind of program is described in errors and spans, and how its failures are told apart. */
export interface ChildProgram {
  /** Its name in messages: "ImageMagick took longer than …", "ocrmypdf failed (exit code 2): …". */
  displayName: string;
  /** What it writes on stdout, in the refusal of too much output: "the PDF would be larger than …". */
  outputName: string;
  /** Prefix of the span attributes besides process.*: `<prefix>.output_bytes`, `<prefix>.signal`. */
  attributePrefix: string;
  /** The Connect code of a non-zero exit, from what it wrote on stderr and its exit code (null when signalled). */
  classifyFailure(stderr: string, exitCode: number | null): Code;
}

/** Takes each chunk of stdout; `pause` stops reading until the function it is given calls `resume` (backpressure). */
export type OutputSink = (chunk: Buffer, pause: (until: (resume: () => void) => void) => void) => void;

/** Enough of stderr for an error message; a program that writes megabytes of warnings does not fill memory. */
const STDERR_KEPT = 4_096;

/** The program's complaint, first lines only (short for logs and errors, and never a dump of data). */
function summarise(stderr: string): string {
  const lines = stderr
    .split("\n")
    .map((line) => line.trim())
    .filter(Boolean);
  const text = lines.slice(0, 3).join("; ");
  return text.length > 300 ? `${text.slice(0, 300)}…` : text || "no message";
}

/**
 * Spawns `command args` with `input` on stdin and hands `onOutput` each chunk of its stdout; resolves with the bytes
 * written once it exited with 0. Sets process.pid, process.exit.code, `<prefix>.signal` and `<prefix>.output_bytes`
 * on `span`. A program that cannot be started (ENOENT, EACCES) rejects with Code.Internal, the spawn error as cause.
 */
export function spawnChildProcess(
  program: ChildProgram,
  command: string,
  args: readonly string[],
  input: Uint8Array,
  options: ChildRunOptions,
  span: Span,
  onOutput: OutputSink,
): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    options.signal?.throwIfAborted();
    // Its own process group, so that a kill also reaches any process it started.
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
      () => kill(new ConnectError(`${program.displayName} took longer than ${options.timeoutMs} ms and was stopped`, Code.DeadlineExceeded)),
      options.timeoutMs,
    );
    const onAbort = () => kill(ConnectError.from(options.signal?.reason));
    options.signal?.addEventListener("abort", onAbort, { once: true });

    child.stdout.on("data", (chunk: Buffer) => {
      outputBytes += chunk.byteLength;
      if (outputBytes > options.maxOutputBytes) {
        kill(new ConnectError(`${program.outputName} would be larger than the limit of ${options.maxOutputBytes} bytes`, Code.ResourceExhausted));
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
    // A program may exit (on an error) before reading all of stdin: the EPIPE is expected, its exit code says why.
    child.stdin.on("error", () => undefined);
    child.stdin.end(input);

    let settled = false;
    const settle = (error: ConnectError | undefined) => {
      if (settled) return;
      settled = true;
      span.setAttribute(`${program.attributePrefix}.output_bytes`, outputBytes);
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
      if (error) reject(error);
      else resolve(outputBytes);
    };
    // A process that cannot be spawned (ENOENT) reports "error" and may never report "close".
    child.once("error", (error) =>
      settle(failure ?? new ConnectError(`${program.displayName} could not be run (${command}): ${error.message}`, Code.Internal, undefined, undefined, error)),
    );
    // Once killed, its exit is enough: a straggler holding the pipes open must not delay the answer.
    child.once("exit", (code, signal) => {
      if (code !== null) span.setAttribute("process.exit.code", code);
      if (signal) span.setAttribute(`${program.attributePrefix}.signal`, signal);
      if (!failure) return;
      child.stdout.destroy();
      child.stderr.destroy();
      settle(failure);
    });
    child.once("close", (code, signal) => {
      if (failure) return settle(failure);
      if (code !== 0) {
        return settle(new ConnectError(`${program.displayName} failed (${signal ?? `exit code ${code}`}): ${summarise(stderr)}`, program.classifyFailure(stderr, code)));
      }
      settle(undefined);
    });
  });
}

/** Runs like spawnChildProcess and resolves with everything the program wrote on stdout. */
export async function collectChildProcess(
  program: ChildProgram,
  command: string,
  args: readonly string[],
  input: Uint8Array,
  options: ChildRunOptions,
  span: Span,
): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const bytes = await spawnChildProcess(program, command, args, input, options, span, (chunk) => void chunks.push(chunk));
  return Buffer.concat(chunks, bytes);
}

/** Whether `error` says the program is not there (spawn's ENOENT, kept as the cause by spawnChildProcess). */
export function isMissingProgram(error: unknown): boolean {
  return error instanceof ConnectError && (error.cause as NodeJS.ErrnoException | undefined)?.code === "ENOENT";
}
