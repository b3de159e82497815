/**
 * Delivery through Resend with the official SDK. The SDK never throws: it returns `{ data, error }`, with
 * `error.statusCode` null when no HTTP answer came back (network failure, timeout). Each send carries the
 * idempotency key as Resend's `Idempotency-Key`, so a retried job never delivers twice (Resend keeps keys 24 h).
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { SpanKind, SpanStatusCode, type Attributes } from "@opentelemetry/api";
import { Resend, type ErrorResponse } from "resend";
import { withSpan } from "../shared/tracing.js";
import type { Mailer, OutgoingEmail } from "./mailer.js";

export interface ResendMailerOptions {
  apiKey: string;
  /** Resend's API origin; defaults to https://api.resend.com. */
  baseUrl?: string | undefined;
  timeoutMs: number;
}

export class ResendMailer implements Mailer {
  readonly transport = "resend";
  private readonly resend: Resend;

  private readonly spanAttributes: Attributes;

  constructor(private readonly options: ResendMailerOptions) {
    this.resend = new Resend(options.apiKey, options.baseUrl ? { baseUrl: options.baseUrl } : undefined);
    const { protocol, hostname, port } = new URL(options.baseUrl ?? "https://api.resend.com");
    this.spanAttributes = {
      "http.request.method": "POST",
      "server.address": hostname,
      "server.port": Number(port || (protocol === "https:" ? 443 : 80)),
      "url.path": "/emails",
      "peer.service": "resend",
    };
  }

  async send(email: OutgoingEmail, idempotencyKey: string, signal?: AbortSignal): Promise<{ id: string }> {
    const timeout = AbortSignal.timeout(this.options.timeoutMs);
    // The API call in its own CLIENT span (the SDK's fetch is not instrumented); the status code Resend answered,
    // never the recipient or the content.
    const { data, error, headers } = await withSpan("POST /emails", this.spanAttributes, async (span) => {
      const answer = await this.resend.emails.send(
        {
          from: email.from,
          to: [email.to],
          subject: email.subject,
          html: email.html,
          text: email.text,
          tags: [{ name: "email_type", value: email.type }],
        },
        { idempotencyKey, signal: signal ? AbortSignal.any([timeout, signal]) : timeout },
      );
      const status = answer.error ? answer.error.statusCode : 200;
      if (status !== null) span.setAttribute("http.response.status_code", status);
      if (answer.error) span.setStatus({ code: SpanStatusCode.ERROR, message: `Resend ${status ?? "unreachable"}: ${answer.error.name}` });
      return answer;
    }, { kind: SpanKind.CLIENT });
    if (error) {
      if (error.statusCode === null && timeout.aborted) {
        throw new ConnectError(`Resend did not answer within ${this.options.timeoutMs} ms`, Code.DeadlineExceeded);
      }
      if (error.statusCode === null && signal?.aborted) throw new ConnectError("the send was cancelled", Code.Canceled);
      throw resendError(error, headers);
    }
    if (!data?.id) throw new ConnectError("Resend accepted the email but returned no id", Code.Internal);
    return { id: data.id };
  }

  async check(): Promise<void> {
    // Configured is all we can know without calling Resend's API, which readiness must not do.
  }
}

/** Maps a Resend error to the Connect code that tells the caller whether to retry. */
export function resendError(error: ErrorResponse, headers: Record<string, string> | null = null): ConnectError {
  const status = error.statusCode;
  const what = `Resend ${status ?? "unreachable"}${error.name ? ` ${error.name}` : ""}: ${error.message}`;
  const metadata = headers?.["retry-after"] ? { "retry-after": headers["retry-after"] } : undefined;
  const fail = (code: Code) => new ConnectError(what, code, metadata);
  if (status === null) return fail(Code.Unavailable);
  if (status === 429) {
    // Out of quota for the day or month: retrying soon does not help, but it is not the caller's fault either.
    return fail(error.name === "daily_quota_exceeded" || error.name === "monthly_quota_exceeded" ? Code.ResourceExhausted : Code.Unavailable);
  }
  if (status >= 500) return fail(Code.Unavailable);
  if (status === 400 || status === 422) return fail(Code.InvalidArgument);
  if (status === 409) {
    // Another request with the same key is still in flight: retry later. A key reused for a different email: never.
    return fail(error.name === "concurrent_idempotent_requests" ? Code.Aborted : Code.FailedPrecondition);
  }
  // 401/403 (bad key, unverified sender domain), 404 (wrong base URL) and the rest: misconfiguration.
  return fail(Code.FailedPrecondition);
}
