/**
 * One file end to end: read it, hand it to the gateway (inline, or through CreateUploadUrl and a presigned PUT when
 * it is large), follow the conversion with WatchConversion, and download the PDF. Never throws: a file's failure is
 * its outcome, so that one bad file does not stop the others.
 */
import { readFile } from "node:fs/promises";
import { basename } from "node:path";
import { createContextValues, type Client } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { ConversionState, type Conversion, type ConversionOptionsSchema, type UserService } from "@mcsv/sdk";
import { CliError, describeFailure, type Endpoint } from "../errors.js";
import { enumName } from "../output.js";
import { traceReceiver, type Log } from "../trace.js";
import { pdfNameFor, savePdf } from "./pdf-file.js";
import { sizeOf, type InputFile } from "./files.js";
import { upload } from "./upload.js";
import { followConversion } from "./watch.js";

export interface ConvertSettings {
  email: string;
  options: MessageInitShape<typeof ConversionOptionsSchema>;
  /** Files larger than this go through CreateUploadUrl instead of inline. */
  maxInlineBytes: number;
  outDir: string;
  overwrite: boolean;
}

export interface FileOutcome {
  file: string;
  ok: boolean;
  /** How the image reached the gateway. */
  source: "inline" | "upload" | null;
  conversionId: string | null;
  /** The conversion's last state (succeeded, failed, …); null when none was made. */
  state: string | null;
  /** Where the PDF was saved. */
  pdf: string | null;
  error: string | null;
  /** The trace of the ConvertImage call, which the whole conversion continues. */
  traceId: string | null;
}

/** What a file (or a document) is doing now, for the progress display. */
export type Progress = (stage: string) => void;

export async function convertFile(
  users: Client<typeof UserService>,
  input: InputFile,
  settings: ConvertSettings,
  endpoint: Endpoint,
  progress: Progress,
  log?: Log,
): Promise<FileOutcome> {
  const outcome: FileOutcome = { file: input.path, ok: false, source: null, conversionId: null, state: null, pdf: null, error: null, traceId: null };
  const contextValues = createContextValues().set(traceReceiver, (traceId) => (outcome.traceId = traceId ?? null));
  try {
    const size = await sizeOf(input);
    const bytes = await readFile(input.path);
    const request = { userEmail: settings.email, filename: basename(input.path), options: settings.options };
    let conversion: Conversion | undefined;
    if (size <= settings.maxInlineBytes) {
      outcome.source = "inline";
      progress("sending");
      ({ conversion } = await users.convertImage({ ...request, source: { case: "imageData", value: bytes } }, { contextValues }));
    } else {
      outcome.source = "upload";
      progress(`uploading ${size} bytes`);
      const uploadId = await upload(users, bytes, request, log);
      ({ conversion } = await users.convertImage({ ...request, source: { case: "uploadId", value: uploadId } }, { contextValues }));
    }
    if (!conversion) throw new CliError("the gateway answered without a conversion");
    outcome.conversionId = conversion.id;
    const last = await followConversion(users, conversion, (c) => {
      outcome.state = enumName(ConversionState, c.state);
      progress(outcome.state);
    });
    outcome.state = enumName(ConversionState, last.state);
    if (last.state === ConversionState.FAILED) throw new CliError(`conversion failed: ${last.error || "no reason given"}`);
    if (!last.pdfUrl) throw new CliError("the conversion succeeded but offers no PDF link (expired?)");
    progress("downloading");
    outcome.pdf = await savePdf(last.pdfUrl, { dir: settings.outDir, name: pdfNameFor(input.path) }, settings.overwrite, log);
    outcome.ok = true;
  } catch (error) {
    outcome.error = describeFailure(error, endpoint) ?? (error instanceof Error ? error.message : String(error));
  }
  return outcome;
}
