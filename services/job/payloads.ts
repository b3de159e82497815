/**
 * Task payloads: checked when a job is enqueued (so a bad job is refused, not discarded later) and decoded again
 * when it runs. Each payload is a message of the contract (mcsv.v1.SendEmailTask, …: shared/tasks.ts); what the
 * messages cannot say (keys under their prefixes, lengths, "exactly one of") is checked here, every violation
 * naming its field under a prefix: the oneof case (`sendEmail.pdf.key`), or `args` for the deprecated task+args.
 */
import { equals, fromJson, toJson, type DescMessage, type JsonObject, type JsonValue } from "@bufbuild/protobuf";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { PdfObjectSchema, type ImageServiceConvertDocumentRequest, type ImageServiceConvertImageRequest, type PdfObject, type SendEmailRequest } from "@mcsv/sdk";
import { describeError, MAX_ERROR_TEXT_LENGTH, type Violation } from "../shared/errors.js";
import { TASK_NAMES, TASK_PAYLOADS, taskOfCase, type TaskName, type TaskPayload, type TypedTask } from "../shared/tasks.js";
import { isOwnedObjectKey, objectKeys } from "../shared/storage.js";

/** Attempts per task unless EnqueueJob.max_attempts says otherwise. */
export const DEFAULT_MAX_ATTEMPTS: Record<TaskName, number> = {
  send_email: 10,
  convert_image: 5,
  notify_client: 10,
  cleanup_storage: 5,
  // A conversion must not stay PROCESSING because the gateway was away for a while: the ledger's back-off reaches
  // its ~6 h ceiling at the 10th attempt, so 25 attempts keep trying for about four days.
  report_conversion_failed: 25,
};

/** Longest tenant name (the gateway's limit). */
const MAX_TENANT_LENGTH = 63;
/** Longest error text of report_conversion_failed. */
const MAX_FILENAME_LENGTH = 255;

export function isTaskName(name: string): name is TaskName {
  return (TASK_NAMES as readonly string[]).includes(name);
}

/** What a task's run gets: its payload message, checked (a required message is there). */
export type DecodedPayloads = Omit<{ [T in TaskName]: TaskPayload<T> }, "send_email" | "convert_image"> & {
  send_email: TaskPayload<"send_email"> & { request: SendEmailRequest };
  /** One image (request and objectKey), or a document (document and pageObjectKeys). */
  convert_image: TaskPayload<"convert_image"> &
    ({ request: ImageServiceConvertImageRequest; document: undefined } | { request: undefined; document: ImageServiceConvertDocumentRequest });
};

type Bad = (field: string, description: string) => void;

function checkTimestamp(at: Timestamp | undefined, field: string, bad: Bad): void {
  if (at && (at.nanos < 0 || at.nanos > 999_999_999 || Number.isNaN(new Date(Number(at.seconds) * 1000).getTime()))) bad(field, "must be a valid time");
}

function checkPdf(pdf: PdfObject | undefined, field: string, bad: Bad): void {
  if (!pdf) return;
  if (!/^pdfs\/[^/]+\.pdf$/.test(pdf.key)) bad(`${field}.key`, "must be a key under pdfs/");
  if (pdf.filename.length < 1 || pdf.filename.length > MAX_FILENAME_LENGTH) bad(`${field}.filename`, `must be 1 to ${MAX_FILENAME_LENGTH} characters`);
  checkTimestamp(pdf.expiresAt, `${field}.expiresAt`, bad);
  checkTimestamp(pdf.linkedAt, `${field}.linkedAt`, bad);
}

/** The rules of each payload beyond its message's shape; `bad(field, …)` names a field under the payload's prefix ("" for the payload). */
const rules: { [T in TaskName]: (payload: TaskPayload<T>, bad: Bad) => void } = {
  send_email: (p, bad) => {
    if (!p.request) bad("request", "is required");
    checkPdf(p.pdf, "pdf", bad);
  },
  convert_image: (p, bad) => {
    const original = (key: string) => /^originals\/[^/]+$/.test(key);
    if (p.document) {
      if (p.request || p.objectKey) bad("", "exactly one of request (with objectKey) and document (with pageObjectKeys)");
      if (p.document.pages.length === 0) bad("document.pages", "must name at least one page");
      if (p.pageObjectKeys.length !== p.document.pages.length) bad("pageObjectKeys", "must name one key per page");
      p.pageObjectKeys.forEach((key, i) => original(key) || bad(`pageObjectKeys[${i}]`, "must be a key under originals/"));
      return;
    }
    if (!p.request) bad("request", "is required");
    if (!original(p.objectKey)) bad("objectKey", "must be a key under originals/");
  },
  notify_client: (p, bad) => {
    if (p.event.case === undefined) bad("", "exactly one of pdfReady and emailSent");
    if (p.callbackUrl && !URL.canParse(p.callbackUrl)) bad("callbackUrl", "must be a URL");
    checkPdf(p.pdf, "pdf", bad);
    if (p.tenant.length > MAX_TENANT_LENGTH) bad("tenant", `must be at most ${MAX_TENANT_LENGTH} characters`);
  },
  cleanup_storage: (p, bad) => {
    const { target } = p;
    if (target.case === undefined || (target.case === "objectKey" && !target.value)) bad("", "exactly one of objectKey and sweep");
    else if (target.case === "objectKey" && !isOwnedObjectKey(target.value)) bad("objectKey", "must be an object key under uploads/, originals/ or pdfs/");
    else if (target.case === "sweep" && !target.value) bad("sweep", "must be true (or give objectKey instead)");
  },
  report_conversion_failed: (p, bad) => {
    if (!p.conversionId) bad("conversionId", "is required");
    if (p.error.length < 1 || p.error.length > MAX_ERROR_TEXT_LENGTH) bad("error", `must be 1 to ${MAX_ERROR_TEXT_LENGTH} characters`);
  },
};

