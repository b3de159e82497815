/** `mcsv convert <files…>`: every file to a PDF, end to end, several at once. */
import { mkdir } from "node:fs/promises";
import { Command, Option } from "commander";
import { PdfEngine, Quality } from "@mcsv/sdk";
import { gatewayClient, gatewayEndpoint, verboseLog, type GlobalOptions } from "../clients.js";
import { convertFile, type ConvertSettings } from "../convert/convert-file.js";
import { expandInputs } from "../convert/files.js";
import { displayKind, runWithProgress } from "../convert/progress.js";
import { CliError } from "../errors.js";
import { printJson } from "../output.js";
import { boundedRunner } from "../pool.js";
import { emailOption, positiveInt } from "./options.js";

const MiB = 1024 * 1024;
/**
 * Above this a file goes through CreateUploadUrl: a little under the gateway's default inline limit
 * (GATEWAY_MAX_IMAGE_BYTES, 25 MiB), so that the rest of the request fits too.
 */
export const DEFAULT_MAX_INLINE_BYTES = 24 * MiB;

const QUALITIES = { low: Quality.LOW, medium: Quality.MEDIUM, high: Quality.HIGH, lossless: Quality.LOSSLESS } as const;
const ENGINES = { imagemagick: PdfEngine.IMAGEMAGICK, passthrough: PdfEngine.PASSTHROUGH } as const;

interface ConvertOptions extends GlobalOptions {
  email?: string;
  quality?: keyof typeof QUALITIES;
  engine?: keyof typeof ENGINES;
  stripMetadata?: boolean;
  maxWidth?: number;
  maxHeight?: number;
  concurrency: number;
  out: string;
  overwrite?: boolean;
  maxInlineBytes: number;
}

export function convertCommand(): Command {
  return new Command("convert")
    .description("convert images to PDFs: upload, follow each conversion live, download the PDFs")
    .argument("<files...>", "image files or glob patterns (quote globs to let mcsv expand them)")
    .addOption(emailOption("the address that receives the conversion-complete e-mail"))
    .addOption(new Option("--quality <preset>", "quality preset (the service's default: high)").choices(Object.keys(QUALITIES)))
    .addOption(new Option("--engine <engine>", "PDF engine (the service's default unless given)").choices(Object.keys(ENGINES)))
    .option("--strip-metadata", "remove EXIF, ICC and other metadata before embedding")
    .option("--max-width <px>", "scale wider images down to this width", positiveInt("--max-width"))
    .option("--max-height <px>", "scale taller images down to this height", positiveInt("--max-height"))
    .option("-c, --concurrency <n>", "files converted at once", positiveInt("--concurrency"), 4)
    .option("-o, --out <dir>", "where the PDFs are saved (photo.jpg → photo.pdf)", ".")
    .option("--overwrite", "replace an existing PDF of the same name instead of saving as photo-1.pdf")
    .option("--max-inline-bytes <bytes>", "larger files go through CreateUploadUrl and a presigned PUT", positiveInt("--max-inline-bytes"), DEFAULT_MAX_INLINE_BYTES)
    .addHelpText("after", "\nExit status is 1 when any file failed; the others are converted all the same.")
    .action(async (patterns: string[], _options: unknown, command: Command) => {
      const options = command.optsWithGlobals<ConvertOptions>();
      if (!options.email) throw new CliError("--email is required: the address that receives the conversion-complete e-mail (or set MCSV_EMAIL)");
      const settings: ConvertSettings = {
        email: options.email,
        options: {
          ...(options.quality ? { quality: QUALITIES[options.quality] } : {}),
          ...(options.engine ? { engine: ENGINES[options.engine] } : {}),
          stripMetadata: options.stripMetadata === true,
          maxWidth: options.maxWidth ?? 0,
          maxHeight: options.maxHeight ?? 0,
        },
        maxInlineBytes: options.maxInlineBytes,
        outDir: options.out,
        overwrite: options.overwrite === true,
      };
      const users = gatewayClient(options);
      const endpoint = gatewayEndpoint(options);
      const log = verboseLog(options);
      await mkdir(settings.outDir, { recursive: true });
      const files = await expandInputs(patterns);
      const bounded = boundedRunner(options.concurrency);
      const outcomes = await runWithProgress(displayKind(options.json === true), files, (file, progress) =>
        bounded(() => convertFile(users, file, settings, endpoint, progress, log)),
      );
      if (options.json) printJson(outcomes);
      const failed = outcomes.filter((o) => !o.ok);
      for (const outcome of failed) process.stderr.write(`mcsv: ${outcome.file}: ${outcome.error}\n`);
      if (failed.length > 0) {
        process.stderr.write(`mcsv: ${failed.length} of ${outcomes.length} files failed\n`);
        process.exitCode = 1;
      }
    });
}
