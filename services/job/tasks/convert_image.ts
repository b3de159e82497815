/**
 * convert_image: reports PROCESSING to the gateway (UserService.NotifyImageConverted), has the image service
 * convert the original (presigning it again when the enqueued URL is about to expire), and reports SUCCEEDED with
 * the PDF's facts. A permanent failure, or a failure of the last attempt, is reported as FAILED first.
 * The gateway answers failed_precondition for a conversion that has already finished: then there is nothing left
 * to do (a retry after the result was recorded), and the job completes without converting again.
 */
import type { Client } from "@connectrpc/connect";
import { Code, ConnectError } from "@connectrpc/connect";
import { ConversionState, type ImageService, type UserService } from "@mcsv/sdk";
import { describeError } from "../../shared/errors.js";
import type { ObjectStore } from "../../shared/storage.js";
import { decodeTaskArgs, type DecodedPayloads } from "../payloads.js";
import { isPermanentFailure, type TaskDefinition } from "./context.js";

/** A presigned URL with less time left than this is replaced before the image service fetches it. */
export const PRESIGN_REFRESH_MARGIN_MS = 60_000;

export interface ConvertImageDeps {
  image: Pick<Client<typeof ImageService>, "convertImage">;
  user: Pick<Client<typeof UserService>, "notifyImageConverted">;
  store: Pick<ObjectStore, "presignGet">;
  convertTimeoutMs: number;
  rpcTimeoutMs: number;
}

function alreadyFinished(error: unknown): boolean {
  return error instanceof ConnectError && error.code === Code.FailedPrecondition;
}

export function convertImageTask(deps: ConvertImageDeps): TaskDefinition<DecodedPayloads["convert_image"]> {
  return {
    decode: (args) => decodeTaskArgs("convert_image", args),
    async run({ request, objectKey, imageUrlExpiresAt }, ctx) {
      const call = { signal: ctx.signal, timeoutMs: deps.rpcTimeoutMs };
      const { conversionId } = request;
      try {
        await deps.user.notifyImageConverted({ conversionId, state: ConversionState.PROCESSING }, call);
      } catch (error) {
        // The gateway's answer for a conversion that already finished (a retry after the result was reported).
        if (alreadyFinished(error)) return void ctx.logger.info("conversion already finished; nothing left to do");
        throw error; // Unknown conversion (permanent) or the gateway unreachable (retried); no FAILED report.
      }
      try {
        let imageUrl = request.imageUrl;
        if (Date.parse(imageUrlExpiresAt) - Date.now() < PRESIGN_REFRESH_MARGIN_MS) {
          imageUrl = (await deps.store.presignGet(objectKey)).url;
          ctx.logger.info("presigned the original again", { reason: "enqueued URL expired or about to" });
        }
        const result = await deps.image.convertImage({ ...request, imageUrl }, { signal: ctx.signal, timeoutMs: deps.convertTimeoutMs });
        ctx.logger.info("image converted", { duration_ms: Number(result.durationMs), output_size: Number(result.outputSize) });
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
          },
          call,
        ).catch((error: unknown) => {
          if (!alreadyFinished(error)) throw error;
          ctx.logger.warn("conversion finished otherwise meanwhile; this result was not recorded");
        });
      } catch (error) {
        if (isPermanentFailure(error) || ctx.isLastAttempt) {
          const message = error instanceof ConnectError ? error.rawMessage : describeError(error);
          // If this report fails transiently, its error replaces the permanent one: the job retries and reports again.
          await deps.user.notifyImageConverted({ conversionId, state: ConversionState.FAILED, error: message }, call).catch((reportError: unknown) => {
            if (!alreadyFinished(reportError)) throw reportError;
          });
        }
        throw error;
      }
    },
  };
}
