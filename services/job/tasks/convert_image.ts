/**
 * convert_image: has the image service convert the original (presigned from its object key right before the call:
 * the payload carries no link) and reports SUCCEEDED with the PDF's facts to the gateway (UserService.NotifyImageConverted);
 * PROCESSING is reported only for a conversion that takes a while. A permanent failure, or a failure of the last
 * attempt, is reported as FAILED. The gateway answers failed_precondition for a conversion that has already
 * finished: a redelivered job asks with its PROCESSING report before converting, and then completes without
 * converting again.
 *
 * When this job cannot report FAILED itself, a report_conversion_failed job does, with retries of its own: when the
 * gateway is unreachable at the moment of the FAILED report (or, on the last attempt, of the PROCESSING one), and
 * when the job is discarded because its attempts' leases expired (a worker that dies every time) (onDiscarded), so that a
 * conversion never stays PROCESSING for good.
 */
import type { Client } from "@connectrpc/connect";
import { Code, ConnectError } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import {
  ConversionState,
  ReportConversionFailedTaskSchema,
  type ImageService,
  type ImageServiceConvertDocumentRequest,
  type ImageServiceConvertImageResponse,
  type UserService,
} from "@mcsv/sdk";
import { describeError, MAX_ERROR_TEXT_LENGTH, retryAfterOf } from "../../shared/errors.js";
import type { ObjectStore } from "../../shared/storage.js";
import { jobKeys, typedTask } from "../../shared/tasks.js";
import type { EnqueueInput } from "../enqueue.js";
import { decodeTaskArgs, STORED, type DecodedPayloads } from "../payloads.js";
import { DeferredJobError, isConversionFinished, isPermanentFailure, type DiscardedJob, type TaskContext, type TaskDefinition } from "./context.js";

export interface ConvertImageDeps {
  image: Pick<Client<typeof ImageService>, "convertImage" | "convertDocument">;
  user: Pick<Client<typeof UserService>, "notifyImageConverted">;
  store: Pick<ObjectStore, "presignGet">;
  convertTimeoutMs: number;
  rpcTimeoutMs: number;
  /** A first attempt reports PROCESSING only when its conversion runs longer than this. */
  processingReportMs: number;
}

/** The job that reports FAILED for this conversion when this job cannot (one per conversion: its job key). */
export function conversionFailedReport(conversionId: string, error: string): EnqueueInput {
  return {
    payload: typedTask(
      "report_conversion_failed",
      create(ReportConversionFailedTaskSchema, { conversionId, error: error.slice(0, MAX_ERROR_TEXT_LENGTH) || "the conversion failed" }),
    ),
    jobKey: jobKeys.conversionFailed(conversionId),
  };
}

/** Why a conversion whose job was discarded by crash recovery failed, in words for its owner. */
export function discardedConversionError(job: DiscardedJob): string {
  const tries = job.attempts + job.givenBack;
  const times = `${job.interruptions} ${job.interruptions === 1 ? "time" : "times"}`;
  return job.interruptions >= tries
    ? `the conversion was interrupted ${times} (its worker died or lost the job database each time); given up`
    : `the conversion was interrupted ${times} in ${tries} attempts (its worker died or lost the job database), the last attempt included; given up`;
}

/**
 * Has the image service convert a document, passing each page's progress to `onProgress` (awaited, so reports stay
 * in order), and resolves with the result the stream ends with.
 */
async function convertDocument(
  deps: ConvertImageDeps,
  document: ImageServiceConvertDocumentRequest,
  imageUrls: string[],
  options: { signal: AbortSignal; timeoutMs: number },
  onProgress: (pagesDone: number) => Promise<void>,
): Promise<ImageServiceConvertImageResponse> {
  const pages = document.pages.map((page, i) => ({ ...page, imageUrl: imageUrls[i]! }));
  for await (const step of deps.image.convertDocument({ ...document, pages }, options)) {
    if (step.result) return step.result;
    await onProgress(step.pagesDone);
  }
  throw new ConnectError("the image service ended the document's stream without a result", Code.Internal);
}

/** Has report_conversion_failed report FAILED later, after the gateway did not take the report now. */
async function reportLater(ctx: TaskContext, conversionId: string, message: string, reportError: unknown): Promise<void> {
  const { job, duplicate } = await ctx.enqueue(conversionFailedReport(conversionId, message));
  ctx.logger.warn("conversion failure not reported (the gateway did not take it); a report_conversion_failed job retries it", {
    error: describeError(reportError),
    follow_up_job_id: job?.id,
    duplicate,
  });
}

