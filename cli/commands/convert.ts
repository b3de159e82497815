/** `mcsv convert <files…>`: every file to a PDF, or all of them to one (--one-pdf), end to end. */
import { mkdir } from "node:fs/promises";
import { dirname } from "node:path";
import type { Client } from "@connectrpc/connect";
import { Command, Option } from "commander";
import { PdfEngine, Quality, type UserService } from "@mcsv/sdk";
import { gatewayClient, gatewayEndpoint, verboseLog, type GlobalOptions } from "../clients.js";
import { convertDocument, type DocumentSettings } from "../convert/convert-document.js";
import { convertFile, type ConvertSettings } from "../convert/convert-file.js";
import { expandInputs, type InputFile } from "../convert/files.js";
import { displayKind, runWithProgress, type DisplayKind } from "../convert/progress.js";
import { CliError, type Endpoint } from "../errors.js";
import { printJson } from "../output.js";
import { boundedRunner } from "../pool.js";
import type { Log } from "../trace.js";
import { documentFlags, documentOptionsFrom, type DocumentFlags } from "./document-options.js";
import { emailOption, positiveInt } from "./options.js";

const MiB = 1024 * 1024;
/**
 * Above this a file goes through CreateUploadUrl (with --one-pdf: the inline files together stay within it): a little
 * under the gateway's default inline limit (GATEWAY_MAX_IMAGE_BYTES, 25 MiB), so that the rest of the request fits too.
 */
export const DEFAULT_MAX_INLINE_BYTES = 24 * MiB;

const QUALITIES = { low: Quality.LOW, medium: Quality.MEDIUM, high: Quality.HIGH, lossless: Quality.LOSSLESS } as const;
const ENGINES = { imagemagick: PdfEngine.IMAGEMAGICK, passthrough: PdfEngine.PASSTHROUGH } as const;

interface ConvertOptions extends GlobalOptions, DocumentFlags {
  email?: string;
  quality?: keyof typeof QUALITIES;
  engine?: keyof typeof ENGINES;
  stripMetadata?: boolean;
  maxWidth?: number;
  maxHeight?: number;
  concurrency: number;
  out: string;
  onePdf?: string;
  overwrite?: boolean;
  maxInlineBytes: number;
}

/** What both ways of converting share: the gateway, where its failures point, --verbose's log and the display. */
interface ConvertRun {
  users: Client<typeof UserService>;
  endpoint: Endpoint;
  log: Log | undefined;
  display: DisplayKind;
  json: boolean;
}

export function convertCommand(): Command {
  const command = new Command("convert")
    .description("convert images to PDFs (or all of them to one): upload, follow each conversion live, download the PDFs")
    .argument("<files...>", "image files or glob patterns (quote globs to let mcsv expand them, in sorted order)")
    .addOption(emailOption("the address that receives the conversion-complete e-mail"))
    .addOption(new Option("--quality <preset>", "quality preset (the service's default: high)").choices(Object.keys(QUALITIES)))
    .addOption(new Option("--engine <engine>", "PDF engine (the service's default unless given)").choices(Object.keys(ENGINES)))
    .option("--strip-metadata", "remove EXIF, ICC and other metadata before embedding")
    .option("--max-width <px>", "scale wider images down to this width", positiveInt("--max-width"))
    .option("--max-height <px>", "scale taller images down to this height", positiveInt("--max-height"))
    .option("-c, --concurrency <n>", "files converted (with --one-pdf: uploaded) at once", positiveInt("--concurrency"), 4)
    .option("-o, --out <dir>", "where the PDFs are saved (photo.jpg → photo.pdf)", ".")
    .addOption(new Option("--one-pdf <file>", "all the images, in the order given, become one PDF saved as this file (a page each)").conflicts("out"))
    .option("--overwrite", "replace an existing PDF of the same name instead of saving as photo-1.pdf")
    .option("--max-inline-bytes <bytes>", "larger files go through CreateUploadUrl and a presigned PUT", positiveInt("--max-inline-bytes"), DEFAULT_MAX_INLINE_BYTES);
  for (const flag of documentFlags()) command.addOption(flag);
  return command
    .addHelpText("after", "\nExit status is 1 when any file failed (the others are converted all the same), 2 for a bad flag.")
    .action(async (patterns: string[], _options: unknown, self: Command) => {
      const options = self.optsWithGlobals<ConvertOptions>();
      if (!options.email) throw new CliError("--email is required: the address that receives the conversion-complete e-mail (or set MCSV_EMAIL)");
      const conversionOptions = {
        ...(options.quality ? { quality: QUALITIES[options.quality] } : {}),
        ...(options.engine ? { engine: ENGINES[options.engine] } : {}),
        stripMetadata: options.stripMetadata === true,
        maxWidth: options.maxWidth ?? 0,
        maxHeight: options.maxHeight ?? 0,
        ...documentOptionsFrom(options),
      };
      const run: ConvertRun = {
        users: gatewayClient(options),
        endpoint: gatewayEndpoint(options),
        log: verboseLog(options),
        display: displayKind(options.json === true),
        json: options.json === true,
      };
      const files = await expandInputs(patterns);
      const common = { email: options.email, options: conversionOptions, maxInlineBytes: options.maxInlineBytes, overwrite: options.overwrite === true };
      if (options.onePdf !== undefined) await convertIntoOne(run, files, { ...common, pdfPath: options.onePdf, concurrency: options.concurrency });
      else await convertEach(run, files, options.concurrency, { ...common, outDir: options.out });
    });
}

/** A PDF per file, `concurrency` at a time; one bad file does not stop the others. */
async function convertEach({ users, endpoint, log, display, json }: ConvertRun, files: InputFile[], concurrency: number, settings: ConvertSettings): Promise<void> {
  await mkdir(settings.outDir, { recursive: true });
  const bounded = boundedRunner(concurrency);
  const outcomes = await runWithProgress(
    display,
    files.map((file) => ({ label: file.path, run: (progress) => bounded(() => convertFile(users, file, settings, endpoint, progress, log)) })),
  );
  if (json) printJson(outcomes);
  const failed = outcomes.filter((o) => !o.ok);
  for (const outcome of failed) process.stderr.write(`mcsv: ${outcome.file}: ${outcome.error}\n`);
  if (failed.length > 0) {
    process.stderr.write(`mcsv: ${failed.length} of ${outcomes.length} files failed\n`);
    process.exitCode = 1;
  }
}

/** One PDF of every file (ConvertDocument); a file that cannot be sent stops it before anything is converted. */
async function convertIntoOne({ users, endpoint, log, display, json }: ConvertRun, files: InputFile[], settings: DocumentSettings): Promise<void> {
  await mkdir(dirname(settings.pdfPath), { recursive: true });
  const [outcome] = await runWithProgress(display, [{ label: settings.pdfPath, run: (progress) => convertDocument(users, files, settings, endpoint, progress, log) }]);
  if (json) printJson(outcome);
  if (!outcome!.ok) {
    for (const image of outcome!.images) if (image.error) process.stderr.write(`mcsv: ${image.file}: ${image.error}\n`);
    process.stderr.write(`mcsv: ${outcome!.file}: ${outcome!.error}\n`);
    process.exitCode = 1;
  }
}
