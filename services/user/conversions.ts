/**
 * Conversions: accepting an image (inline or uploaded), the life cycle QUEUED → PROCESSING → SUCCEEDED | FAILED as
 * the job service reports it, listing, and watching. Every state change notifies watchers and writes the jobs it
 * causes to the outbox in one transaction, so that a change and its consequences happen together or not at all.
 */
import { createHash, randomUUID } from "node:crypto";
import { create, toJson, type JsonObject } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  EmailType,
  ImageServiceConvertImageRequestSchema,
  NotifyPdfReadyRequestSchema,
  SendEmailRequestSchema,
  type ConversionOptions,
} from "@mcsv/sdk";
import { transaction, type Pool } from "../shared/database.js";
import { invalidArgument } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import type { PresignedUrl } from "../shared/storage.js";
import { jobKeys, objectKeys, type TaskPayload } from "../shared/tasks.js";
import { notifyConversionChanged, type ConversionChanges } from "./conversion-changes.js";
import { MIME_TYPE_OF, SNIFF_BYTES, sniffImageFormat, type ImageFormat } from "./image-format.js";
import { conversionResults, conversionsRequested, watchersActive } from "./metrics.js";
import type { Originals } from "./originals.js";
import { addToOutbox, type OutboxJob, type OutboxRelay, type Queryable } from "./outbox.js";
import { encodePageToken } from "./page-token.js";
import { isTerminal, optionsToJson, pdfFilename, toConversion, type ConversionRow, type StateName, type UserRow } from "./records.js";
import type { Uploads } from "./uploads.js";

export type ImageSource = { kind: "inline"; bytes: Uint8Array } | { kind: "upload"; uploadId: string };

export interface NewConversion {
  userEmail: string;
  source: ImageSource;
  /** Empty means a name made from the format (or the upload's name). */
  filename: string;
  options: ConversionOptions;
  idempotencyKey?: string | undefined;
  /** Already checked against the callback policy. */
  callbackUrl?: string | undefined;
}

/** What the job service reports about a conversion. */
export interface ConversionReport {
  conversionId: string;
  state: "processing" | "succeeded" | "failed";
  pdfKey?: string | undefined;
  inputSize: bigint;
  outputSize: bigint;
  width: number;
  height: number;
  durationMs: bigint;
  error: string;
}

export interface ConversionsOptions {
  /** Lifetime of the PDF link sent in the email and the client callback. */
  notificationPdfTtlSeconds: number;
}

/** Longest error text kept (the email template takes up to 2,000 characters). */
const MAX_ERROR_LENGTH = 1_000;

export class Conversions {
  constructor(
    private readonly pool: Pool,
    private readonly originals: Originals,
    private readonly uploads: Uploads,
    private readonly relay: OutboxRelay,
    private readonly changes: ConversionChanges,
    private readonly logger: Logger,
    private readonly options: ConversionsOptions,
  ) {}

