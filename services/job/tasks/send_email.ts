/**
 * send_email: EmailService.SendEmail with the enqueued request, then a notify_client job that tells the client
 * (ClientService.NotifyEmailSent) the email went out, or, once the job fails for good, that it did not. A payload
 * with a PDF gets the variables pdf_url and pdf_url_expires_at here, presigned right before the call.
 */
import { create } from "@bufbuild/protobuf";
import { timestampNow, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import { ConnectError } from "@connectrpc/connect";
import { NotifyClientTaskSchema, NotifyEmailSentRequestSchema, type EmailService, type SendEmailRequest } from "@mcsv/sdk";
import { describeError } from "../../shared/errors.js";
import { jobKeys, typedTask } from "../../shared/tasks.js";
import { decodeTaskArgs, STORED, type DecodedPayloads } from "../payloads.js";
import { presignPdf, type PdfLinksDeps, type PdfObject } from "../pdf-links.js";
import { isPermanentFailure, PermanentJobError, type TaskContext, type TaskDefinition } from "./context.js";

export interface SendEmailDeps extends PdfLinksDeps {
  email: Pick<Client<typeof EmailService>, "sendEmail">;
  rpcTimeoutMs: number;
}

/** The request as it is sent: with a fresh link to the PDF when the payload names one. */
async function withPdfLink(deps: SendEmailDeps, request: SendEmailRequest, pdf: PdfObject | undefined): Promise<SendEmailRequest> {
  if (!pdf) return request;
  const link = await presignPdf(deps, pdf);
  if (!link) throw new PermanentJobError("the PDF is past its retention (deleted by the storage sweep): there is no link to send");
  return { ...request, variables: { ...request.variables, pdf_url: link.url, pdf_url_expires_at: link.expiresAt.toISOString() } };
}

interface Outcome {
  success: boolean;
  message: string;
  emailId?: string;
  sentAt?: Timestamp | undefined;
}

/** Enqueues the NotifyEmailSent callback, once per idempotency key (per job when the request has none). */
async function enqueueEmailSent(ctx: TaskContext, request: SendEmailRequest, conversionId: string, outcome: Outcome): Promise<void> {
  const event = create(NotifyEmailSentRequestSchema, {
    userId: request.userId,
    userEmail: request.userEmail,
    emailType: request.emailType,
    emailId: outcome.emailId ?? "",
    success: outcome.success,
    message: outcome.message,
    sentAt: outcome.sentAt ?? timestampNow(),
    conversionId,
  });
  const key = jobKeys.emailSent(request.idempotencyKey || `job-${ctx.jobId}`);
  await ctx.enqueue({
    payload: typedTask("notify_client", create(NotifyClientTaskSchema, { event: { case: "emailSent", value: event } })),
    // A failure report has its own key, so that a later successful RetryJob still reports the success.
    jobKey: outcome.success ? key : `${key}:failed`,
  });
}

export function sendEmailTask(deps: SendEmailDeps): TaskDefinition<DecodedPayloads["send_email"]> {
  return {
    decode: (args) => decodeTaskArgs("send_email", args, "args", STORED),
    async run({ request, conversionId, pdf }, ctx) {
      let response;
      try {
        response = await deps.email.sendEmail(await withPdfLink(deps, request, pdf), { signal: ctx.signal, timeoutMs: deps.rpcTimeoutMs });
      } catch (error) {
        if (isPermanentFailure(error) || ctx.isLastAttempt) {
          const message = error instanceof ConnectError ? error.rawMessage : describeError(error);
          await enqueueEmailSent(ctx, request, conversionId, { success: false, message });
        }
        throw error;
      }
      ctx.logger.info("email sent", { email_id: response.emailId, success: response.success });
      await enqueueEmailSent(ctx, request, conversionId, {
        success: response.success,
        message: response.message,
        emailId: response.emailId,
        sentAt: response.timestamp,
      });
    },
  };
}
