/**
 * Searchable text for the image service's PDFs: a spawned ocrmypdf (tesseract recognises, Ghostscript rasterises the
 * pages for it) adds an invisible text layer to every page and leaves every image byte for byte as it was. It keeps
 * the input's Title, Author, XMP and output intents (a PDF/A stays PDF/A) and sets its own Creator and Producer.
 *
 * Each run goes through child-process.ts like ImageMagick: PDF in on stdin, PDF out on stdout, its own process group
 * (ocrmypdf, tesseract and Ghostscript die together), a kill timer, the caller's AbortSignal and an output cap. Its
 * temporary files, the recognised text included, live in a private directory that is removed whatever happens.
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { withSpan } from "../shared/tracing.js";
import { collectChildProcess, isMissingProgram, type ChildProgram, type ChildRunOptions } from "./child-process.js";

export interface TextLayer {
  pdf: Buffer;
  /** Words recognised over all pages. */
  words: number;
  /** The languages it was recognised in. */
  languages: string[];
}

export interface OcrEngine {
  /** Installed tesseract languages (osd excluded), cached; [] when OCR is not installed. */
  languages(): Promise<string[]>;
  /** Resolves with a description like "ocrmypdf 14.0.1, languages eng" when OCR can run; rejects saying why not. */
  ready(): Promise<string>;
  /** The requested languages, each once, if all are installed; else failed_precondition naming what is installed. */
  checkLanguages(requested: readonly string[]): Promise<string[]>;
  /** Adds an invisible text layer to every page of `pdf`; images untouched. `timeoutMs` replaces the configured one. */
  addTextLayer(pdf: Uint8Array, languages: readonly string[], signal?: AbortSignal, timeoutMs?: number): Promise<TextLayer>;
}

export interface OcrMyPdfOptions {
  /** The ocrmypdf command; "ocrmypdf" (on PATH) by default. */
  command?: string;
  /** The tesseract whose languages are listed: the one ocrmypdf runs, i.e. "tesseract" on PATH by default. */
  tesseractCommand?: string;
  /** ocrmypdf, with its tesseract and Ghostscript, is killed after this long (deadline_exceeded). */
  timeoutMs: number;
  /** Largest PDF accepted from it (resource_exhausted beyond). */
  maxOutputBytes: number;
  /** Environment of its processes (the service's own when unset). */
  env?: NodeJS.ProcessEnv;
}

/** Tesseract's orientation and script detection data: listed among the languages, but recognises no text. */
const NOT_A_LANGUAGE = "osd";
/** The probes (`--version`, `--list-langs`) answer at once; these bound a hung or chatty one. */
const PROBE_TIMEOUT_MS = 10_000;
const PROBE_MAX_OUTPUT_BYTES = 64 * 1024;

/**
 * ocrmypdf's exit codes (ocrmypdf.exceptions.ExitCode): what the input is to blame for is invalid_argument, what
 * the installation lacks is failed_precondition; the rest (bad arguments, a crashed tesseract or Ghostscript, an
 * invalid output) is ours.
 */
function codeOfOcrMyPdfExit(_stderr: string, exitCode: number | null): Code {
  switch (exitCode) {
    case 2: // input_file: not a PDF it can read
    case 8: // encrypted_pdf
      return Code.InvalidArgument;
    case 3: // missing_dependency: Ghostscript, or tesseract or one of its languages
    case 6: // already_done_ocr: a page has text already (no --skip-text or --force-ocr is passed)
      return Code.FailedPrecondition;
    default:
      return Code.Internal;
  }
}

const OCRMYPDF: ChildProgram = {
  displayName: "ocrmypdf",
  outputName: "the PDF with its text layer",
  attributePrefix: "mcsv.ocr",
  classifyFailure: codeOfOcrMyPdfExit,
};

const OCRMYPDF_VERSION: ChildProgram = { ...OCRMYPDF, outputName: "ocrmypdf's version" };

const TESSERACT: ChildProgram = {
  displayName: "tesseract",
  outputName: "tesseract's language list",
  attributePrefix: "mcsv.ocr.tesseract",
  classifyFailure: () => Code.Internal,
};

function notAvailable(reason: string): ConnectError {
  return new ConnectError(`OCR is not available: ${reason}`, Code.FailedPrecondition);
}

/** The language codes `tesseract --list-langs` prints, one a line after its heading. */
export function parseLanguageList(listing: string): string[] {
  return listing
    .split("\n")
    .slice(1)
    .map((line) => line.trim())
    .filter((line) => line !== "" && line !== NOT_A_LANGUAGE);
}

/** What ocrmypdf writes in the sidecar for a page tesseract gave up on (timed out, or too large for it). */
const SKIPPED_PAGE_MARKERS = /\[skipped page\]|\[OCR skipped on page\(s\) [\d-]+\]/g;

/** Whitespace-separated tokens of the recognised text; form feeds between pages and skip markers are no words. */
export function countWords(sidecar: string): number {
  return sidecar.replace(SKIPPED_PAGE_MARKERS, " ").split(/\s+/).filter(Boolean).length;
}

function isPdf(bytes: Uint8Array): boolean {
  return Buffer.from(bytes.buffer, bytes.byteOffset, Math.min(5, bytes.byteLength)).toString("latin1") === "%PDF-";
}

/** OCR by a spawned ocrmypdf, one process group per PDF, one tesseract thread each. */
export class OcrMyPdf implements OcrEngine {
  private readonly command: string;
  private readonly tesseractCommand: string;
  private installed: Promise<string[]> | undefined;
  private probed: Promise<string> | undefined;