  /**
   * Accepts a conversion: stores the original under its own key, records the conversion (QUEUED) and its
   * convert_image job together. A repeat with the same idempotency key (also a concurrent one) returns the first
   * conversion and adds nothing.
   */
  async create(input: NewConversion): Promise<{ conversion: ConversionRow; created: boolean }> {
    const digest = input.idempotencyKey === undefined ? "" : requestDigest(input);
    if (input.idempotencyKey !== undefined) {
      const existing = await this.byIdempotencyKey(input.userEmail, input.idempotencyKey);
      if (existing) return { conversion: sameRequest(existing, digest), created: false };
    }

    const id = randomUUID();
    const originalKey = objectKeys.original(id);
    const prepared = await this.storeOriginal(id, input);
    const filename = input.filename || prepared.filename || `image.${prepared.format === "jpeg" ? "jpg" : prepared.format}`;
    const imageUrl = await this.originals.presignGet(originalKey);

    let outcome: { conversion: ConversionRow; outboxIds: string[] } | undefined;
    try {
      outcome = await transaction(this.pool, async (db) => {
        const { rows } = await db.query<ConversionRow>(
          `insert into mcsv_user.conversions
             (id, user_email, state, filename, input_format, input_size, options, source, upload_id, original_key,
              callback_url, idempotency_key, request_digest)
           values ($1, $2, 'queued', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
           on conflict ((lower(user_email)), idempotency_key) where idempotency_key is not null do nothing
           returning *`,
          [
            id,
            input.userEmail,
            filename,
            prepared.format,
            prepared.size,
            optionsToJson(input.options),
            input.source.kind,
            input.source.kind === "upload" ? input.source.uploadId : null,
            originalKey,
            input.callbackUrl ?? null,
            input.idempotencyKey ?? null,
            digest,
          ],
        );
        const conversion = rows[0];
        if (!conversion) return undefined;
        if (input.source.kind === "upload") {
          const consumed = await db.query("update mcsv_user.uploads set conversion_id = $1 where id = $2 and conversion_id is null", [id, input.source.uploadId]);
          if (consumed.rowCount === 0) throw new ConnectError("this upload was already converted", Code.FailedPrecondition);
        }
        const args: TaskPayload<"convert_image"> = {
          request: toJson(
            ImageServiceConvertImageRequestSchema,
            create(ImageServiceConvertImageRequestSchema, { conversionId: id, imageUrl: imageUrl.url, inputFormat: prepared.format, options: input.options }),
          ) as JsonObject,
          objectKey: originalKey,
          imageUrlExpiresAt: imageUrl.expiresAt.toISOString(),
        };
        const outboxIds = await addToOutbox(db, [{ task: "convert_image", jobKey: jobKeys.convertImage(id), args }]);
        return { conversion, outboxIds };
      });
    } catch (error) {
      await this.originals.deleteQuietly(originalKey);
      throw error;
    }

    if (!outcome) {
      // A concurrent request with the same key won: ours stored an original for nothing.
      await this.originals.deleteQuietly(originalKey);
      const winner = await this.byIdempotencyKey(input.userEmail, input.idempotencyKey!);
      if (!winner) throw new ConnectError("the conversion could not be recorded; retry", Code.Aborted);
      return { conversion: sameRequest(winner, digest), created: false };
    }
    conversionsRequested.inc({ source: input.source.kind });
    if (input.source.kind === "upload") await this.originals.deleteQuietly(objectKeys.upload(input.source.uploadId));
    await this.relay.deliverNow(outcome.outboxIds);
    return { conversion: outcome.conversion, created: true };
  }

  async get(id: string): Promise<ConversionRow> {
    const row = await this.find(id);
    if (!row) throw new ConnectError(`conversion ${id} not found`, Code.NotFound);
    return row;
  }

  /** One page of an address's conversions, newest first. */
  async list(userEmail: string, pageSize: number, afterSeq: string | undefined): Promise<{ conversions: ConversionRow[]; nextPageToken: string }> {
    const { rows } = await this.pool.query<ConversionRow>(
      `select * from mcsv_user.conversions
       where lower(user_email) = lower($1) and ($2::bigint is null or seq < $2::bigint)
       order by seq desc
       limit $3`,
      [userEmail, afterSeq ?? null, pageSize + 1],
    );
    const more = rows.length > pageSize;
    const conversions = rows.slice(0, pageSize);
    return { conversions, nextPageToken: more ? encodePageToken(conversions.at(-1)!.seq, userEmail) : "" };
  }

