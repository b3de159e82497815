/**
 * Data lifecycle (issue #10, point 10), on real Postgres and s3rver with the job service's real storage sweep: once
 * the sweep may have deleted a conversion's PDF, the conversion says so (pdf_expired) and no link is presigned; and
 * the retention prune deletes old conversions, uploads and outbox rows, and nothing that is still needed.
 */
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { ConversionState, type Conversion } from "@mcsv/sdk";
import { jobEnv } from "../../services/job/config.js";
import { cleanupStorageTask } from "../../services/job/tasks/cleanup_storage.js";
import type { TaskContext } from "../../services/job/tasks/context.js";
import { createLogger } from "../../services/shared/logger.js";
import { jobKeys } from "../../services/shared/tasks.js";
import { objectKeys } from "../../services/shared/storage.js";
import { userEnv } from "../../services/user/config.js";
import { eventually, failure, image, metricValue, startGateway, startInfra, type Gateway, type Infra } from "./support.js";

let infra: Infra;
let png: Uint8Array;

beforeAll(async () => {
  infra = await startInfra();
  png = await image("png");
});

afterAll(async () => {
  await infra?.stop();
});

const ms = (t: { seconds: bigint; nanos: number } | undefined) => (t ? timestampDate(t as Parameters<typeof timestampDate>[0]).getTime() : undefined);

test("the gateway's retention settings default to the job service's, which deletes the objects", () => {
  expect(userEnv.PDF_RETENTION_DAYS.parse(undefined)).toBe(jobEnv.PDF_RETENTION_DAYS.parse(undefined));
  expect(userEnv.UPLOAD_RETENTION_HOURS.parse(undefined)).toBe(jobEnv.UPLOAD_RETENTION_HOURS.parse(undefined));
});