  constructor(readonly options: OcrMyPdfOptions) {
    this.command = options.command ?? "ocrmypdf";
    this.tesseractCommand = options.tesseractCommand ?? "tesseract";
  }

  languages(): Promise<string[]> {
    return this.installedLanguages().catch(() => []);
  }

  /** A success is cached for good; a failure is retried on the next call (a package installed meanwhile counts). */
  ready(): Promise<string> {
    this.probed ??= this.probe().catch((error: unknown) => {
      this.probed = undefined;
      throw error;
    });
    return this.probed;
  }

  async addTextLayer(pdf: Uint8Array, languages: readonly string[], signal?: AbortSignal, timeoutMs = this.options.timeoutMs): Promise<TextLayer> {
    signal?.throwIfAborted();
    if (!isPdf(pdf)) throw new ConnectError("OCR takes a PDF, and this is not one", Code.InvalidArgument);
    const chosen = await this.checkLanguages(languages);
    // Mode 0700: the recognised text is the document's content.
    const dir = await mkdtemp(join(tmpdir(), "mcsv-ocr-"));
    try {
      const sidecar = join(dir, "text.txt");
      const args = [
        "--output-type", "pdf", // not PDF/A: the PDF stays as it was, plus the text
        "--optimize", "0", // no recompression: the images stay byte for byte
        "--jobs", "1",
        "--quiet", // stderr then holds only warnings and errors, for the error message
        "-l", chosen.join("+"),
        "--sidecar", sidecar,
        // Never before our own kill timer: a page tesseract gave up on would silently have no text.
        "--tesseract-timeout", String(Math.max(1, Math.ceil(timeoutMs / 1000))),
        "-", "-",
      ];
      // One tesseract thread per conversion (the service runs conversions in parallel already); ocrmypdf's own
      // temporary files go into `dir` too, so that a SIGKILL leaves nothing behind.
      const env = { ...(this.options.env ?? process.env), OMP_THREAD_LIMIT: "1", TMPDIR: dir };
      const attributes = {
        "process.executable.name": this.command,
        "process.command_args": [this.command, ...args],
        "mcsv.ocr.languages": chosen,
        "mcsv.ocr.input_bytes": pdf.byteLength,
      };
      return await withSpan("ocrmypdf", attributes, async (span) => {
        const run: ChildRunOptions = { timeoutMs, maxOutputBytes: this.options.maxOutputBytes, signal, env };
        const output = await collectChildProcess(OCRMYPDF, this.command, args, pdf, run, span).catch((error: unknown) => {
          throw isMissingProgram(error) ? notAvailable(`${this.command} is not installed`) : error;
        });
        const words = countWords(await readFile(sidecar, "utf8"));
        span.setAttribute("mcsv.ocr.words", words);
        return { pdf: output, words, languages: chosen };
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  /** The requested languages, each once, all installed; else failed_precondition naming what is installed. */
  async checkLanguages(requested: readonly string[]): Promise<string[]> {
    const wanted = [...new Set(requested)];
    if (wanted.length === 0) throw new ConnectError("name at least one OCR language", Code.InvalidArgument);
    const installed = await this.installedLanguages();
    // Only codes tesseract listed pass: nothing else from a request ever reaches the command line.
    const missing = wanted.filter((language) => !installed.includes(language));
    if (missing.length > 0) {
      const names = missing.map((language) => JSON.stringify(language)).join(", ");
      const subject = missing.length === 1 ? `language ${names} is` : `languages ${names} are`;
      throw new ConnectError(`OCR ${subject} not installed here; installed: ${installed.join(", ")}`, Code.FailedPrecondition);
    }
    return wanted;
  }

  /** `tesseract --list-langs` without osd; cached once it listed a language, asked again otherwise. */
  private installedLanguages(): Promise<string[]> {
    this.installed ??= this.listLanguages().catch((error: unknown) => {
      this.installed = undefined;
      throw error;
    });
    return this.installed;
  }

  private async listLanguages(): Promise<string[]> {
    const listing = await this.runProbe(TESSERACT, this.tesseractCommand, ["--list-langs"]);
    const languages = parseLanguageList(listing);
    if (languages.length === 0) throw notAvailable(`${this.tesseractCommand} has no language data installed`);
    return languages;
  }

  private async probe(): Promise<string> {
    const version = (await this.runProbe(OCRMYPDF_VERSION, this.command, ["--version"])).trim();
    const languages = await this.installedLanguages();
    // "14.0.1+dfsg1" as Debian packages it: the version is the part before the packaging suffix.
    return `ocrmypdf ${/^[\d.]+/.exec(version)?.[0] ?? version}, languages ${languages.join(", ")}`;
  }

  /** Runs a short probe with no input and returns its stdout; a missing command is failed_precondition. */
  private async runProbe(program: ChildProgram, command: string, args: string[]): Promise<string> {
    const options: ChildRunOptions = { timeoutMs: PROBE_TIMEOUT_MS, maxOutputBytes: PROBE_MAX_OUTPUT_BYTES, env: this.options.env };
    const attributes = { "process.executable.name": command, "process.command_args": [command, ...args] };
    const output = await withSpan(`${command} ${args.join(" ")}`, attributes, (span) => collectChildProcess(program, command, args, new Uint8Array(0), options, span)).catch(
      (error: unknown) => {
        throw isMissingProgram(error) ? notAvailable(`${command} is not installed`) : error;
      },
    );
    return output.toString("utf8");
  }
}