  /**
   * Records what the job service reports. A repeat of the current state returns the conversion as it is. A terminal
   * conversion never changes again: any other report for it is failed_precondition. The transition to a terminal
   * state writes the email, the client notification and (on success) the clean-up of the original to the outbox,
   * in the same transaction, so they happen exactly once.
   */
  async report(report: ConversionReport): Promise<ConversionRow> {
    const outcome = await transaction(this.pool, async (db) => {
      const { rows } = await db.query<ConversionRow>("select * from mcsv_user.conversions where id = $1 for update", [report.conversionId]);
      const current = rows[0];
      if (!current) throw new ConnectError(`conversion ${report.conversionId} not found`, Code.NotFound);
      if (report.state === current.state) return { conversion: current, outboxIds: [] as string[], finished: false };
      if (isTerminal(current.state)) {
        // Tells a retried convert_image job that there is nothing left to do (and a conflicting report that it lost).
        throw new ConnectError(`conversion ${current.id} already ${current.state}`, Code.FailedPrecondition);
      }
      const updated =
        report.state === "processing"
          ? await db.query<ConversionRow>(
              `update mcsv_user.conversions
                 set state = 'processing', input_size = case when $2::bigint > 0 then $2::bigint else input_size end, updated_at = now()
               where id = $1 returning *`,
              [current.id, report.inputSize.toString()],
            )
          : await db.query<ConversionRow>(
              `update mcsv_user.conversions
                 set state = $2, pdf_key = $3, output_size = $4, width = $5, height = $6, duration_ms = $7, error = $8,
                     input_size = case when $9::bigint > 0 then $9::bigint else input_size end,
                     finished_at = now(), updated_at = now()
               where id = $1 returning *`,
              report.state === "succeeded"
                ? [current.id, "succeeded", report.pdfKey, report.outputSize.toString(), report.width, report.height, report.durationMs.toString(), "", report.inputSize.toString()]
                : [current.id, "failed", null, 0, 0, 0, report.durationMs.toString(), clip(report.error || "the conversion failed", MAX_ERROR_LENGTH), report.inputSize.toString()],
            );
      const conversion = updated.rows[0]!;
      await notifyConversionChanged(db, conversion.id);
      const outboxIds = isTerminal(conversion.state) ? await addToOutbox(db, await this.completionJobs(db, conversion)) : [];
      return { conversion, outboxIds, finished: isTerminal(conversion.state) };
    });
    if (outcome.finished) {
      conversionResults.inc({ state: outcome.conversion.state });
      this.logger.info("conversion finished", { conversionId: outcome.conversion.id, state: outcome.conversion.state });
    }
    await this.relay.deliverNow(outcome.outboxIds);
    return outcome.conversion;
  }

  /**
   * The conversion now and after every change of state, until it ends or `signal` aborts. Waits on change
   * notifications (no polling); it subscribes before the first read, so that no change slips in between.
   */
  async *watch(id: string, signal: AbortSignal): AsyncGenerator<ConversionRow> {
    let dirty = true;
    let wake: (() => void) | undefined;
    const unsubscribe = this.changes.subscribe(id, () => {
      dirty = true;
      wake?.();
    });
    const onAbort = () => wake?.();
    signal.addEventListener("abort", onAbort);
    watchersActive.inc();
    try {
      let last: StateName | undefined;
      while (!signal.aborted) {
        if (!dirty) {
          await new Promise<void>((resolve) => (wake = resolve));
          wake = undefined;
          continue;
        }
        dirty = false;
        const row = await this.find(id);
        if (!row) {
          if (last === undefined) throw new ConnectError(`conversion ${id} not found`, Code.NotFound);
          return;
        }
        if (row.state !== last) {
          last = row.state;
          yield row;
        }
        if (isTerminal(row.state)) return;
      }
    } finally {
      unsubscribe();
      signal.removeEventListener("abort", onAbort);
      watchersActive.dec();
    }
  }

  /** A fresh download link of a succeeded conversion's PDF. */
  async pdfLink(row: ConversionRow, ttlSeconds?: number): Promise<PresignedUrl | undefined> {
    if (row.state !== "succeeded" || !row.pdf_key) return undefined;
    return this.originals.presignGet(row.pdf_key, { filename: pdfFilename(row.filename), ...(ttlSeconds ? { ttlSeconds } : {}) });
  }

  private async find(id: string): Promise<ConversionRow | undefined> {
    const { rows } = await this.pool.query<ConversionRow>("select * from mcsv_user.conversions where id = $1", [id]);
    return rows[0];
  }

  private async byIdempotencyKey(userEmail: string, key: string): Promise<ConversionRow | undefined> {
    const { rows } = await this.pool.query<ConversionRow>(
      "select * from mcsv_user.conversions where lower(user_email) = lower($1) and idempotency_key = $2",
      [userEmail, key],
    );
    return rows[0];
  }

