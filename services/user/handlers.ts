/**
 * The UserService RPCs: each validates its request (every bad field at once), hands the work to the domain
 * (users, uploads, conversions) and shapes the answer. The public ones act for the tenant of the caller's API key
 * (tenantOf), after its rate limit, and see only that tenant's rows: another tenant's are not found.
 */
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { ConversionState, UserService, type Conversion, type ConversionOptions } from "@mcsv/sdk";
import { TENANT_NAME, tenantOf } from "../shared/auth.js";
import { Violations } from "../shared/errors.js";
import { objectKeys } from "../shared/storage.js";
import type { CallbackPolicy } from "../shared/callback-policy.js";
import type { ConversionReport, Conversions, ImageSource } from "./conversions.js";
import { IMAGE_MIME_TYPES } from "./image-format.js";
import { decodePageToken } from "./page-token.js";
import type { TenantRateLimiter } from "./rate-limit.js";
import { isTerminal, toConversion, toUser, type ConversionRow } from "./records.js";
import type { Uploads } from "./uploads.js";
import type { Users } from "./users.js";
import type { WebhookSecrets } from "./webhook-secrets.js";
import { checkEmail, checkFilename, checkId, checkIdempotencyKey, checkName, checkOptions, type Checked } from "./validation.js";

export interface UserHandlerDeps {
  users: Users;
  uploads: Uploads;
  conversions: Conversions;
  callbacks: CallbackPolicy;
  limits: { maxImageBytes: number; uploadMaxBytes: number; maxDocumentPages: number };
  /** Requests per tenant (every public RPC takes one). */
  rateLimit: TenantRateLimiter;
  /** Aborted when the server shuts down: open watches end. */
  stopping: AbortSignal;
  /** Longest WatchConversion stream, in seconds (WATCH_MAX_SECONDS). */
  watchMaxSeconds: number;
  /** Each tenant's callback signing secrets. */
  webhookSecrets: WebhookSecrets;
}

const DEFAULT_PAGE_SIZE = 20;
const MAX_PAGE_SIZE = 100;

/** The value when it passed, else records the problem under `field`. */
function take<T>(violations: Violations, field: string, checked: Checked<T>): T | undefined {
  if (checked.problem !== undefined) {
    violations.add(field, checked.problem);
    return undefined;
  }
  return checked.value;
}

function mebibytes(bytes: number): string {
  return `${Math.round((bytes / 1024 / 1024) * 10) / 10} MiB`;
}

