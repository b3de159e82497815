/**
 * Several files, one PDF (`convert --one-pdf`): every image is checked before anything is sent; each goes inline, or
 * through CreateUploadUrl and a presigned PUT when the inline ones together would pass --max-inline-bytes (the
 * gateway limits inline images together); then ConvertDocument, a page per image in the order given, followed page
 * by page with WatchConversion, and the PDF saved under the name given. Never throws: a failure is the outcome.
 */
import { readFile } from "node:fs/promises";
import { basename, dirname } from "node:path";
import { createContextValues, type Client } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { ConversionState, type ConversionOptionsSchema, type DocumentImageSchema, type UserService } from "@mcsv/sdk";
import { pageProgress, pagesSummary, textSummary } from "../conversion-summary.js";
import { CliError, describeFailure, type Endpoint } from "../errors.js";
import { enumName } from "../output.js";
import { boundedRunner } from "../pool.js";
import { traceReceiver, type Log } from "../trace.js";
import type { Progress } from "./convert-file.js";
import { sizeOf, type InputFile } from "./files.js";
import { savePdf } from "./pdf-file.js";
import { upload } from "./upload.js";
import { followConversion } from "./watch.js";

export interface DocumentSettings {
  email: string;
  options: MessageInitShape<typeof ConversionOptionsSchema>;
  /** The inline images together stay within this; the others go through CreateUploadUrl. */
  maxInlineBytes: number;
  /** Where the PDF is saved (the next free name like it, unless overwrite). */
  pdfPath: string;
  overwrite: boolean;
  /** Uploads at once. */
  concurrency: number;
}

/** One page's image, and how it reached the gateway. */
export interface PageImage {
  file: string;
  source: "inline" | "upload" | null;
  /** Why it could not be sent (then nothing was converted). */
  error: string | null;
}

export interface DocumentOutcome {
  /** The PDF's name as --one-pdf gave it. */
  file: string;
  ok: boolean;
  conversionId: string | null;
  /** The conversion's last state (succeeded, failed, …); null when none was made. */
  state: string | null;
  /** Where the PDF was saved. */
  pdf: string | null;
  pageCount: number | null;
  /** Words OCR recognised; null without --ocr (or before the conversion succeeded). */
  wordCount: number | null;
  error: string | null;
  /** The trace of the ConvertDocument call, which the whole conversion continues. */
  traceId: string | null;
  images: PageImage[];
}

/** Which images go inline: the smallest first while their total stays within the budget, so that the fewest are uploaded. */
export function inlineChoice(sizes: readonly number[], budget: number): boolean[] {
  const inline = sizes.map(() => false);
  let left = budget;
  for (const { size, index } of sizes.map((size, index) => ({ size, index })).sort((a, b) => a.size - b.size || a.index - b.index)) {
    if (size > left) break;
    inline[index] = true;
    left -= size;
  }
  return inline;
}

/** The gateway names a page's fields by index (images[1].imageData); the file says more. */
const withFileNames = (message: string, images: readonly PageImage[]) =>
  message.replace(/images\[(\d+)\]/g, (field, index: string) => (images[Number(index)] ? `${field} (${images[Number(index)]!.file})` : field));

export async function convertDocument(
  users: Client<typeof UserService>,
  inputs: readonly InputFile[],
  settings: DocumentSettings,
  endpoint: Endpoint,
  progress: Progress,
  log?: Log,
): Promise<DocumentOutcome> {
  const images: PageImage[] = inputs.map((input) => ({ file: input.path, source: null, error: null }));
  const outcome: DocumentOutcome = { file: settings.pdfPath, ok: false, conversionId: null, state: null, pdf: null, pageCount: null, wordCount: null, error: null, traceId: null, images };
  const contextValues = createContextValues().set(traceReceiver, (traceId) => (outcome.traceId = traceId ?? null));
  const failedImages = (what: string) => {
    const failed = images.filter((image) => image.error !== null).length;
    return failed > 0 ? new CliError(`${failed} of ${images.length} images ${what}; nothing was converted`) : undefined;
  };
  try {
    if (inputs.length === 0) throw new CliError("no images given");
    progress(`checking ${inputs.length} images`);
    const sizes: number[] = [];
    await Promise.all(
      inputs.map(async (input, i) => {
        sizes[i] = await sizeOf(input).catch((error: unknown) => {
          images[i]!.error = describeFailure(error) ?? String(error);
          return 0;
        });
      }),
    );
    const unreadable = failedImages("cannot be sent");
    if (unreadable) throw unreadable;
    const inline = inlineChoice(sizes, settings.maxInlineBytes);
    inline.forEach((isInline, i) => (images[i]!.source = isInline ? "inline" : "upload"));

    const uploads = inline.filter((isInline) => !isInline).length;
    let started = 0;
    const bounded = boundedRunner(settings.concurrency);
    const pages = await Promise.all(
      inputs.map(async (input, i): Promise<MessageInitShape<typeof DocumentImageSchema>> => {
        if (inline[i]) return { source: { case: "imageData", value: await readFile(input.path) } };
        // Read in its turn: only `concurrency` large files are in memory at once.
        return bounded(async () => {
          try {
            progress(`uploading ${++started} of ${uploads} images`);
            const uploadId = await upload(users, await readFile(input.path), { userEmail: settings.email, filename: basename(input.path) }, log);
            return { source: { case: "uploadId", value: uploadId } };
          } catch (error) {
            images[i]!.error = describeFailure(error, endpoint) ?? (error instanceof Error ? error.message : String(error));
            return {};
          }
        });
      }),
    );
    const notUploaded = failedImages("could not be uploaded");
    if (notUploaded) throw notUploaded;

    progress("sending");
    const { conversion } = await users.convertDocument(
      { userEmail: settings.email, filename: basename(settings.pdfPath), options: settings.options, images: pages },
      { contextValues },
    );
    if (!conversion) throw new CliError("the gateway answered without a conversion");
    outcome.conversionId = conversion.id;
    const last = await followConversion(users, conversion, (c) => {
      outcome.state = enumName(ConversionState, c.state);
      progress(pageProgress(c) ?? outcome.state);
    });
    outcome.state = enumName(ConversionState, last.state);
    outcome.pageCount = last.pageCount;
    outcome.wordCount = last.text?.wordCount ?? null;
    if (last.state === ConversionState.FAILED) throw new CliError(`conversion failed: ${last.error || "no reason given"}`);
    if (!last.pdfUrl) throw new CliError("the conversion succeeded but offers no PDF link (expired?)");
    progress(["succeeded", pagesSummary(last), textSummary(last)].filter(Boolean).join(", "));
    outcome.pdf = await savePdf(last.pdfUrl, { dir: dirname(settings.pdfPath), name: basename(settings.pdfPath) }, settings.overwrite, log);
    outcome.ok = true;
  } catch (error) {
    outcome.error = withFileNames(describeFailure(error, endpoint) ?? (error instanceof Error ? error.message : String(error)), images);
  }
  return outcome;
}