export function convertImageTask(deps: ConvertImageDeps): TaskDefinition<DecodedPayloads["convert_image"]> {
  return {
    decode: (args) => decodeTaskArgs("convert_image", args, "args", STORED),
    async run(payload, ctx) {
      const call = { signal: ctx.signal, timeoutMs: deps.rpcTimeoutMs };
      const conversionId = payload.request?.conversionId ?? payload.document!.conversionId;
      const reportProcessing = (pagesDone = 0) => deps.user.notifyImageConverted({ conversionId, state: ConversionState.PROCESSING, pagesDone }, call);
      let progress: NodeJS.Timeout | undefined;
      if (ctx.redelivered) {
        // An earlier attempt may have finished the conversion: the PROCESSING report asks the gateway first.
        try {
          await reportProcessing();
        } catch (error) {
          // The gateway's answer for a conversion that already finished (a retry after the result was reported).
          if (isConversionFinished(error)) return void ctx.logger.info("conversion already finished; nothing left to do");
          // The gateway away on the last attempt: the job ends here, and the conversion must not stay QUEUED.
          if (ctx.isLastAttempt && !isPermanentFailure(error)) {
            const message = `the conversion could not start: the gateway did not take its progress report (${error instanceof ConnectError ? error.rawMessage : describeError(error)})`;
            await reportLater(ctx, conversionId, message, error);
          }
          throw error; // Unknown conversion (permanent, nothing to report to) or the gateway unreachable (retried).
        }
      } else {
        // A first attempt converts at once. PROCESSING is reported only if the conversion is still running after
        // processingReportMs: a quick one goes from QUEUED to SUCCEEDED in one report, and none waits for a round
        // trip before it starts. A lost progress report changes nothing; the result's report is what counts.
        progress = setTimeout(() => {
          reportProcessing().catch((error: unknown) => ctx.logger.debug("progress report not taken", { error: describeError(error) }));
        }, deps.processingReportMs);
      }
      try {
        // A document gets the deadline of one conversion per page.
        const options = { signal: ctx.signal, timeoutMs: deps.convertTimeoutMs * (payload.document?.pages.length ?? 1) };
        // Links that live PRESIGN_TTL_SECONDS from now, on the endpoint the services reach: fetched at once.
        const presign = async (key: string) => (await deps.store.presignGet(key, { internal: true })).url;
        const result = payload.document
          ? await convertDocument(deps, payload.document, await Promise.all(payload.pageObjectKeys.map(presign)), options, (pagesDone) => {
              clearTimeout(progress);
              // In order, one at a time: the stream waits for each report (a lost one changes nothing).
              return reportProcessing(pagesDone).then(
                () => undefined,
                (error: unknown) => void ctx.logger.debug("progress report not taken", { error: describeError(error) }),
              );
            })
          : await deps.image.convertImage({ ...payload.request, imageUrl: await presign(payload.objectKey) }, options);
        clearTimeout(progress);
        ctx.logger.info("image converted", { duration_ms: Number(result.durationMs), output_size: Number(result.outputSize), pages: result.pageCount });
        await deps.user.notifyImageConverted(
          {
            conversionId,
            state: ConversionState.SUCCEEDED,
            pdfKey: result.pdfKey,
            inputSize: result.inputSize,
            outputSize: result.outputSize,
            width: result.width,
            height: result.height,
            durationMs: result.durationMs,
            pagesDone: result.pageCount,
            text: result.text,
          },
          call,
        ).catch((error: unknown) => {
          if (!isConversionFinished(error)) throw error;
          ctx.logger.warn("conversion finished otherwise meanwhile; this result was not recorded");
        });
      } catch (error) {
        clearTimeout(progress);
        // The image service's slots are full: try later, not as a failed attempt (the backlog stays in the queue).
        const retryAfter = retryAfterOf(error);
        if (retryAfter !== undefined) throw new DeferredJobError(error instanceof ConnectError ? error.rawMessage : describeError(error), retryAfter);
        if (isPermanentFailure(error) || ctx.isLastAttempt) {
          const message = error instanceof ConnectError ? error.rawMessage : describeError(error);
          await deps.user.notifyImageConverted({ conversionId, state: ConversionState.FAILED, error: message }, call).catch(async (reportError: unknown) => {
            if (!isConversionFinished(reportError)) await reportLater(ctx, conversionId, message, reportError);
          });
        }
        throw error;
      }
    },
    onDiscarded: (payload, job) => conversionFailedReport(payload.request?.conversionId ?? payload.document!.conversionId, discardedConversionError(job)),
  };
}
