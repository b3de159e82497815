/**
 * Conversions: accepting an image (inline or uploaded), the life cycle QUEUED → PROCESSING → SUCCEEDED | FAILED as
 * the job service reports it, listing, and watching. Every state change notifies watchers and writes the jobs it
 * causes to the outbox in one transaction, so that a change and its consequences happen together or not at all.
 * Every conversion belongs to a tenant, and every read and write on a caller's behalf is scoped to it (another
 * tenant's conversion is not found); the job service's reports, which have no tenant, find conversions by id.
 */
import { createHash, randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  ConvertImageTaskSchema,
  EmailType,
  ImageServiceConvertDocumentRequestSchema,
  ImageServiceConvertImageRequestSchema,
  NotifyClientTaskSchema,
  NotifyPdfReadyRequestSchema,
  PdfObjectSchema,
  SendEmailRequestSchema,
  SendEmailTaskSchema,
  type ConversionOptions,
} from "@mcsv/sdk";
import { transaction, type Pool } from "../shared/database.js";
import { invalidArgument, MAX_ERROR_TEXT_LENGTH, resourceExhausted } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import type { PresignedUrl } from "../shared/storage.js";
import { jobKeys } from "../shared/tasks.js";
import { objectKeys } from "../shared/storage.js";
import { notifyConversionChanged } from "./conversion-changes.js";
import { HEADER_BYTES, mayContinue, MIME_TYPE_OF, readImageHeader, sniffImageFormat, type ImageFormat } from "./image-format.js";
import { conversionResults, conversionsRequested, watchersActive } from "./metrics.js";
import type { Originals } from "./originals.js";
import { addToOutbox, outboxJob, type OutboxJob, type OutboxRelay, type Queryable } from "./outbox.js";
import { encodePageToken } from "./page-token.js";
import { isPdfExpired, isTerminal, optionsToJson, pdfFilename, toConversion, type ConversionRow, type StateName, type UserRow } from "./records.js";
import type { Uploads } from "./uploads.js";
import type { WatchHub } from "./watch-hub.js";

export type ImageSource = { kind: "inline"; bytes: Uint8Array } | { kind: "upload"; uploadId: string };

export interface NewConversion {
  tenant: string;
  userEmail: string;
  /** The images: one (ConvertImage), or a document's pages in order (ConvertDocument). */
  sources: ImageSource[];
  /** Whether this is a document (ConvertDocument), converted page by page with progress, even of one page. */
  document: boolean;
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
  inputSize: bigint;
  outputSize: bigint;
  width: number;
  height: number;
  durationMs: bigint;
  error: string;
  /** Pages converted so far (progress), or of the PDF. */
  pagesDone: number;
  /** The searchable text OCR added, with a success. */
  text?: { wordCount: number; languages: string[] } | undefined;
}

export interface ConversionsOptions {
  /** Conversions a tenant may have queued or processing at once; 0 means no cap. */
  maxInFlightPerTenant: number;
  /** Largest image accepted, in pixels, as its header claims. */
  maxImagePixels: number;
  /** Most pages in a document, and most pixels of all its images together (DOCUMENT_MAX_PAGES, DOCUMENT_MAX_PIXELS). */
  maxDocumentPages: number;
  maxDocumentPixels: number;
  /** How long a PDF is kept: the storage sweep deletes it this long after it was written (PDF_RETENTION_DAYS). */
  pdfRetentionMs: number;
  /** The storage's default lifetime of a presigned link (PRESIGN_TTL_SECONDS). */
  presignTtlSeconds: number;
}

/** When a tenant at its cap may try again: a small conversion takes about this long. */
const IN_FLIGHT_RETRY_SECONDS = 5;


export class Conversions {
  constructor(
    private readonly pool: Pool,
    private readonly originals: Originals,
    private readonly uploads: Uploads,
    private readonly relay: OutboxRelay,
    private readonly watches: WatchHub,
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
      const existing = await this.byIdempotencyKey(input.tenant, input.userEmail, input.idempotencyKey);
      if (existing) return { conversion: sameRequest(existing, digest), created: false };
    }
    // Checked before the original is stored (cheap refusal), and again in the transaction (exact).
    await this.checkInFlight(this.pool, input.tenant);

