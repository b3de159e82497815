/**
 * Rows of the gateway's tables and their mapping to the mcsv.v1 messages. A succeeded conversion stores its PDF's
 * key; its pdf_url is presigned whenever the conversion is read, so it is always fresh.
 */
import { create, fromJson, toJson, type JsonObject, type JsonValue } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { ConversionOptionsSchema, ConversionSchema, ConversionState, UserSchema, type Conversion, type ConversionOptions, type User } from "@mcsv/sdk";
import type { PresignedUrl } from "../shared/storage.js";

export interface UserRow {
  id: string;
  /** The tenant that registered the user; every read is scoped to it. */
  tenant: string;
  name: string;
  email: string;
  idempotency_key: string | null;
  created_at: Date;
}

export type StateName = "queued" | "processing" | "succeeded" | "failed";

export interface ConversionRow {
  id: string;
  seq: string;
  tenant: string;
  user_email: string;
  state: StateName;
  filename: string;
  input_format: string;
  input_size: string;
  output_size: string;
  width: number;
  height: number;
  duration_ms: string;
  options: JsonObject;
  source: "inline" | "upload";
  upload_id: string | null;
  original_key: string;
  pdf_key: string | null;
  error: string;
  callback_url: string | null;
  idempotency_key: string | null;
  request_digest: string;
  created_at: Date;
  updated_at: Date;
  finished_at: Date | null;
  /** Pages of the PDF (1 unless a document), and how many are converted so far. */
  page_count: number;
  pages_done: number;
  /** A document's originals in page order (null for one image: original_key). */
  page_keys: string[] | null;
  /** The searchable text OCR added (null without OCR). */
  text_words: number | null;
  text_languages: string[] | null;
}

export interface UploadRow {
  id: string;
  tenant: string;
  user_email: string;
  filename: string;
  content_type: string;
  size: string;
  expires_at: Date;
  conversion_id: string | null;
}

export const STATE_NAMES: Record<StateName, ConversionState> = {
  queued: ConversionState.QUEUED,
  processing: ConversionState.PROCESSING,
  succeeded: ConversionState.SUCCEEDED,
  failed: ConversionState.FAILED,
};

export function isTerminal(state: StateName): boolean {
  return state === "succeeded" || state === "failed";
}

export function toUser(row: UserRow): User {
  return create(UserSchema, { id: row.id, name: row.name, email: row.email, createdAt: timestampFromDate(row.created_at) });
}

export function optionsToJson(options: ConversionOptions): JsonObject {
  return toJson(ConversionOptionsSchema, options) as JsonObject;
}

export function optionsFromJson(json: JsonValue): ConversionOptions {
  return fromJson(ConversionOptionsSchema, json);
}

/**
 * Whether a PDF that the storage sweep may delete at `expiresAt` counts as gone. A second early: object stores keep
 * whole seconds (the sweep may see the PDF as up to a second older than it is), and no shorter link is signed.
 */
export function isPdfExpired(expiresAt: Date, now = Date.now()): boolean {
  return expiresAt.getTime() - now < 1_000;
}

/**
 * The conversion as the API shows it; `pdf` is the presigned link of a succeeded conversion, `pdfExpiresAt` when its
 * PDF is deleted (after which there is no link, and pdf_expired says why).
 */
export function toConversion(row: ConversionRow, pdf?: PresignedUrl, pdfExpiresAt?: Date): Conversion {
  const expired = pdfExpiresAt !== undefined && isPdfExpired(pdfExpiresAt);
  return create(ConversionSchema, {
    id: row.id,
    userEmail: row.user_email,
    state: STATE_NAMES[row.state],
    filename: row.filename,
    inputSize: BigInt(row.input_size),
    outputSize: BigInt(row.output_size),
    width: row.width,
    height: row.height,
    error: row.error,
    createdAt: timestampFromDate(row.created_at),
    updatedAt: timestampFromDate(row.updated_at),
    options: optionsFromJson(row.options),
    inputFormat: row.input_format,
    pageCount: row.page_count,
    pagesDone: row.pages_done,
    ...(row.text_words !== null ? { text: { wordCount: row.text_words, languages: row.text_languages ?? [] } } : {}),
    ...(pdf && !expired ? { pdfUrl: pdf.url, pdfUrlExpiresAt: timestampFromDate(pdf.expiresAt) } : {}),
    ...(pdfExpiresAt ? { pdfExpiresAt: timestampFromDate(pdfExpiresAt), pdfExpired: expired } : {}),
  });
}

/** The PDF's download name: the original's name with a .pdf extension. */
export function pdfFilename(filename: string): string {
  const base = filename.replace(/\.[^.]*$/, "") || "image";
  return `${base}.pdf`;
}
