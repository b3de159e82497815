/**
 * Jobs and outbox rows written before links were presigned at send time carry the links themselves. During an
 * upgrade they are neither refused nor lost: their links are dropped, the PDF named by its key, and what is stored
 * is the payload as it is now.
 */
import { enqueueSpec } from "../../services/job/enqueue.js";
import { decodeTaskArgs } from "../../services/job/payloads.js";

const ID = "6f1c2b1e-0000-4000-8000-000000000001";
const LINK = `http://127.0.0.1:9000/mcsv/pdfs/${ID}.pdf?X-Amz-Signature=abc`;

const legacy = {
  convert_image: {
    request: { conversionId: ID, imageUrl: `http://127.0.0.1:9000/mcsv/originals/${ID}?X-Amz-Signature=abc`, inputFormat: "png" },
    objectKey: `originals/${ID}`,
    imageUrlExpiresAt: "2026-11-30T00:00:00.000Z",
  },
  send_email: {
    request: {
      userEmail: "ada@example.com",
      emailType: "EMAIL_TYPE_CONVERSION_COMPLETE",
      variables: { conversion_id: ID, filename: "scan.png", state: "succeeded", pdf_url: LINK, pdf_url_expires_at: "2026-12-07T00:00:00.000Z" },
      idempotencyKey: `conversion_complete:${ID}`,
    },
    conversionId: ID,
  },
  notify_client: {
    pdfReady: { conversion: { id: ID, state: "CONVERSION_STATE_SUCCEEDED", filename: "scan.png", pdfUrl: LINK, pdfUrlExpiresAt: "2026-12-07T00:00:00Z" } },
  },
} as const;

test.each(Object.keys(legacy) as (keyof typeof legacy)[])("a legacy %s payload is accepted, stored without its link, and runs", (task) => {
  const spec = enqueueSpec({ task, args: legacy[task] as never }, undefined);
  const stored = JSON.stringify(spec.args);
  expect(stored).not.toMatch(/X-Amz-Signature|imageUrl|pdf_url|pdfUrl/);
  const decoded = decodeTaskArgs(task, legacy[task]);
  expect(decoded.ok).toBe(true);
  if (task !== "convert_image") expect(spec.args).toMatchObject({ pdf: { key: `pdfs/${ID}.pdf`, filename: "scan.pdf" } });
  else expect(spec.args).toEqual({ request: { conversionId: ID, inputFormat: "png" }, objectKey: `originals/${ID}` });
});

test("a link in any payload is dropped before it is stored; a payload without one is stored as it is", () => {
  const current = { request: { userEmail: "ada@example.com", variables: { pdf_url: LINK } }, pdf: { key: `pdfs/${ID}.pdf`, filename: "a.pdf" } };
  // With a pdf object, the link is dropped as well; the stored payload never holds it.
  expect(JSON.stringify(enqueueSpec({ task: "send_email", args: current as never }, undefined).args)).not.toContain("X-Amz");
  const failed = { request: { userEmail: "ada@example.com", variables: { state: "failed" } }, conversionId: ID };
  expect(enqueueSpec({ task: "send_email", args: failed as never }, undefined).args).toEqual(failed);
});
