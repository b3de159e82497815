/**
 * Field rules of the gateway's requests. Each check returns undefined when the value is fine, or what is wrong with
 * it, so that a handler can report every bad field at once through Violations.
 */
import { checkDocumentOptions } from "../shared/document-options.js";
import { z } from "zod";
import { ConversionOptionsSchema, PdfEngine, Quality, type ConversionOptions } from "@mcsv/sdk";
import { create } from "@bufbuild/protobuf";

const CONTROL = /\p{Cc}/u;
const emailSyntax = z.email();

export const MAX_NAME_LENGTH = 200;
export const MAX_EMAIL_LENGTH = 254;
export const MAX_IDEMPOTENCY_KEY_LENGTH = 200;
export const MAX_FILENAME_LENGTH = 255;
export const MAX_DIMENSION = 20_000;

/** Length in characters (code points), as a person counts them. */
function length(value: string): number {
  let n = 0;
  for (const _ of value) n++;
  return n;
}

export type Checked<T> = { value: T; problem?: undefined } | { value?: undefined; problem: string };

export function checkName(raw: string): Checked<string> {
  const name = raw.trim();
  if (name === "") return { problem: "is required" };
  if (/[\r\n]/.test(name)) return { problem: "must not contain line breaks" };
  if (CONTROL.test(name)) return { problem: "must not contain control characters" };
  if (length(name) > MAX_NAME_LENGTH) return { problem: `must be at most ${MAX_NAME_LENGTH} characters` };
  return { value: name };
}

/** A syntactically valid address, with its domain lower-cased (the local part is kept as given). */
export function checkEmail(raw: string): Checked<string> {
  const email = raw.trim();
  if (email === "") return { problem: "is required" };
  if (email.length > MAX_EMAIL_LENGTH) return { problem: `must be at most ${MAX_EMAIL_LENGTH} characters` };
  if (!emailSyntax.safeParse(email).success) return { problem: "must be a valid email address" };
  const at = email.lastIndexOf("@");
  return { value: `${email.slice(0, at)}@${email.slice(at + 1).toLowerCase()}` };
}

/** Optional: empty means no key. */
export function checkIdempotencyKey(raw: string): Checked<string | undefined> {
  if (raw === "") return { value: undefined };
  if (raw.length > MAX_IDEMPOTENCY_KEY_LENGTH) return { problem: `must be at most ${MAX_IDEMPOTENCY_KEY_LENGTH} characters` };
  if (!/^[\x20-\x7e]+$/.test(raw)) return { problem: "must be printable ASCII" };
  return { value: raw };
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function checkId(raw: string): Checked<string> {
  if (raw === "") return { problem: "is required" };
  if (!UUID.test(raw)) return { problem: "must be a UUID" };
  return { value: raw.toLowerCase() };
}

/**
 * The file name without any directory part (a client may send a full path); optional, `fallback` when empty.
 * Only the name is kept: it is displayed and names the PDF, it never becomes a path on any disk.
 */
export function checkFilename(raw: string, fallback: string): Checked<string> {
  if (CONTROL.test(raw)) return { problem: "must not contain control characters" };
  if (length(raw) > MAX_FILENAME_LENGTH) return { problem: `must be at most ${MAX_FILENAME_LENGTH} characters` };
  const name = raw.split(/[/\\]/).pop()!.trim();
  if (raw.trim() !== "" && (name === "" || name === "." || name === "..")) return { problem: "must name a file" };
  return { value: name === "" ? fallback : name };
}

/** Options as the conversion stores them; unset options mean the defaults. */
export function checkOptions(options: ConversionOptions | undefined, violations: { add(field: string, description: string): unknown }): ConversionOptions {
  const checked = options ?? create(ConversionOptionsSchema);
  if (!(checked.quality in Quality)) violations.add("options.quality", "is not a known quality preset");
  if (!(checked.engine in PdfEngine)) violations.add("options.engine", "is not a known PDF engine");
  if (checked.maxWidth > MAX_DIMENSION) violations.add("options.maxWidth", `must be at most ${MAX_DIMENSION}`);
  if (checked.maxHeight > MAX_DIMENSION) violations.add("options.maxHeight", `must be at most ${MAX_DIMENSION}`);
  checkDocumentOptions(checked, violations);
  return checked;
}