/** Every rule `payload` of task `task` breaks, each naming its field under `prefix`. */
export function checkTaskPayload<T extends TaskName>(task: T, payload: TaskPayload<T>, prefix: string): Violation[] {
  const violations: Violation[] = [];
  rules[task](payload, (field, description) => violations.push({ field: field ? `${prefix}.${field}` : prefix, description }));
  return violations;
}

type Json = Record<string, unknown>;
const isObject = (value: unknown): value is Json => typeof value === "object" && value !== null && !Array.isArray(value);

/** The PDF object of a succeeded conversion whose payload was written with a link instead (legacy). */
function legacyPdf(conversionId: unknown, filename: unknown): Json | undefined {
  if (typeof conversionId !== "string" || !/^[\w-]{1,100}$/.test(conversionId)) return undefined;
  const base = typeof filename === "string" ? filename.replace(/\.[^.]*$/, "") : "";
  return { key: objectKeys.pdf(conversionId), filename: `${base || "image"}.pdf` };
}

/**
 * Payloads written before links were presigned at send time carried the links themselves (convert_image's
 * request.imageUrl, send_email's pdf_url variables, notify_client's conversion.pdfUrl). Jobs and outbox rows of
 * that shape may still be queued during an upgrade: their links are dropped and the PDF named by its key, which
 * the object layout derives from the conversion, so that none of them is refused or lost.
 */
export function upgradeLegacyArgs(task: TaskName, args: unknown): unknown {
  if (!isObject(args)) return args;
  if (task === "convert_image" && isObject(args["request"]) && "imageUrl" in args["request"]) {
    const { imageUrl: _url, ...request } = args["request"];
    const { imageUrlExpiresAt: _expires, ...rest } = args;
    return { ...rest, request };
  }
  if (task === "send_email" && isObject(args["request"]) && isObject(args["request"]["variables"]) && "pdf_url" in args["request"]["variables"]) {
    const { pdf_url: _url, pdf_url_expires_at: _expires, ...variables } = args["request"]["variables"];
    const pdf = args["pdf"] ?? legacyPdf(args["conversionId"], variables["filename"]);
    return { ...args, request: { ...args["request"], variables }, ...(pdf ? { pdf } : {}) };
  }
  if (task === "notify_client" && isObject(args["pdfReady"]) && isObject(args["pdfReady"]["conversion"]) && "pdfUrl" in args["pdfReady"]["conversion"]) {
    const { pdfUrl: _url, pdfUrlExpiresAt: _expires, ...conversion } = args["pdfReady"]["conversion"];
    const pdf = args["pdf"] ?? legacyPdf(conversion["id"], conversion["filename"]);
    return { ...args, pdfReady: { ...args["pdfReady"], conversion }, ...(pdf ? { pdf } : {}) };
  }
  return args;
}

/** `json` without the top-level keys that are no field of `schema` (a newer enqueuer's, ignored by an older worker). */
function knownKeys(schema: DescMessage, json: Json): Json {
  const known = new Set(schema.fields.flatMap((f) => [f.jsonName, f.name]));
  return Object.fromEntries(Object.entries(json).filter(([key]) => known.has(key)));
}

export type DecodeResult<T extends TaskName> = { ok: true; payload: DecodedPayloads[T] } | { ok: false; violations: Violation[] };

export interface DecodeOptions {
  /**
   * Ignore unknown fields (and enum values) at every depth, as for stored arguments that an older or newer
   * version wrote. By default only unknown top-level keys are ignored, and the messages inside must decode exactly.
   */
  lenient?: boolean;
}

/**
 * Members of a oneof given together where the other is falsy (`{ objectKey, sweep: false }`): the JSON schema of
 * the payloads before they were messages took a falsy member for an absent one, so such JSON is still accepted.
 */
