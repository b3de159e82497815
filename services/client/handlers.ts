/** ClientService RPCs: validate the callback, record it once, answer whether it was new. */
import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { ConversionState, ListEventsResponseSchema, NotifyEmailSentResponseSchema, NotifyPdfReadyResponseSchema, type ClientService } from "@mcsv/sdk";
import type { Logger } from "../shared/logger.js";
import type { CallbackInbox, EventKind } from "./inbox.js";
import { clientEventsHeld, clientEventsTotal } from "./metrics.js";
import { validateEmailSent, validateLimit, validatePdfReady } from "./validation.js";

export interface ClientHandlerDeps {
  inbox: CallbackInbox;
  logger: Logger;
}

export function createClientHandlers({ inbox, logger }: ClientHandlerDeps): ServiceImpl<typeof ClientService> {
  function counted(kind: EventKind, recorded: boolean, fields: Record<string, unknown>): boolean {
    clientEventsTotal.inc({ kind, result: recorded ? "recorded" : "repeat" });
    clientEventsHeld.set(inbox.size);
    logger.info(recorded ? "callback recorded" : "callback repeated", { kind, ...fields });
    return recorded;
  }

  return {
    notifyPdfReady(req) {
      validatePdfReady(req);
      const recorded = inbox.recordPdfReady(req);
      const { id, state } = req.conversion!;
      return create(NotifyPdfReadyResponseSchema, { recorded: counted("pdf_ready", recorded, { conversion_id: id, state: ConversionState[state] }) });
    },

    notifyEmailSent(req) {
      validateEmailSent(req);
      const recorded = inbox.recordEmailSent(req);
      const fields = { email_id: req.emailId || undefined, conversion_id: req.conversionId || undefined, success: req.success };
      return create(NotifyEmailSentResponseSchema, { recorded: counted("email_sent", recorded, fields) });
    },

    listEvents(req) {
      return create(ListEventsResponseSchema, { events: inbox.recent(validateLimit(req.limit)) });
    },
  };
}
