/** Checks of the callbacks and queries the client service accepts; every bad field is named at once. */
import { ConversionState, EmailType, type NotifyEmailSentRequest, type NotifyPdfReadyRequest } from "@mcsv/sdk";
import { z } from "zod";
import { Violations } from "../shared/errors.js";

const email = z.email();
const httpUrl = z.url({ protocol: /^https?$/ });
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const CONTROL_CHARS = /[\p{Cc}\u2028\u2029]/u;

export const DEFAULT_LIMIT = 100;
export const MAX_LIMIT = 1000;

function checkText(v: Violations, value: string, field: string, max: number, singleLine = true): void {
  if (value.length > max) v.add(field, `at most ${max} characters`);
  else if (singleLine && CONTROL_CHARS.test(value)) v.add(field, "must not contain line breaks or control characters");
}

export function validatePdfReady(req: NotifyPdfReadyRequest): void {
  const v = new Violations();
  const c = req.conversion;
  if (!c) {
    v.add("conversion", "is required");
  } else {
    v.check(UUID.test(c.id), "conversion.id", "must be a UUID");
    if (c.state !== ConversionState.SUCCEEDED && c.state !== ConversionState.FAILED) {
      v.add("conversion.state", "must be terminal (CONVERSION_STATE_SUCCEEDED or CONVERSION_STATE_FAILED)");
    }
    if (c.userEmail !== "") v.check(c.userEmail.length <= 254 && email.safeParse(c.userEmail).success, "conversion.userEmail", "must be a valid email address");
    if (c.pdfUrl.length > 8192) v.add("conversion.pdfUrl", "at most 8192 characters");
    else if (c.pdfUrl !== "") v.check(httpUrl.safeParse(c.pdfUrl).success, "conversion.pdfUrl", "must be an http(s) URL");
    else if (c.state === ConversionState.SUCCEEDED) v.add("conversion.pdfUrl", "is required when the conversion succeeded");
    checkText(v, c.filename, "conversion.filename", 1024);
    checkText(v, c.error, "conversion.error", 16_384, false);
    checkText(v, c.inputFormat, "conversion.inputFormat", 20);
  }
  v.throwIfAny();
}

export function validateEmailSent(req: NotifyEmailSentRequest): void {
  const v = new Violations();
  if (req.userEmail === "") v.add("userEmail", "is required");
  else v.check(req.userEmail.length <= 254 && email.safeParse(req.userEmail).success, "userEmail", "must be a valid email address");
  if (req.emailType === EmailType.UNSPECIFIED) v.add("emailType", "must be set");
  else v.check(EmailType[req.emailType] !== undefined, "emailType", `unknown email type ${req.emailType}`);
  checkText(v, req.emailId, "emailId", 200);
  if (req.success && req.emailId === "") v.add("emailId", "is required when the email was sent");
  checkText(v, req.userId, "userId", 200);
  // Generous: it often carries an error message verbatim, and a refused callback would be lost for good.
  checkText(v, req.message, "message", 16_384, false);
  if (req.conversionId !== "") v.check(UUID.test(req.conversionId), "conversionId", "must be a UUID");
  v.throwIfAny();
}

/** 0 means the default; otherwise 1 to MAX_LIMIT. */
export function validateLimit(limit: number): number {
  new Violations().check(limit >= 0 && limit <= MAX_LIMIT, "limit", `1 to ${MAX_LIMIT}, or 0 for ${DEFAULT_LIMIT}`).throwIfAny();
  return limit === 0 ? DEFAULT_LIMIT : limit;
}