    const id = randomUUID();
    const keys = input.document ? input.sources.map((_, i) => objectKeys.page(id, i)) : [objectKeys.original(id)];
    const originalKey = keys[0]!;
    const pages = await this.storeOriginals(input, keys);
    const first = pages[0]!;
    const inputFormat = [...new Set(pages.map((page) => page.format))].join("+");
    const inputSize = pages.reduce((sum, page) => sum + page.size, 0);
    const filename = input.filename || (input.document ? "document.pdf" : first.filename || `image.${first.format === "jpeg" ? "jpg" : first.format}`);

    let outcome: { conversion: ConversionRow; outboxIds: string[] } | undefined;
    try {
      outcome = await transaction(this.pool, async (db) => {
        await this.lockInFlight(db, input.tenant);
        const { rows } = await db.query<ConversionRow>(
          `insert into mcsv_user.conversions
             (id, tenant, user_email, state, filename, input_format, input_size, options, source, upload_id, original_key,
              callback_url, idempotency_key, request_digest, page_count, page_keys)
           values ($1, $13, $2, 'queued', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $14, $15)
           on conflict (tenant, (lower(user_email)), idempotency_key) where idempotency_key is not null do nothing
           returning *`,
          [
            id,
            input.userEmail,
            filename,
            inputFormat,
            inputSize,
            optionsToJson(input.options),
            input.sources.some((source) => source.kind === "upload") ? "upload" : "inline",
            // A document's uploads name their conversion (uploads.conversion_id); the row names an upload only of one image.
            !input.document && input.sources[0]!.kind === "upload" ? input.sources[0]!.uploadId : null,
            originalKey,
            input.callbackUrl ?? null,
            input.idempotencyKey ?? null,
            digest,
            input.tenant,
            keys.length,
            input.document ? keys : null,
          ],
        );
        const conversion = rows[0];
        if (!conversion) return undefined;
        // Counted with the new one, under the tenant's lock: exact however many requests arrive at once.
        await this.checkInFlight(db, input.tenant, 1);
        for (const source of input.sources) {
          if (source.kind !== "upload") continue;
          const consumed = await db.query("update mcsv_user.uploads set conversion_id = $1 where id = $2 and tenant = $3 and conversion_id is null", [
            id,
            source.uploadId,
            input.tenant,
          ]);
          if (consumed.rowCount === 0) throw new ConnectError(`upload ${source.uploadId} was already converted`, Code.FailedPrecondition);
        }
        // The originals' keys, not links: the job presigns them right before it calls the image service.
        const convert = input.document
          ? create(ConvertImageTaskSchema, {
              document: create(ImageServiceConvertDocumentRequestSchema, {
                conversionId: id,
                pages: pages.map((page) => ({ inputFormat: page.format })),
                options: input.options,
              }),
              pageObjectKeys: keys,
            })
          : create(ConvertImageTaskSchema, {
              request: create(ImageServiceConvertImageRequestSchema, { conversionId: id, inputFormat: first.format, options: input.options }),
              objectKey: originalKey,
            });
        const outboxIds = await addToOutbox(db, input.tenant, [outboxJob("convert_image", jobKeys.convertImage(id), convert)]);
        return { conversion, outboxIds };
      });
    } catch (error) {
      await this.deleteOriginals(keys);
      throw error;
    }

