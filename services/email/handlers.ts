/** EmailService RPCs: validate, send, report. */
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { type EmailService, SendEmailResponseSchema } from "@mcsv/sdk";
import { connectCodeName, describeError } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import { emailsTotal } from "./metrics.js";
import type { EmailSender } from "./sender.js";
import { typeLabel, validateSendEmail } from "./validation.js";

export interface EmailHandlerDeps {
  sender: EmailSender;
  logger: Logger;
}

export function createEmailHandlers(deps: EmailHandlerDeps): ServiceImpl<typeof EmailService> {
  return {
    async sendEmail(req, ctx) {
      const type = typeLabel(req.emailType);
      try {
        const request = validateSendEmail(req);
        const sent = await deps.sender.send(request, ctx.signal);
        emailsTotal.inc({ type, outcome: "sent" });
        return create(SendEmailResponseSchema, {
          success: true,
          message: `${type} email accepted by ${sent.transport}`,
          emailId: sent.emailId,
          timestamp: timestampFromDate(sent.acceptedAt),
        });
      } catch (error) {
        const failure = ConnectError.from(error);
        emailsTotal.inc({ type, outcome: connectCodeName(failure.code) });
        if (failure.code !== Code.InvalidArgument) {
          deps.logger.warn("email not sent", { type, code: connectCodeName(failure.code), error: describeError(failure), user_id: req.userId || undefined });
        }
        throw failure;
      }
    },
  };
}
