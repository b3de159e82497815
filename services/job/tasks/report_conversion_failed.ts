/**
 * report_conversion_failed: tells the gateway (UserService.NotifyImageConverted FAILED) that a conversion failed,
 * for a convert_image job that could not say so itself: it was discarded when its last attempt's lease expired (a
 * worker that died every time), or the gateway was unreachable when its last attempt reported. The gateway answers
 * failed_precondition for a conversion that has already finished: then the report is done. Other errors retry with
 * the ledger's back-off.
 */
import type { Client } from "@connectrpc/connect";
import { ConversionState, type UserService } from "@mcsv/sdk";
import { decodeTaskArgs, STORED, type DecodedPayloads } from "../payloads.js";
import { isConversionFinished, type TaskDefinition } from "./context.js";

export interface ReportConversionFailedDeps {
  user: Pick<Client<typeof UserService>, "notifyImageConverted">;
  rpcTimeoutMs: number;
}

export function reportConversionFailedTask(deps: ReportConversionFailedDeps): TaskDefinition<DecodedPayloads["report_conversion_failed"]> {
  return {
    decode: (args) => decodeTaskArgs("report_conversion_failed", args, "args", STORED),
    async run({ conversionId, error }, ctx) {
      try {
        await deps.user.notifyImageConverted({ conversionId, state: ConversionState.FAILED, error }, { signal: ctx.signal, timeoutMs: deps.rpcTimeoutMs });
        ctx.logger.warn("conversion reported as failed", { conversion_id: conversionId });
      } catch (reportError) {
        if (!isConversionFinished(reportError)) throw reportError;
        ctx.logger.info("conversion already finished; no failure reported", { conversion_id: conversionId });
      }
    },
  };
}