describe("an expired PDF", () => {
  const RETENTION_MS = 3_000;
  let gw: Gateway;

  beforeAll(async () => {
    gw = await startGateway(infra, { PDF_RETENTION_DAYS: String(RETENTION_MS / 86_400_000) });
  });

  afterAll(async () => {
    await gw?.stop();
  });

  /** The job service's hourly sweep, as it runs there, with the same PDF_RETENTION_DAYS. */
  async function sweep(): Promise<void> {
    const task = cleanupStorageTask({ store: gw.store, uploadMaxAgeMs: 86_400_000, pdfMaxAgeMs: RETENTION_MS });
    const decoded = task.decode({ sweep: true });
    if (!decoded.ok) throw new Error("sweep payload refused");
    await task.run(decoded.payload, { signal: new AbortController().signal, logger: createLogger("job-svc", { level: "error", format: "json" }) } as TaskContext);
  }

  async function succeeded(): Promise<Conversion> {
    const { conversion } = await gw.client.convertImage({ userEmail: "expiry@example.com", source: { case: "imageData", value: png }, filename: "cat.png" });
    const id = conversion!.id;
    await gw.store.put(objectKeys.pdf(id), new TextEncoder().encode("%PDF-1.7\n%%EOF\n"), { contentType: "application/pdf" });
    return (await gw.client.notifyImageConverted({ conversionId: id, state: ConversionState.SUCCEEDED, pdfKey: objectKeys.pdf(id), outputSize: 15n, width: 16, height: 16 })).conversion!;
  }

  test("says when the PDF goes, links no longer than that, and once the sweep may have deleted it: expired, no link", async () => {
    const done = await succeeded();
    const { conversion: fresh } = await gw.client.getConversion({ conversionId: done.id });
    expect(fresh!.pdfExpired).toBe(false);
    expect(ms(fresh!.pdfExpiresAt)).toBe(ms(fresh!.createdAt)! + RETENTION_MS);
    expect(ms(fresh!.pdfUrlExpiresAt)).toBeLessThanOrEqual(ms(fresh!.pdfExpiresAt)!);
    expect((await fetch(fresh!.pdfUrl)).status).toBe(200);

    // The sweep runs over and over while the PDF ages; whenever it is gone, the conversion says it expired.
    let states = 0;
    for (;;) {
      await sweep();
      const gone = (await gw.store.head(objectKeys.pdf(done.id))) === undefined;
      const { conversion } = await gw.client.getConversion({ conversionId: done.id });
      if (gone) expect({ pdfExpired: conversion!.pdfExpired, pdfUrl: conversion!.pdfUrl }).toEqual({ pdfExpired: true, pdfUrl: "" });
      // A link signed in the PDF's last second may lapse before it is fetched (SigV4 dates are whole seconds).
      if (!conversion!.pdfExpired && ms(conversion!.pdfUrlExpiresAt)! - Date.now() > 1_000) expect((await fetch(conversion!.pdfUrl)).status).toBe(200);
      states++;
      if (gone) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(states).toBeGreaterThan(3);

    // Every way of reading the conversion agrees.
    const { conversions } = await gw.client.listConversions({ userEmail: "expiry@example.com" });
    expect(conversions.find((c) => c.id === done.id)).toMatchObject({ pdfExpired: true, pdfUrl: "", state: ConversionState.SUCCEEDED });
    for await (const { conversion } of gw.client.watchConversion({ conversionId: done.id })) {
      expect(conversion).toMatchObject({ pdfExpired: true, pdfUrl: "", pdfExpiresAt: fresh!.pdfExpiresAt });
    }
  });

  test("a conversion that did not succeed has no PDF to expire", async () => {
    const { conversion } = await gw.client.convertImage({ userEmail: "expiry@example.com", source: { case: "imageData", value: png } });
    expect([conversion!.pdfExpired, conversion!.pdfExpiresAt]).toEqual([false, undefined]);
    const failed = (await gw.client.notifyImageConverted({ conversionId: conversion!.id, state: ConversionState.FAILED, error: "x" })).conversion!;
    expect([failed.pdfExpired, failed.pdfExpiresAt, failed.pdfUrl]).toEqual([false, undefined, ""]);
  });
});

describe("retention", () => {
  let gw: Gateway;

  beforeAll(async () => {
    gw = await startGateway(infra, { RETENTION_INTERVAL_MS: "200" });
  });

  afterAll(async () => {
    await gw?.stop();
  });

  async function conversion(state: "queued" | "failed", upload?: string): Promise<string> {
    const { conversion } = await gw.client.convertImage({
      userEmail: "old@example.com",
      source: upload ? { case: "uploadId", value: upload } : { case: "imageData", value: png },
    });
    if (state === "failed") await gw.client.notifyImageConverted({ conversionId: conversion!.id, state: ConversionState.FAILED, error: "x" });
    return conversion!.id;
  }

  async function upload(): Promise<string> {
    const ticket = await gw.client.createUploadUrl({ userEmail: "old@example.com", contentType: "image/png", size: BigInt(png.byteLength) });
    expect((await fetch(ticket.uploadUrl, { method: "PUT", headers: ticket.headers, body: png })).status).toBe(200);
    return ticket.uploadId;
  }

  const age = async (table: string, column: string, id: string, interval: string, by = "id") =>
    gw.db.query(`update mcsv_user.${table} set ${column} = now() - interval '${interval}' where ${by} = $1`, [id]);
  const exists = async (table: string, id: string, by = "id") => (await gw.db.query(`select 1 from mcsv_user.${table} where ${by} = $1`, [id])).rowCount === 1;

  test("deletes what is past its retention, keeps the rest", async () => {
    const oldFinished = await conversion("failed");
    const recentFinished = await conversion("failed");
    const stuck = await conversion("queued");
    const oldUnused = await upload();
    const recentUnused = await upload();
    const usedByKept = await upload();
    const keptConversion = await conversion("failed", usedByKept);
    const usedByPruned = await upload();
    const prunedConversion = await conversion("failed", usedByPruned);

    // Outbox rows: the convert_image jobs of these conversions, all delivered to the stub.
    await eventually(async () => ((await gw.db.query("select 1 from mcsv_user.outbox where sent_at is null")).rowCount === 0 ? true : undefined), "every job delivered");
    const job = (id: string) => jobKeys.convertImage(id);
    await gw.db.query("update mcsv_user.outbox set sent_at = null, dead_at = now() - interval '8 days' where job_key = $1", [job(stuck)]);
    await gw.db.query(
      "update mcsv_user.outbox set sent_at = null, created_at = now() - interval '60 days', next_attempt_at = now() + interval '1 day' where job_key = $1",
      [job(keptConversion)],
    );
    await age("outbox", "sent_at", job(recentFinished), "6 days", "job_key");

    await age("conversions", "updated_at", stuck, "60 days");
    await age("conversions", "created_at", stuck, "60 days");
    await age("conversions", "finished_at", recentFinished, "29 days");
    await age("uploads", "created_at", recentUnused, "23 hours");
    await age("uploads", "created_at", usedByKept, "25 hours");
    await age("uploads", "created_at", usedByPruned, "31 days");
    await age("uploads", "created_at", oldUnused, "25 hours");
    await age("outbox", "sent_at", job(oldFinished), "8 days", "job_key");
    await age("conversions", "finished_at", prunedConversion, "31 days");
    await age("conversions", "finished_at", oldFinished, "31 days");

    await eventually(
      async () =>
        !(await exists("conversions", oldFinished)) &&
        !(await exists("conversions", prunedConversion)) &&
        !(await exists("uploads", oldUnused)) &&
        !(await exists("uploads", usedByPruned)) &&
        !(await exists("outbox", job(oldFinished), "job_key")) &&
        !(await exists("outbox", job(stuck), "job_key"))
          ? true
          : undefined,
      "the old rows to be pruned",
    );
    expect((await failure(gw.client.getConversion({ conversionId: oldFinished }))).code).toBe(Code.NotFound);

    // A few more passes change nothing for the rest.
    const passes = await metricValue(gw.service.url, "mcsv_retention_pruned_rows_total");
    await new Promise((r) => setTimeout(r, 600));
    expect(await metricValue(gw.service.url, "mcsv_retention_pruned_rows_total")).toBe(passes);
    expect({
      recentFinished: await exists("conversions", recentFinished),
      stuck: await exists("conversions", stuck),
      keptConversion: await exists("conversions", keptConversion),
      recentUnused: await exists("uploads", recentUnused),
      usedByKept: await exists("uploads", usedByKept),
      recentSent: await exists("outbox", job(recentFinished), "job_key"),
      pending: await exists("outbox", job(keptConversion), "job_key"),
    }).toEqual({ recentFinished: true, stuck: true, keptConversion: true, recentUnused: true, usedByKept: true, recentSent: true, pending: true });
    expect(await metricValue(gw.service.url, "mcsv_retention_pruned_rows_total", { table: "conversions" })).toBeGreaterThanOrEqual(2);
    expect(await metricValue(gw.service.url, "mcsv_retention_pruned_rows_total", { table: "uploads" })).toBeGreaterThanOrEqual(2);
    expect(await metricValue(gw.service.url, "mcsv_retention_pruned_rows_total", { table: "outbox" })).toBeGreaterThanOrEqual(2);
  });
});