  /** Checks the image and puts it at the conversion's original key; returns what it found. */
  private async storeOriginal(id: string, input: NewConversion): Promise<{ format: ImageFormat; size: number; filename?: string }> {
    const originalKey = objectKeys.original(id);
    if (input.source.kind === "inline") {
      const format = await sniffOrRefuse(input.source.bytes, "imageData");
      await this.originals.put(originalKey, input.source.bytes, MIME_TYPE_OF[format]);
      return { format, size: input.source.bytes.byteLength };
    }
    const { uploadId } = input.source;
    const upload = await this.uploads.find(uploadId, input.userEmail);
    if (!upload) throw new ConnectError(`upload ${uploadId} not found for this address`, Code.NotFound);
    if (upload.conversion_id) throw new ConnectError("this upload was already converted", Code.FailedPrecondition);
    const uploadKey = objectKeys.upload(uploadId);
    const stored = await this.originals.head(uploadKey);
    if (!stored) throw new ConnectError("the image has not been uploaded yet: PUT it to the upload_url first", Code.FailedPrecondition);
    if (stored.size === 0 || stored.size > Number(upload.size)) {
      throw new ConnectError(`the uploaded object has ${stored.size} bytes; ${upload.size} were declared`, Code.FailedPrecondition);
    }
    const start = await this.originals.readStart(uploadKey, SNIFF_BYTES);
    if (!start) throw new ConnectError("the image has not been uploaded yet: PUT it to the upload_url first", Code.FailedPrecondition);
    const format = await sniffOrRefuse(start, "uploadId");
    await this.originals.copy(uploadKey, originalKey, MIME_TYPE_OF[format]);
    return { format, size: stored.size, filename: upload.filename };
  }

  /** The jobs that a conversion's end causes. */
  private async completionJobs(db: Queryable, conversion: ConversionRow): Promise<OutboxJob[]> {
    const { rows } = await db.query<UserRow>("select id, name, email, idempotency_key, created_at from mcsv_user.users where lower(email) = lower($1)", [
      conversion.user_email,
    ]);
    const user = rows[0];
    const succeeded = conversion.state === "succeeded";
    const pdf = await this.pdfLink(conversion, this.options.notificationPdfTtlSeconds);
    const email: TaskPayload<"send_email"> = {
      request: toJson(
        SendEmailRequestSchema,
        create(SendEmailRequestSchema, {
          userId: user?.id ?? "",
          userName: user?.name ?? "",
          userEmail: conversion.user_email,
          emailType: EmailType.CONVERSION_COMPLETE,
          variables: {
            conversion_id: conversion.id,
            filename: conversion.filename,
            state: conversion.state,
            ...(pdf ? { pdf_url: pdf.url, pdf_url_expires_at: pdf.expiresAt.toISOString() } : {}),
            ...(succeeded ? {} : { error: conversion.error }),
          },
          idempotencyKey: `conversion_complete:${conversion.id}`,
        }),
      ) as JsonObject,
      conversionId: conversion.id,
    };
    const notify: TaskPayload<"notify_client"> = {
      pdfReady: toJson(NotifyPdfReadyRequestSchema, create(NotifyPdfReadyRequestSchema, { conversion: toConversion(conversion, pdf) })) as JsonObject,
      ...(conversion.callback_url ? { callbackUrl: conversion.callback_url } : {}),
    };
    const jobs: OutboxJob[] = [
      { task: "send_email", jobKey: jobKeys.conversionEmail(conversion.id), args: email },
      { task: "notify_client", jobKey: jobKeys.pdfReady(conversion.id), args: notify },
    ];
    if (succeeded) {
      const cleanup: TaskPayload<"cleanup_storage"> = { objectKey: conversion.original_key };
      jobs.push({ task: "cleanup_storage", jobKey: jobKeys.cleanupOriginal(conversion.id), args: cleanup });
    }
    return jobs;
  }
}

async function sniffOrRefuse(bytes: Uint8Array, field: string): Promise<ImageFormat> {
  const sniffed = await sniffImageFormat(bytes);
  if ("refused" in sniffed) throw invalidArgument([{ field, description: `${sniffed.refused}; send png, jpeg, webp, tiff, gif or avif` }]);
  return sniffed.format;
}

/** What a request asked for, so that a reused idempotency key with a different request is noticed. */
function requestDigest(input: NewConversion): string {
  const source = input.source.kind === "inline" ? createHash("sha256").update(input.source.bytes).digest("hex") : input.source.uploadId;
  const described = JSON.stringify([input.userEmail.toLowerCase(), input.source.kind, source, input.filename, optionsToJson(input.options), input.callbackUrl ?? ""]);
  return createHash("sha256").update(described).digest("hex");
}

function sameRequest(existing: ConversionRow, digest: string): ConversionRow {
  if (existing.request_digest !== digest) {
    throw invalidArgument([{ field: "idempotencyKey", description: "was already used for a different request" }]);
  }
  return existing;
}

function clip(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}