    if (!outcome) {
      // A concurrent request with the same key won: ours stored its originals for nothing.
      await this.deleteOriginals(keys);
      const winner = await this.byIdempotencyKey(input.tenant, input.userEmail, input.idempotencyKey!);
      if (!winner) throw new ConnectError("the conversion could not be recorded; retry", Code.Aborted);
      return { conversion: sameRequest(winner, digest), created: false };
    }
    for (const source of input.sources) conversionsRequested.inc({ source: source.kind });
    await this.deleteOriginals(input.sources.flatMap((source) => (source.kind === "upload" ? [objectKeys.upload(source.uploadId)] : [])));
    await this.relay.deliverNow(outcome.outboxIds);
    return { conversion: outcome.conversion, created: true };
  }

  /** The tenant's conversion; another tenant's is not found. */
  async get(tenant: string, id: string): Promise<ConversionRow> {
    const row = await this.find(id, tenant);
    if (!row) throw new ConnectError(`conversion ${id} not found`, Code.NotFound);
    return row;
  }

  /** One page of the tenant's conversions for an address, newest first. */
  async list(tenant: string, userEmail: string, pageSize: number, afterSeq: string | undefined): Promise<{ conversions: ConversionRow[]; nextPageToken: string }> {
    const { rows } = await this.pool.query<ConversionRow>(
      `select * from mcsv_user.conversions
       where tenant = $4 and lower(user_email) = lower($1) and ($2::bigint is null or seq < $2::bigint)
       order by seq desc
       limit $3`,
      [userEmail, afterSeq ?? null, pageSize + 1, tenant],
    );
    const more = rows.length > pageSize;
    const conversions = rows.slice(0, pageSize);
    return { conversions, nextPageToken: more ? encodePageToken(conversions.at(-1)!.seq, { tenant, email: userEmail }) : "" };
  }

  /**
   * Records what the job service reports. A repeat of the current state returns the conversion as it is. A terminal
   * conversion never changes again: any other report for it is failed_precondition. The transition to a terminal
   * state writes the email and the client notification to the outbox, in the same transaction, so they happen
   * exactly once; after a success, the original is deleted.
   */
  async report(report: ConversionReport): Promise<ConversionRow> {
    const outcome = await transaction(this.pool, async (db) => {
      const { rows } = await db.query<ConversionRow>("select * from mcsv_user.conversions where id = $1 for update", [report.conversionId]);
      const current = rows[0];
      if (!current) throw new ConnectError(`conversion ${report.conversionId} not found`, Code.NotFound);
      // A repeat of the current state changes nothing, unless it reports more pages done (a document's progress).
      const progressed = report.state === "processing" && report.pagesDone > current.pages_done;
      if (report.state === current.state && !progressed) return { conversion: current, outboxIds: [] as string[], finished: false };
      if (isTerminal(current.state)) {
        // Tells a retried convert_image job that there is nothing left to do (and a conflicting report that it lost).
        throw new ConnectError(`conversion ${current.id} already ${current.state}`, Code.FailedPrecondition);
      }
      const updated =
        report.state === "processing"
          ? await db.query<ConversionRow>(
              `update mcsv_user.conversions
                 set state = 'processing', input_size = case when $2::bigint > 0 then $2::bigint else input_size end,
                     pages_done = least(greatest(pages_done, $3), page_count), updated_at = now()
               where id = $1 returning *`,
              [current.id, report.inputSize.toString(), report.pagesDone],
            )
          : await db.query<ConversionRow>(
              `update mcsv_user.conversions
                 set state = $2, pdf_key = $3, output_size = $4, width = $5, height = $6, duration_ms = $7, error = $8,
                     input_size = case when $9::bigint > 0 then $9::bigint else input_size end,
                     pages_done = case when $2 = 'succeeded' then page_count else pages_done end,
                     text_words = $10, text_languages = $11, finished_at = now(), updated_at = now()
               where id = $1 returning *`,
              report.state === "succeeded"
                ? [current.id, "succeeded", objectKeys.pdf(current.id), report.outputSize.toString(), report.width, report.height, report.durationMs.toString(), "", report.inputSize.toString(), report.text?.wordCount ?? null, report.text?.languages ?? null]
                : [current.id, "failed", null, 0, 0, 0, report.durationMs.toString(), clip(report.error || "the conversion failed", MAX_ERROR_TEXT_LENGTH), report.inputSize.toString(), null, null],
            );
      const conversion = updated.rows[0]!;
      await notifyConversionChanged(db, conversion.id);
      const outboxIds = isTerminal(conversion.state) ? await addToOutbox(db, conversion.tenant, await this.completionJobs(db, conversion)) : [];
      return { conversion, outboxIds, finished: isTerminal(conversion.state) };
    });
    if (outcome.finished) {
      conversionResults.inc({ state: outcome.conversion.state });
      this.logger.info("conversion finished", { conversionId: outcome.conversion.id, state: outcome.conversion.state });
    }
    // The original has served its purpose once the PDF exists: the gateway, which stored it, deletes it (a failed
    // conversion keeps its original for the sweep). One that cannot be deleted now is left to the sweep too.
    await Promise.all([
      this.relay.deliverNow(outcome.outboxIds),
      outcome.finished && outcome.conversion.state === "succeeded" ? this.deleteOriginals(outcome.conversion.page_keys ?? [outcome.conversion.original_key]) : undefined,
    ]);
    return outcome.conversion;
  }

  /**
   * The tenant's conversion now and after every change of state, until it ends or `signal` aborts. Waits on change
   * notifications (no polling); the watchers of one conversion share one read of its row per change (watch-hub.ts).
   * Throws resource_exhausted when the tenant holds TENANT_MAX_WATCHES watches open already.
   */
  async *watch(tenant: string, id: string, signal: AbortSignal): AsyncGenerator<ConversionRow> {
    const watch = this.watches.open(tenant, id);
    watchersActive.inc();
    try {
      let last: { state: StateName; pagesDone: number } | undefined;
      for (;;) {
        const next = await watch.next(signal);
        if (!next) return;
        // The shared read is by id alone: another tenant's conversion is not found.
        const row = next.row?.tenant === tenant ? next.row : undefined;
        if (!row) {
          if (last === undefined) throw new ConnectError(`conversion ${id} not found`, Code.NotFound);
          return;
        }
        // A change of state, or a document's progress.
        if (row.state !== last?.state || row.pages_done !== last.pagesDone) {
          last = { state: row.state, pagesDone: row.pages_done };
          yield row;
        }
        if (isTerminal(row.state)) return;
      }
    } finally {
      watch.close();
      watchersActive.dec();
    }
  }

  /**
   * When the storage sweep may delete a succeeded conversion's PDF (isPdfExpired tells whether that is past). The
   * sweep goes by the object's age, and the PDF is written after the conversion was accepted, so counting from
   * created_at never promises a PDF the sweep has taken.
   */
  pdfExpiresAt(row: ConversionRow): Date | undefined {
    if (row.state !== "succeeded" || !row.pdf_key) return undefined;
    return new Date(row.created_at.getTime() + this.options.pdfRetentionMs);
  }

  /** A fresh download link of a succeeded conversion's PDF, valid no longer than the PDF is kept; none once expired. */
  async pdfLink(row: ConversionRow, ttlSeconds?: number): Promise<PresignedUrl | undefined> {
    const expiresAt = this.pdfExpiresAt(row);
    if (!expiresAt || isPdfExpired(expiresAt) || !row.pdf_key) return undefined;
    const left = Math.floor((expiresAt.getTime() - Date.now()) / 1000);
    const ttl = Math.max(1, Math.min(ttlSeconds || this.options.presignTtlSeconds, left));
    return this.originals.presignGet(row.pdf_key, { filename: pdfFilename(row.filename), ttlSeconds: ttl });
  }


  /** The conversion by id, within `tenant` when given (the job service's reports have none). */
  private async find(id: string, tenant?: string): Promise<ConversionRow | undefined> {
    const { rows } = await this.pool.query<ConversionRow>("select * from mcsv_user.conversions where id = $1 and ($2::text is null or tenant = $2)", [
      id,
      tenant ?? null,
    ]);
    return rows[0];
  }

  private async byIdempotencyKey(tenant: string, userEmail: string, key: string): Promise<ConversionRow | undefined> {
    const { rows } = await this.pool.query<ConversionRow>(
      "select * from mcsv_user.conversions where tenant = $1 and lower(user_email) = lower($2) and idempotency_key = $3",
      [tenant, userEmail, key],
    );
    return rows[0];
  }

  /** Within a transaction: makes the tenant's concurrent creates wait for each other until it ends. */
  private async lockInFlight(db: Queryable, tenant: string): Promise<void> {
    if (this.options.maxInFlightPerTenant <= 0) return;
    await db.query("select pg_advisory_xact_lock(hashtextextended('mcsv_user.in_flight:' || $1::text, 0))", [tenant]);
  }

  /**
   * Refuses another conversion when the tenant has its cap queued or processing, not counting the `own` ones just
   * inserted by the caller's transaction.
   */
  private async checkInFlight(db: Queryable, tenant: string, own = 0): Promise<void> {
    const cap = this.options.maxInFlightPerTenant;
    if (cap <= 0) return;
    const { rows } = await db.query<{ n: number }>(
      `select count(*)::int as n from (
         select 1 from mcsv_user.conversions where tenant = $1 and state in ('queued', 'processing') limit $2) as in_flight`,
      [tenant, cap + own],
    );
    if ((rows[0]?.n ?? 0) - own >= cap) {
      throw resourceExhausted(`this tenant already has ${cap} conversions queued or processing, the most it may have at once`, IN_FLIGHT_RETRY_SECONDS);
    }
  }

  /**
   * Checks each image and puts it at its key (the pages in parallel); returns what it found. All of a document's
   * pixels together must stay within DOCUMENT_MAX_PIXELS. What was stored is deleted again when one page is refused.
   */
  private async storeOriginals(input: NewConversion, keys: string[]): Promise<StoredOriginal[]> {
    const field = (i: number, name: "imageData" | "uploadId") => (input.document ? `images[${i}].${name}` : name);
    const stored = await Promise.allSettled(input.sources.map((source, i) => this.storeOriginal(input, source, keys[i]!, (name) => field(i, name))));
    const refused = stored.find((outcome) => outcome.status === "rejected");
    const pages = stored.flatMap((outcome) => (outcome.status === "fulfilled" ? [outcome.value] : []));
    const pixels = pages.reduce((sum, page) => sum + page.pixels, 0);
    if (refused || pixels > this.options.maxDocumentPixels) {
      await this.deleteOriginals(keys);
      if (refused) throw refused.reason;
      throw new ConnectError(
        `the document's images have ${pixelCount(pixels)} pixels together, more than the limit of ${pixelCount(this.options.maxDocumentPixels)}; send fewer or smaller images`,
        Code.ResourceExhausted,
      );
    }
    return pages;
  }

  /** Checks one image and puts it at `key`. */
  private async storeOriginal(input: NewConversion, source: ImageSource, key: string, field: (name: "imageData" | "uploadId") => string): Promise<StoredOriginal> {
    if (source.kind === "inline") {
      const header = await this.checkImage(source.bytes, source.bytes.byteLength, field("imageData"));
      await this.originals.put(key, source.bytes, MIME_TYPE_OF[header.format]);
      return { ...header, size: source.bytes.byteLength };
    }
    const { uploadId } = source;
    const upload = await this.uploads.find(input.tenant, uploadId, input.userEmail);
    if (!upload) throw new ConnectError(`upload ${uploadId} not found for this address`, Code.NotFound);
    if (upload.conversion_id) throw new ConnectError(`upload ${uploadId} was already converted`, Code.FailedPrecondition);
    const uploadKey = objectKeys.upload(uploadId);
    const stored = await this.originals.head(uploadKey);
    const notYet = `upload ${uploadId} has not been uploaded yet: PUT the image to its upload_url first`;
    if (!stored) throw new ConnectError(notYet, Code.FailedPrecondition);
    if (stored.size === 0 || stored.size > Number(upload.size)) {
      throw new ConnectError(`the uploaded object has ${stored.size} bytes; ${upload.size} were declared`, Code.FailedPrecondition);
    }
    const start = await this.originals.readStart(uploadKey, HEADER_BYTES);
    if (!start) throw new ConnectError(notYet, Code.FailedPrecondition);
    const header = await this.checkImage(start, stored.size, field("uploadId"), () => this.originals.readStart(uploadKey, stored.size));
    await this.originals.copy(uploadKey, key, MIME_TYPE_OF[header.format]);
    return { ...header, size: stored.size, filename: upload.filename };
  }

  private async deleteOriginals(keys: string[]): Promise<void> {
    await Promise.all(keys.map((key) => this.originals.deleteQuietly(key)));
  }

  /**
   * Refuses at once what the image's first bytes and header show: not a supported raster format, a header that
   * cannot be read (invalid_argument, naming `field`), more pixels than GATEWAY_MAX_IMAGE_PIXELS (resource_exhausted).
   * `start` is the image's beginning, `size` its whole length; when what decides lies beyond `start` (a TIFF's
   * directory, an AVIF's header), the whole image is checked again, as `readAll` fetches it (an upload, bounded by
   * UPLOAD_MAX_BYTES).
   */
  private async checkImage(start: Uint8Array, size: number, field: string, readAll?: () => Promise<Uint8Array | undefined>): Promise<{ format: ImageFormat; pixels: number }> {
    const max = this.options.maxImagePixels;
    const inspect = async (bytes: Uint8Array) => {
      const sniffed = await sniffImageFormat(bytes);
      return "refused" in sniffed ? sniffed : { format: sniffed.format, header: await readImageHeader(bytes, sniffed.format, max) };
    };
    let found = await inspect(start);
    if (start.byteLength < size && readAll && mayContinue(start, "refused" in found ? found : found.header)) {
      const whole = await readAll();
      if (whole) found = await inspect(whole);
    }
    if ("refused" in found) throw invalidArgument([{ field, description: `${found.refused}; send png, jpeg, webp, tiff, gif or avif` }]);
    if ("tooManyPixels" in found.header) {
      throw new ConnectError(`the image's header claims more pixels than the limit of ${pixelCount(max)} (width × height); send a smaller image`, Code.ResourceExhausted);
    }
    if ("unreadable" in found.header) {
      throw invalidArgument([{ field, description: `${found.header.unreadable}; send an undamaged png, jpeg, webp, tiff, gif or avif` }]);
    }
    return { format: found.format, pixels: found.header.width * found.header.height };
  }

  /** The jobs that a conversion's end causes. */
  private async completionJobs(db: Queryable, conversion: ConversionRow): Promise<OutboxJob[]> {
    const { rows } = await db.query<UserRow>(
      "select id, tenant, name, email, idempotency_key, created_at from mcsv_user.users where tenant = $1 and lower(email) = lower($2)",
      [conversion.tenant, conversion.user_email],
    );
    const user = rows[0];
    const succeeded = conversion.state === "succeeded";
    // The PDF's key, not a link: the email and the notification get one presigned when they are sent.
    const pdfExpiresAt = this.pdfExpiresAt(conversion);
    const pdf =
      succeeded && conversion.pdf_key
        ? create(PdfObjectSchema, {
            key: conversion.pdf_key,
            filename: pdfFilename(conversion.filename),
            expiresAt: pdfExpiresAt ? timestampFromDate(pdfExpiresAt) : undefined,
            // Every attempt of the email and the notification sends the same link (see PdfObject.linked_at).
            linkedAt: timestampFromDate(conversion.finished_at ?? new Date()),
          })
        : undefined;
    const email = create(SendEmailTaskSchema, {
      request: create(SendEmailRequestSchema, {
          userId: user?.id ?? "",
          userName: user?.name ?? "",
          userEmail: conversion.user_email,
          emailType: EmailType.CONVERSION_COMPLETE,
          variables: {
            conversion_id: conversion.id,
            filename: conversion.filename,
            state: conversion.state,
            ...(succeeded ? {} : { error: conversion.error }),
          },
          idempotencyKey: `conversion_complete:${conversion.id}`,
      }),
      conversionId: conversion.id,
      pdf,
    });
    const notify = create(NotifyClientTaskSchema, {
      event: { case: "pdfReady", value: create(NotifyPdfReadyRequestSchema, { conversion: toConversion(conversion, undefined, pdfExpiresAt) }) },
      callbackUrl: conversion.callback_url ?? "",
      pdf,
      // Whose secrets sign the callback.
      tenant: conversion.tenant ?? "default",
    });
    return [outboxJob("send_email", jobKeys.conversionEmail(conversion.id), email), outboxJob("notify_client", jobKeys.pdfReady(conversion.id), notify)];
  }
}

/** Renders a pixel count the way the image service's refusal does (100,000,000). */
const pixelCount = (n: number) => n.toLocaleString("en-US");

interface StoredOriginal {
  format: ImageFormat;
  size: number;
  pixels: number;
  /** An upload's name. */
  filename?: string;
}

/** What a request asked for, so that a reused idempotency key with a different request is noticed. */
function requestDigest(input: NewConversion): string {
  const sources = input.sources.map((source) => [source.kind, source.kind === "inline" ? createHash("sha256").update(source.bytes).digest("hex") : source.uploadId]);
  // A one-image request is described as before, so that a key used before this change still matches its request.
  const described = JSON.stringify(
    input.document
      ? [input.userEmail.toLowerCase(), "document", sources, input.filename, optionsToJson(input.options), input.callbackUrl ?? ""]
      : [input.userEmail.toLowerCase(), ...sources[0]!, input.filename, optionsToJson(input.options), input.callbackUrl ?? ""],
  );
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
