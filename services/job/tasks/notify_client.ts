/**
 * notify_client: delivers a workflow event to the client service (NotifyPdfReady or NotifyEmailSent) and, with a
 * callback URL, POSTs the same event as JSON there, signed with the tenant's webhook secrets. Both receivers see
 * repeats on retries; the client service recognises them, and the callback carries an Idempotency-Key (also its
 * webhook-id). The callback URL is checked against the allowlist again at send time (see callback.ts); a refusal
 * discards the job. A payload with a PDF gets the conversion's pdf_url here, presigned right before sending.
 */
import { toJson, type JsonValue } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { NotifyEmailSentRequestSchema, NotifyPdfReadyRequestSchema, type ClientService, type NotifyPdfReadyRequest } from "@mcsv/sdk";
import type { CallbackPolicy } from "../../shared/callback-policy.js";
import { CallbackRefusedError, postCallback } from "../callback.js";
import { callbackRefusalsTotal } from "../metrics.js";
import { decodeTaskArgs, STORED, type DecodedPayloads } from "../payloads.js";
import { presignPdf, type PdfLinksDeps, type PdfObject } from "../pdf-links.js";
import type { SigningSecretSource } from "../webhook-signing.js";
import { PermanentJobError, type TaskDefinition } from "./context.js";

export interface NotifyClientDeps extends PdfLinksDeps {
  client: Pick<Client<typeof ClientService>, "notifyPdfReady" | "notifyEmailSent">;
  rpcTimeoutMs: number;
  callbackTimeoutMs: number;
  /** The same allowlist the gateway checks callback URLs with (CALLBACK_ALLOWED_HOSTS), applied again before sending. */
  callbacks: CallbackPolicy;
  /** The tenant's webhook signing secrets (from the gateway, briefly cached). */
  signingSecrets: SigningSecretSource;
}

/** Tenant of payloads enqueued before conversions had one. */
const DEFAULT_TENANT = "default";

/** The event as it is sent: the conversion with a fresh link to its PDF when the payload names one. */
async function withPdfLink(deps: NotifyClientDeps, pdfReady: NotifyPdfReadyRequest, pdf: PdfObject | undefined): Promise<NotifyPdfReadyRequest> {
  if (!pdf || !pdfReady.conversion) return pdfReady;
  const link = await presignPdf(deps, pdf);
  if (!link) throw new PermanentJobError("the PDF is past its retention (deleted by the storage sweep): there is no link to send");
  return { ...pdfReady, conversion: { ...pdfReady.conversion, pdfUrl: link.url, pdfUrlExpiresAt: timestampFromDate(link.expiresAt) } };
}

export function notifyClientTask(deps: NotifyClientDeps): TaskDefinition<DecodedPayloads["notify_client"]> {
  return {
    decode: (args) => decodeTaskArgs("notify_client", args, "args", STORED),
    async run({ event: enqueued, callbackUrl, pdf, tenant }, ctx) {
      const call = { signal: ctx.signal, timeoutMs: deps.rpcTimeoutMs };
      let event: string;
      let body: JsonValue;
      if (enqueued.case === "pdfReady") {
        const pdfReady = await withPdfLink(deps, enqueued.value, pdf);
        const { recorded } = await deps.client.notifyPdfReady(pdfReady, call);
        ctx.logger.info("client notified", { event: "pdf_ready", recorded });
        event = "pdf_ready";
        body = toJson(NotifyPdfReadyRequestSchema, pdfReady);
      } else if (enqueued.case === "emailSent") {
        const emailSent = enqueued.value;
        const { recorded } = await deps.client.notifyEmailSent(emailSent, call);
        ctx.logger.info("client notified", { event: "email_sent", recorded });
        event = "email_sent";
        body = toJson(NotifyEmailSentRequestSchema, emailSent);
      } else {
        return; // decode requires exactly one of them.
      }
      if (callbackUrl) {
        try {
          const signingSecrets = await deps.signingSecrets(tenant || DEFAULT_TENANT, ctx.signal);
          await postCallback(deps.callbacks, callbackUrl, body, {
            event,
            idempotencyKey: `mcsv-job-${ctx.jobId}`,
            signingSecrets,
            timeoutMs: deps.callbackTimeoutMs,
            signal: ctx.signal,
          });
        } catch (error) {
          if (error instanceof CallbackRefusedError) {
            callbackRefusalsTotal.inc({ reason: error.refusal });
            ctx.logger.warn("callback refused", { event, callback_origin: error.origin, reason: error.refusal, error: error.message });
          }
          throw error;
        }
        ctx.logger.info("callback delivered", { event, callback_origin: new URL(callbackUrl).origin });
      }
    },
  };
}
