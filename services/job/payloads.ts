/**
 * Task arguments: checked when a job is enqueued (so a bad job is refused, not discarded later) and decoded again
 * when it runs. The zod schemas of shared/tasks.ts give the shape; the protobuf messages inside are decoded with
 * their schemas, so that a task sends exactly what was enqueued.
 */
import { fromJson, type JsonValue } from "@bufbuild/protobuf";
import {
  ImageServiceConvertImageRequestSchema,
  NotifyEmailSentRequestSchema,
  NotifyPdfReadyRequestSchema,
  SendEmailRequestSchema,
  type ImageServiceConvertImageRequest,
  type NotifyEmailSentRequest,
  type NotifyPdfReadyRequest,
  type SendEmailRequest,
} from "@mcsv/sdk";
import type { z } from "zod";
import { describeError, type Violation } from "../shared/errors.js";
import { objectKeys, TASK_NAMES, taskPayloads, type TaskName, type TaskPayload } from "../shared/tasks.js";

/** Attempts per task unless EnqueueJob.max_attempts says otherwise. */
export const DEFAULT_MAX_ATTEMPTS: Record<TaskName, number> = {
  send_email: 10,
  convert_image: 5,
  notify_client: 10,
  cleanup_storage: 5,
  // A conversion must not stay PROCESSING because the gateway was away for a while: graphile's back-off reaches
  // its ~6 h ceiling at the 10th attempt, so 25 attempts keep trying for about four days.
  report_conversion_failed: 25,
};

export function isTaskName(name: string): name is TaskName {
  return (TASK_NAMES as readonly string[]).includes(name);
}

export interface DecodedPayloads {
  send_email: Omit<TaskPayload<"send_email">, "request"> & { request: SendEmailRequest };
  convert_image: Omit<TaskPayload<"convert_image">, "request"> & { request: ImageServiceConvertImageRequest };
  notify_client: Omit<TaskPayload<"notify_client">, "pdfReady" | "emailSent"> & { pdfReady?: NotifyPdfReadyRequest; emailSent?: NotifyEmailSentRequest };
  cleanup_storage: TaskPayload<"cleanup_storage">;
  report_conversion_failed: TaskPayload<"report_conversion_failed">;
}

type Decode<T extends TaskName> = (payload: TaskPayload<T>, bad: (field: string, error: unknown) => void) => DecodedPayloads[T];

/** Decodes one embedded message; records a violation and returns undefined when it is not valid JSON for `schema`. */
function message<S extends Parameters<typeof fromJson>[0]>(schema: S, json: unknown, field: string, bad: (field: string, error: unknown) => void) {
  try {
    return fromJson(schema, json as JsonValue);
  } catch (error) {
    bad(field, error);
    return undefined;
  }
}

const decoders: { [T in TaskName]: Decode<T> } = {
  send_email: (p, bad) => ({ ...p, request: message(SendEmailRequestSchema, p.request, "request", bad)! }),
  convert_image: (p, bad) => ({ ...p, request: message(ImageServiceConvertImageRequestSchema, p.request, "request", bad)! }),
  notify_client: ({ pdfReady, emailSent, ...rest }, bad) => ({
    ...rest,
    ...(pdfReady ? { pdfReady: message(NotifyPdfReadyRequestSchema, pdfReady, "pdfReady", bad)! } : {}),
    ...(emailSent ? { emailSent: message(NotifyEmailSentRequestSchema, emailSent, "emailSent", bad)! } : {}),
  }),
  cleanup_storage: (p) => p,
  report_conversion_failed: (p) => p,
};

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

export type DecodeResult<T extends TaskName> = { ok: true; payload: DecodedPayloads[T] } | { ok: false; violations: Violation[] };

/**
 * Checks `args` of task `task`; every violation names its field under `prefix` (e.g. "args.request").
 * Unknown top-level keys are ignored (zod's default), so that a newer enqueuer does not break an older worker.
 */
export function decodeTaskArgs<T extends TaskName>(task: T, args: unknown, prefix = "args"): DecodeResult<T> {
  const schema = taskPayloads[task] as unknown as z.ZodType<TaskPayload<T>>;
  const parsed = schema.safeParse(upgradeLegacyArgs(task, args));
  if (!parsed.success) {
    return {
      ok: false,
      violations: parsed.error.issues.map((issue) => ({ field: [prefix, ...issue.path.map(String)].join("."), description: issue.message })),
    };
  }
  const violations: Violation[] = [];
  const payload = decoders[task](parsed.data, (field, error) => violations.push({ field: `${prefix}.${field}`, description: describeError(error) }));
  return violations.length > 0 ? { ok: false, violations } : { ok: true, payload };
}
