/** Connect errors with a clear message and, for bad requests, a ValidationError detail naming every bad field. */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { FieldViolationSchema, ValidationErrorSchema } from "@mcsv/sdk";

/**
 * The longest error text mcsv keeps or passes on: an attempt's error in the job ledger, an outbox row's last error,
 * the error of a failed conversion's report (ReportConversionFailedTask.error) and of its e-mail.
 */
export const MAX_ERROR_TEXT_LENGTH = 2_000;

/** `invalid_argument`: a Connect code as the Connect protocol spells it (and as metrics, logs and spans name it). */
export function connectCodeName(code: Code): string {
  return Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();
}

export interface Violation {
  field: string;
  description: string;
}

/** Collects field violations; `throwIfAny` raises one invalid_argument error listing all of them. */
export class Violations {
  readonly list: Violation[] = [];

  add(field: string, description: string): this {
    this.list.push({ field, description });
    return this;
  }

  check(condition: boolean, field: string, description: string): this {
    if (!condition) this.add(field, description);
    return this;
  }

  throwIfAny(): void {
    if (this.list.length > 0) throw invalidArgument(this.list);
  }
}

export function invalidArgument(violations: Violation[]): ConnectError {
  const summary = violations.map((v) => `${v.field}: ${v.description}`).join("; ");
  return new ConnectError(summary, Code.InvalidArgument, undefined, [
    { desc: ValidationErrorSchema, value: create(ValidationErrorSchema, { violations: violations.map((v) => create(FieldViolationSchema, v)) }) },
  ]);
}

/** resource_exhausted for a limit that frees up with time: `retry-after` (seconds) in the metadata and the message. */
export function resourceExhausted(reason: string, retryAfterSeconds: number): ConnectError {
  const seconds = Math.max(1, Math.ceil(retryAfterSeconds));
  return new ConnectError(`${reason}; retry in ${seconds} s`, Code.ResourceExhausted, { "retry-after": String(seconds) });
}

/**
 * Busy right now, not broken: `unavailable` with `retry-after`, which a caller retries after that long (the job
 * service without using an attempt: see retryAfterOf).
 */
export function busy(reason: string, retryAfterSeconds: number): ConnectError {
  const seconds = Math.max(1, Math.ceil(retryAfterSeconds));
  return new ConnectError(`${reason}; retry in ${seconds} s`, Code.Unavailable, { "retry-after": String(seconds) });
}

/** The seconds a `busy` answer asks the caller to wait, or undefined for any other error. */
export function retryAfterOf(error: unknown): number | undefined {
  if (!(error instanceof ConnectError) || error.code !== Code.Unavailable) return undefined;
  const seconds = Number(error.metadata.get("retry-after"));
  return Number.isFinite(seconds) && seconds > 0 ? seconds : undefined;
}

/** Codes that a retry cannot fix: a job that meets one fails at once. */
export const PERMANENT_CODES: ReadonlySet<Code> = new Set([
  Code.InvalidArgument,
  Code.FailedPrecondition,
  Code.NotFound,
  Code.AlreadyExists,
  Code.PermissionDenied,
  Code.Unauthenticated,
  Code.Unimplemented,
  Code.OutOfRange,
]);

export function isPermanent(error: unknown): boolean {
  return error instanceof ConnectError && PERMANENT_CODES.has(error.code);
}

export function describeError(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