export function createUserHandlers(deps: UserHandlerDeps): ServiceImpl<typeof UserService> {
  const { users, uploads, conversions, callbacks, limits } = deps;

  async function present(row: ConversionRow): Promise<Conversion> {
    return toConversion(row, await conversions.pdfLink(row), conversions.pdfExpiresAt(row));
  }

  /** Inline images beyond the limit are refused before anything else: they belong in uploads. */
  function checkInlineBytes(bytes: number): void {
    if (bytes > limits.maxImageBytes) {
      throw new ConnectError(
        `the request carries ${bytes} bytes of images inline; inline images are limited to ${limits.maxImageBytes} (${mebibytes(limits.maxImageBytes)}) together: use CreateUploadUrl for bigger ones`,
        Code.ResourceExhausted,
      );
    }
  }

  /** The image of a ConvertImage request or of one page of a ConvertDocument request, its fields named by `field`. */
  function imageSource(
    violations: Violations,
    source: { case: "imageData"; value: Uint8Array } | { case: "uploadId"; value: string } | { case: undefined; value?: undefined },
    field: (name: string) => string,
  ): ImageSource | undefined {
    switch (source.case) {
      case "imageData":
        if (source.value.byteLength === 0) violations.add(field("imageData"), "is empty");
        return { kind: "inline", bytes: source.value };
      case "uploadId": {
        const uploadId = take(violations, field("uploadId"), checkId(source.value));
        return uploadId ? { kind: "upload", uploadId } : undefined;
      }
      default:
        violations.add(field("imageData"), "one of imageData and uploadId is required");
        return undefined;
    }
  }

  /** The fields ConvertImage and ConvertDocument share. */
  async function checkConversion(violations: Violations, req: { filename: string; options?: ConversionOptions | undefined; idempotencyKey: string; callbackUrl: string }) {
    const filename = take(violations, "filename", checkFilename(req.filename, ""));
    const options = checkOptions(req.options, violations);
    const idempotencyKey = take(violations, "idempotencyKey", checkIdempotencyKey(req.idempotencyKey));
    let callbackUrl: string | undefined;
    if (req.callbackUrl !== "") {
      const checked = await callbacks.check(req.callbackUrl);
      if ("problem" in checked) violations.add("callbackUrl", checked.problem);
      else callbackUrl = checked.url;
    }
    return { filename: filename!, options, idempotencyKey, callbackUrl };
  }

  /** The caller's tenant, once its rate limit lets the call through. */
  function admitTenant(ctx: HandlerContext): string {
    const tenant = tenantOf(ctx);
    deps.rateLimit.take(tenant);
    return tenant;
  }

  return {
    async createUser(req, ctx) {
      const tenant = admitTenant(ctx);
      const violations = new Violations();
      const name = take(violations, "name", checkName(req.name));
      const email = take(violations, "email", checkEmail(req.email));
      const idempotencyKey = take(violations, "idempotencyKey", checkIdempotencyKey(req.idempotencyKey));
      violations.throwIfAny();
      const { user } = await users.create({ tenant, name: name!, email: email!, idempotencyKey });
      return { user: toUser(user) };
    },

    async getUser(req, ctx) {
      const tenant = admitTenant(ctx);
      const violations = new Violations();
      const id = take(violations, "id", checkId(req.id));
      violations.throwIfAny();
      return { user: toUser(await users.get(tenant, id!)) };
    },

    async convertImage(req, ctx) {
      const tenant = admitTenant(ctx);
      const violations = new Violations();
      const userEmail = take(violations, "userEmail", checkEmail(req.userEmail));
      if (req.source.case === "imageData") checkInlineBytes(req.source.value.byteLength);
      const source = imageSource(violations, req.source, (name) => name);
      const common = await checkConversion(violations, req);
      violations.throwIfAny();
      const { conversion } = await conversions.create({ tenant, userEmail: userEmail!, sources: [source!], document: false, ...common });
      return { conversion: await present(conversion) };
    },

    async convertDocument(req, ctx) {
      const tenant = admitTenant(ctx);
      const violations = new Violations();
      const userEmail = take(violations, "userEmail", checkEmail(req.userEmail));
      checkInlineBytes(req.images.reduce((sum, image) => sum + (image.source.case === "imageData" ? image.source.value.byteLength : 0), 0));
      if (req.images.length === 0) violations.add("images", "must name at least one image");
      if (req.images.length > limits.maxDocumentPages) violations.add("images", `must name at most ${limits.maxDocumentPages} images (pages)`);
      const sources = req.images.slice(0, limits.maxDocumentPages).map((image, i) => imageSource(violations, image.source, (name) => `images[${i}].${name}`));
      const uploadIds = sources.flatMap((source) => (source?.kind === "upload" ? [source.uploadId] : []));
      if (new Set(uploadIds).size !== uploadIds.length) violations.add("images", "must not name an upload twice");
      const common = await checkConversion(violations, req);
      violations.throwIfAny();
      const { conversion } = await conversions.create({ tenant, userEmail: userEmail!, sources: sources as ImageSource[], document: true, ...common });
      return { conversion: await present(conversion) };
    },

    async createUploadUrl(req, ctx) {
      const tenant = admitTenant(ctx);
      const violations = new Violations();
      const userEmail = take(violations, "userEmail", checkEmail(req.userEmail));
      const filename = take(violations, "filename", checkFilename(req.filename, ""));
      const contentType = req.contentType.trim().toLowerCase();
      if (!(contentType in IMAGE_MIME_TYPES)) violations.add("contentType", `must be one of ${Object.keys(IMAGE_MIME_TYPES).join(", ")}`);
      if (req.size <= 0n) violations.add("size", "must be the positive number of bytes that will be uploaded");
      violations.throwIfAny();
      if (req.size > BigInt(limits.uploadMaxBytes)) {
        throw new ConnectError(`uploads are limited to ${limits.uploadMaxBytes} bytes (${mebibytes(limits.uploadMaxBytes)})`, Code.ResourceExhausted);
      }
      const ticket = await uploads.create({ tenant, userEmail: userEmail!, filename: filename!, contentType, size: Number(req.size) });
      return {
        uploadId: ticket.uploadId,
        uploadUrl: ticket.upload.url,
        expiresAt: timestampFromDate(ticket.upload.expiresAt),
        headers: ticket.headers,
      };
    },

    async getConversion(req, ctx) {
      const tenant = admitTenant(ctx);
      const violations = new Violations();
      const id = take(violations, "conversionId", checkId(req.conversionId));
      violations.throwIfAny();
      return { conversion: await present(await conversions.get(tenant, id!)) };
    },

    async *watchConversion(req, ctx: HandlerContext) {
      const tenant = admitTenant(ctx);
      const violations = new Violations();
      const id = take(violations, "conversionId", checkId(req.conversionId));
      violations.throwIfAny();
      // No stream is held forever: past WATCH_MAX_SECONDS it ends, and the client watches again.
      const timeUp = new AbortController();
      const timer = setTimeout(() => timeUp.abort(), deps.watchMaxSeconds * 1000);
      const signal = AbortSignal.any([ctx.signal, deps.stopping, timeUp.signal]);
      let ended = false;
      try {
        for await (const row of conversions.watch(tenant, id!, signal)) {
          ended = isTerminal(row.state);
          yield { conversion: await present(row) };
        }
      } finally {
        clearTimeout(timer);
      }
      // Recorded as canceled in the RPC metrics and traces (nobody is left to read it).
      if (!ended && ctx.signal.aborted) throw new ConnectError("the client cancelled the watch", Code.Canceled);
      // A shutdown ends the watch early: unavailable tells the client to watch again (on another replica).
      if (!ended && deps.stopping.aborted) {
        throw new ConnectError("the server is shutting down; watch again", Code.Unavailable);
      }
      if (!ended && timeUp.signal.aborted) {
        throw new ConnectError(`the watch reached its maximum duration of ${deps.watchMaxSeconds} s; watch again`, Code.DeadlineExceeded);
      }
    },

    async listConversions(req, ctx) {
      const tenant = admitTenant(ctx);
      const violations = new Violations();
      const userEmail = take(violations, "userEmail", checkEmail(req.userEmail));
      if (req.pageSize < 0 || req.pageSize > MAX_PAGE_SIZE) violations.add("pageSize", `must be between 1 and ${MAX_PAGE_SIZE} (0 means ${DEFAULT_PAGE_SIZE})`);
      const after = req.pageToken && userEmail ? decodePageToken(req.pageToken, { tenant, email: userEmail }) : undefined;
      if (req.pageToken && userEmail && after === undefined) violations.add("pageToken", "is not a token of this listing");
      violations.throwIfAny();
      const page = await conversions.list(tenant, userEmail!, req.pageSize || DEFAULT_PAGE_SIZE, after);
      return { conversions: await Promise.all(page.conversions.map(present)), nextPageToken: page.nextPageToken };
    },

    async notifyImageConverted(req) {
      const violations = new Violations();
      const conversionId = take(violations, "conversionId", checkId(req.conversionId));
      const state =
        req.state === ConversionState.PROCESSING ? "processing" : req.state === ConversionState.SUCCEEDED ? "succeeded" : req.state === ConversionState.FAILED ? "failed" : undefined;
      if (!state) violations.add("state", "must be CONVERSION_STATE_PROCESSING, CONVERSION_STATE_SUCCEEDED or CONVERSION_STATE_FAILED");
      // The gateway presigns only keys it derives itself: a caller cannot point a conversion at another object.
      if (req.pdfKey !== "" && conversionId && req.pdfKey !== objectKeys.pdf(conversionId)) violations.add("pdfKey", `must be empty or ${objectKeys.pdf(conversionId)}: the gateway derives the PDF's key`);
      for (const [field, value] of [
        ["inputSize", req.inputSize],
        ["outputSize", req.outputSize],
        ["durationMs", req.durationMs],
      ] as const) {
        if (value < 0n) violations.add(field, "must not be negative");
      }
      violations.throwIfAny();
      const report: ConversionReport = {
        conversionId: conversionId!,
        state: state!,
        inputSize: req.inputSize,
        outputSize: req.outputSize,
        width: req.width,
        height: req.height,
        durationMs: req.durationMs,
        error: req.error,
        pagesDone: req.pagesDone,
        text: req.text ? { wordCount: req.text.wordCount, languages: [...req.text.languages] } : undefined,
      };
      return { conversion: await present(await conversions.report(report)) };
    },

    async getWebhookSecret(_req, ctx) {
      const current = await deps.webhookSecrets.current(admitTenant(ctx));
      return { secret: current.secret, createdAt: timestampFromDate(current.createdAt) };
    },

    async rotateWebhookSecret(_req, ctx) {
      const { current, previousExpiresAt } = await deps.webhookSecrets.rotate(admitTenant(ctx));
      return {
        secret: current.secret,
        createdAt: timestampFromDate(current.createdAt),
        ...(previousExpiresAt ? { previousExpiresAt: timestampFromDate(previousExpiresAt) } : {}),
      };
    },

    async getWebhookSigningSecrets(req) {
      const violations = new Violations();
      if (!TENANT_NAME.test(req.tenant)) violations.add("tenant", "must be a tenant name: 1 to 63 of a-z, 0-9, '_', '.', '-'");
      violations.throwIfAny();
      const secrets = await deps.webhookSecrets.signing(req.tenant);
      return { secrets: secrets.map((s) => ({ secret: s.secret, ...(s.expiresAt ? { expiresAt: timestampFromDate(s.expiresAt) } : {}) })) };
    },
  };
}
