/**
 * One file end to end: read it, hand it to the gateway (inline, or through CreateUploadUrl and a presigned PUT when
 * it is large), follow the conversion with WatchConversion, and download the PDF. Never throws: a file's failure is
 * its outcome, so that one bad file does not stop the others.
 */
import { readFile, stat } from "node:fs/promises";
import { basename } from "node:path";
import { Code, ConnectError, createContextValues, type Client } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { ConversionState, type Conversion, type ConversionOptionsSchema, type UserService } from "@mcsv/sdk";
import { fileTypeFromBuffer } from "file-type";
import { CliError, describeFailure, type Endpoint } from "../errors.js";
import { enumName } from "../output.js";
import { traceReceiver, type Log } from "../trace.js";
import { redact, savePdf } from "./pdf-file.js";
import type { InputFile } from "./files.js";

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

/** What a file is doing now, for the progress display. */
export type Progress = (stage: string) => void;

/** MIME types CreateUploadUrl accepts (the gateway sniffs the bytes again). */
const UPLOAD_TYPES = new Set(["image/png", "image/jpeg", "image/webp", "image/tiff", "image/gif", "image/avif"]);
/** How often a watch that the server ended early (restart, maximum duration) is opened again. */
const WATCH_ATTEMPTS = 5;

const isTerminal = (state: ConversionState) => state === ConversionState.SUCCEEDED || state === ConversionState.FAILED;

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
    if (input.problem) throw new CliError(input.problem);
    const found = await stat(input.path).catch((error: NodeJS.ErrnoException) => {
      throw error.code === "ENOENT" ? new CliError("no such file") : error;
    });
    if (!found.isFile()) throw new CliError("is not a file");
    const size = found.size;
    if (size === 0) throw new CliError("is empty");
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
    const last = await watch(users, conversion, (c) => {
      outcome.state = enumName(ConversionState, c.state);
      progress(outcome.state);
    });
    outcome.state = enumName(ConversionState, last.state);
    if (last.state === ConversionState.FAILED) throw new CliError(`conversion failed: ${last.error || "no reason given"}`);
    if (!last.pdfUrl) throw new CliError("the conversion succeeded but offers no PDF link (expired?)");
    progress("downloading");
    outcome.pdf = await savePdf(last.pdfUrl, input.path, settings.outDir, settings.overwrite, log);
    outcome.ok = true;
  } catch (error) {
    outcome.error = describeFailure(error, endpoint) ?? (error instanceof Error ? error.message : String(error));
  }
  return outcome;
}

/** CreateUploadUrl, then the PUT with exactly the headers it names; returns the upload id. */
async function upload(users: Client<typeof UserService>, bytes: Buffer, request: { userEmail: string; filename: string }, log?: Log): Promise<string> {
  const contentType = (await fileTypeFromBuffer(bytes))?.mime;
  if (!contentType || !UPLOAD_TYPES.has(contentType)) {
    throw new CliError(`${contentType ? `${contentType} is` : "is"} not a png, jpeg, webp, tiff, gif or avif image`);
  }
  const ticket = await users.createUploadUrl({ ...request, contentType, size: BigInt(bytes.byteLength) });
  const started = performance.now();
  const response = await fetch(ticket.uploadUrl, { method: "PUT", headers: ticket.headers, body: bytes });
  log?.(`PUT ${redact(ticket.uploadUrl)} ${response.status} ${Math.round(performance.now() - started)} ms`);
  await response.body?.cancel();
  if (!response.ok) throw new CliError(`the upload failed: HTTP ${response.status}`);
  return ticket.uploadId;
}

/** Follows the conversion until it ends, watching again when the server ends a watch early. */
async function watch(users: Client<typeof UserService>, accepted: Conversion, onChange: (conversion: Conversion) => void): Promise<Conversion> {
  let last = accepted;
  onChange(last);
  for (let attempt = 1; !isTerminal(last.state); attempt++) {
    try {
      for await (const { conversion } of users.watchConversion({ conversionId: accepted.id })) {
        if (!conversion) continue;
        if (conversion.state !== last.state) onChange(conversion);
        last = conversion;
      }
      if (!isTerminal(last.state) && attempt >= WATCH_ATTEMPTS) throw new CliError(`the watch ended ${attempt} times before the conversion did`);
    } catch (error) {
      if (error instanceof CliError) throw error;
      const code = ConnectError.from(error).code;
      if (attempt >= WATCH_ATTEMPTS || (code !== Code.Unavailable && code !== Code.DeadlineExceeded)) throw error;
      await new Promise((r) => setTimeout(r, 500 * attempt));
    }
  }
  return last;
}