function dropFalsyOneofMembers(schema: DescMessage, json: Json): Json {
  let result = json;
  for (const oneof of schema.oneofs) {
    const present = oneof.fields.map((f) => (f.jsonName in result ? f.jsonName : f.name in result ? f.name : undefined)).filter((k): k is string => k !== undefined);
    if (present.length < 2) continue;
    const falsy = present.filter((k) => !result[k]);
    if (falsy.length > 0 && falsy.length < present.length) result = Object.fromEntries(Object.entries(result).filter(([k]) => !falsy.includes(k)));
  }
  return result;
}

/** Why `json` (an object that fromJson refused) does not decode as `schema`, field by field under `prefix`. */
function decodeViolations(schema: DescMessage, json: Json, prefix: string, ignoreUnknownFields: boolean, error: unknown): Violation[] {
  const violations: Violation[] = [];
  for (const oneof of schema.oneofs) {
    const present = oneof.fields.filter((f) => f.jsonName in json || f.name in json);
    if (present.length > 1) violations.push({ field: prefix, description: `exactly one of ${oneof.fields.map((f) => f.jsonName).join(" and ")}` });
  }
  for (const [key, value] of Object.entries(json)) {
    try {
      fromJson(schema, { [key]: value } as JsonValue, { ignoreUnknownFields });
    } catch (keyError) {
      // A PdfObject names its own bad field (pdf.expiresAt); an embedded request of another service is named whole.
      const field = schema.fields.find((f) => f.jsonName === key || f.name === key);
      if (field?.message?.typeName === PdfObjectSchema.typeName && isObject(value)) {
        violations.push(...decodeViolations(field.message, value, `${prefix}.${key}`, ignoreUnknownFields, keyError));
      } else {
        violations.push({ field: `${prefix}.${key}`, description: describeError(keyError) });
      }
    }
  }
  return violations.length > 0 ? violations : [{ field: prefix, description: describeError(error) }];
}

/**
 * How a task decodes its stored arguments when it runs: unknown fields are ignored at every depth, so that a payload
 * written by an older or newer version still runs (what is enqueued is checked strictly).
 */
export const STORED: DecodeOptions = { lenient: true };

/** The payload message of task `task` in `args` (JSON, legacy shapes upgraded), or the violations that prevent it. */
function decodeJson<T extends TaskName>(task: T, args: unknown, prefix: string, options: DecodeOptions): DecodeResult<T> {
  const schema = TASK_PAYLOADS[task].schema as DescMessage;
  const json = upgradeLegacyArgs(task, args);
  if (!isObject(json)) return { ok: false, violations: [{ field: prefix, description: "must be an object" }] };
  const input = dropFalsyOneofMembers(schema, options.lenient ? json : knownKeys(schema, json));
  const ignoreUnknownFields = options.lenient ?? false;
  try {
    return { ok: true, payload: fromJson(schema, input as JsonValue, { ignoreUnknownFields }) as unknown as DecodedPayloads[T] };
  } catch (error) {
    return { ok: false, violations: decodeViolations(schema, input, prefix, ignoreUnknownFields, error) };
  }
}

/**
 * Decodes and checks `args` (JSON) of task `task`; every violation names its field under `prefix` (e.g.
 * "args.request"). Unknown top-level keys are ignored, so that a newer enqueuer does not break an older worker.
 */
export function decodeTaskArgs<T extends TaskName>(task: T, args: unknown, prefix = "args", options: DecodeOptions = {}): DecodeResult<T> {
  const decoded = decodeJson(task, args, prefix, options);
  if (!decoded.ok) return decoded;
  const violations = checkTaskPayload(task, decoded.payload as unknown as TaskPayload<T>, prefix);
  return violations.length > 0 ? { ok: false, violations } : decoded;
}

/** The JSON a payload is stored as: its canonical protobuf JSON, without any link it still carries. */
export function argsOfTypedTask(typed: TypedTask): JsonObject {
  const task = taskOfCase(typed.case);
  return upgradeLegacyArgs(task, toJson(TASK_PAYLOADS[task].schema as DescMessage, typed.value as never)) as JsonObject;
}

/** Whether `args` (JSON) say the same as `typed` (for a request that gives both forms). */
export function argsAgree(typed: TypedTask, args: unknown): boolean {
  const task = taskOfCase(typed.case);
  const schema = TASK_PAYLOADS[task].schema as DescMessage;
  const given = decodeJson(task, args, "args", { lenient: true });
  const own = decodeJson(task, argsOfTypedTask(typed), "args", { lenient: true });
  return given.ok && own.ok && equals(schema, given.payload as never, own.payload as never);
}

/** The typed oneof of stored arguments (for Job.payload); undefined when they no longer decode. */
export function typedTaskOfArgs(task: string, args: unknown): TypedTask | undefined {
  if (!isTaskName(task)) return undefined;
  const decoded = decodeJson(task, args, "args", { lenient: true });
  return decoded.ok ? ({ case: TASK_PAYLOADS[task].case, value: decoded.payload } as TypedTask) : undefined;
}
