/**
 * notify_client: delivers a workflow event to the client service (NotifyPdfReady or NotifyEmailSent) and, with a
 * callback URL, POSTs the same event as JSON there. Both receivers see repeats on retries; the client service
 * recognises them, and the callback carries an Idempotency-Key. The callback URL is checked against the allowlist
 * again at send time (see callback.ts); a refusal discards the job.
 */
import { toJson, type JsonValue } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import { NotifyEmailSentRequestSchema, NotifyPdfReadyRequestSchema, type ClientService } from "@mcsv/sdk";
import type { CallbackPolicy } from "../../shared/callback-policy.js";
import { CallbackRefusedError, postCallback } from "../callback.js";
import { callbackRefusalsTotal } from "../metrics.js";
import { decodeTaskArgs, type DecodedPayloads } from "../payloads.js";
import type { TaskDefinition } from "./context.js";

export interface NotifyClientDeps {
  client: Pick<Client<typeof ClientService>, "notifyPdfReady" | "notifyEmailSent">;
  rpcTimeoutMs: number;
  callbackTimeoutMs: number;
  /** The same allowlist the gateway checks callback URLs with (CALLBACK_ALLOWED_HOSTS), applied again before sending. */
  callbacks: CallbackPolicy;
}

export function notifyClientTask(deps: NotifyClientDeps): TaskDefinition<DecodedPayloads["notify_client"]> {
  return {
    decode: (args) => decodeTaskArgs("notify_client", args),
    async run({ pdfReady, emailSent, callbackUrl }, ctx) {
      const call = { signal: ctx.signal, timeoutMs: deps.rpcTimeoutMs };
      let event: string;
      let body: JsonValue;
      if (pdfReady) {
        const { recorded } = await deps.client.notifyPdfReady(pdfReady, call);
        ctx.logger.info("client notified", { event: "pdf_ready", recorded });
        event = "pdf_ready";
        body = toJson(NotifyPdfReadyRequestSchema, pdfReady);
      } else if (emailSent) {
        const { recorded } = await deps.client.notifyEmailSent(emailSent, call);
        ctx.logger.info("client notified", { event: "email_sent", recorded });
        event = "email_sent";
        body = toJson(NotifyEmailSentRequestSchema, emailSent);
      } else {
        return; // The payload schema allows exactly one of them.
      }
      if (callbackUrl) {
        try {
          await postCallback(deps.callbacks, callbackUrl, body, { event, idempotencyKey: `mcsv-job-${ctx.jobId}`, timeoutMs: deps.callbackTimeoutMs, signal: ctx.signal });
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
