/**
 * Links to a conversion's PDF, presigned by the task that sends them (the email, the client notification, the
 * callback) right before it sends, from the object key in its payload: no link is stored anywhere on the way.
 */
import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { PdfObject } from "@mcsv/sdk";
import type { ObjectStore, PresignedUrl } from "../shared/storage.js";

export type { PdfObject };

export interface PdfLinksDeps {
  store: Pick<ObjectStore, "presignGet">;
  /** NOTIFICATION_PDF_URL_TTL_SECONDS. */
  notificationPdfTtlSeconds: number;
}

/**
 * A download link of the PDF, signed as of `linkedAt` (so that every attempt of a job makes the same one), that
 * lives NOTIFICATION_PDF_URL_TTL_SECONDS from then, or less when the storage sweep deletes the PDF sooner; none
 * when that time has passed.
 */
export async function presignPdf(deps: PdfLinksDeps, pdf: PdfObject): Promise<PresignedUrl | undefined> {
  const now = Date.now();
  // Never in the future: storage refuses a link that is not valid yet (clocks of two hosts differ a little).
  const signedAt = new Date(Math.min(pdf.linkedAt ? timestampMs(pdf.linkedAt) : now, now));
  let ttlSeconds = deps.notificationPdfTtlSeconds;
  if (pdf.expiresAt) ttlSeconds = Math.min(ttlSeconds, Math.floor((timestampMs(pdf.expiresAt) - signedAt.getTime()) / 1000));
  if (ttlSeconds < 1 || signedAt.getTime() + ttlSeconds * 1000 <= now) return undefined;
  return deps.store.presignGet(pdf.key, { filename: pdf.filename, ttlSeconds, signedAt });
}
