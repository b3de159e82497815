/**
 * The UserService RPCs: each validates its request (every bad field at once), hands the work to the domain
 * (users, uploads, conversions) and shapes the answer.
 */
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { ConversionState, UserService, type Conversion } from "@mcsv/sdk";
import { Violations } from "../shared/errors.js";
import type { CallbackPolicy } from "../shared/callback-policy.js";
import type { ConversionReport, Conversions, ImageSource } from "./conversions.js";
import { IMAGE_MIME_TYPES } from "./image-format.js";
import { decodePageToken } from "./page-token.js";
import { isTerminal, toConversion, toUser, type ConversionRow } from "./records.js";
import type { Uploads } from "./uploads.js";
import type { Users } from "./users.js";
import { checkEmail, checkFilename, checkId, checkIdempotencyKey, checkName, checkOptions, type Checked } from "./validation.js";

export interface UserHandlerDeps {
  users: Users;
  uploads: Uploads;
  conversions: Conversions;
  callbacks: CallbackPolicy;
  limits: { maxImageBytes: number; uploadMaxBytes: number };
  /** Aborted when the server shuts down: open watches end. */
  stopping: AbortSignal;
}

const DEFAULT_PAGE_SIZE = 20;
const MAX_PAGE_SIZE = 100;
const MAX_PDF_KEY_LENGTH = 1_024;

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
    return toConversion(row, await conversions.pdfLink(row));
  }

  return {
    async createUser(req) {
      const violations = new Violations();
      const name = take(violations, "name", checkName(req.name));
      const email = take(violations, "email", checkEmail(req.email));
      const idempotencyKey = take(violations, "idempotencyKey", checkIdempotencyKey(req.idempotencyKey));
      violations.throwIfAny();
      const { user } = await users.create({ name: name!, email: email!, idempotencyKey });
      return { user: toUser(user) };
    },

    async getUser(req) {
      const violations = new Violations();
      const id = take(violations, "id", checkId(req.id));
      violations.throwIfAny();
      return { user: toUser(await users.get(id!)) };
    },

    async convertImage(req) {
      const violations = new Violations();
      const userEmail = take(violations, "userEmail", checkEmail(req.userEmail));
      let source: ImageSource | undefined;
      switch (req.source.case) {
        case "imageData": {
          const bytes = req.source.value;
          if (bytes.byteLength > limits.maxImageBytes) {
            throw new ConnectError(
              `the image has ${bytes.byteLength} bytes; inline images are limited to ${limits.maxImageBytes} (${mebibytes(limits.maxImageBytes)}): use CreateUploadUrl for bigger ones`,
              Code.ResourceExhausted,
            );
          }
          if (bytes.byteLength === 0) violations.add("imageData", "is empty");
          else source = { kind: "inline", bytes };
          break;
        }
        case "uploadId": {
          const uploadId = take(violations, "uploadId", checkId(req.source.value));
          if (uploadId) source = { kind: "upload", uploadId };
          break;
        }
        default:
          violations.add("imageData", "one of imageData and uploadId is required");
      }
      const filename = take(violations, "filename", checkFilename(req.filename, ""));
      const options = checkOptions(req.options, violations);
      const idempotencyKey = take(violations, "idempotencyKey", checkIdempotencyKey(req.idempotencyKey));
      let callbackUrl: string | undefined;
      if (req.callbackUrl !== "") {
        const checked = await callbacks.check(req.callbackUrl);
        if ("problem" in checked) violations.add("callbackUrl", checked.problem);
        else callbackUrl = checked.url;
      }
      violations.throwIfAny();
      const { conversion } = await conversions.create({ userEmail: userEmail!, source: source!, filename: filename!, options, idempotencyKey, callbackUrl });
      return { conversion: await present(conversion) };
    },

    async createUploadUrl(req) {
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
      const ticket = await uploads.create({ userEmail: userEmail!, filename: filename!, contentType, size: Number(req.size) });
      return {
        uploadId: ticket.uploadId,
        uploadUrl: ticket.upload.url,
        expiresAt: timestampFromDate(ticket.upload.expiresAt),
        headers: ticket.headers,
      };
    },

    async getConversion(req) {
      const violations = new Violations();
      const id = take(violations, "conversionId", checkId(req.conversionId));
      violations.throwIfAny();
      return { conversion: await present(await conversions.get(id!)) };
    },

    async *watchConversion(req, ctx: HandlerContext) {
      const violations = new Violations();
      const id = take(violations, "conversionId", checkId(req.conversionId));
      violations.throwIfAny();
      const signal = AbortSignal.any([ctx.signal, deps.stopping]);
      let ended = false;
      for await (const row of conversions.watch(id!, signal)) {
        ended = isTerminal(row.state);
        yield { conversion: await present(row) };
      }
      // Recorded as canceled in the RPC metrics and traces (nobody is left to read it).
      if (!ended && ctx.signal.aborted) throw new ConnectError("the client cancelled the watch", Code.Canceled);
      // A shutdown ends the watch early: unavailable tells the client to watch again (on another replica).
      if (!ended && deps.stopping.aborted) {
        throw new ConnectError("the server is shutting down; watch again", Code.Unavailable);
      }
    },

    async listConversions(req) {
      const violations = new Violations();
      const userEmail = take(violations, "userEmail", checkEmail(req.userEmail));
      if (req.pageSize < 0 || req.pageSize > MAX_PAGE_SIZE) violations.add("pageSize", `must be between 1 and ${MAX_PAGE_SIZE} (0 means ${DEFAULT_PAGE_SIZE})`);
      const after = req.pageToken && userEmail ? decodePageToken(req.pageToken, userEmail) : undefined;
      if (req.pageToken && userEmail && after === undefined) violations.add("pageToken", "is not a token of this listing");
      violations.throwIfAny();
      const page = await conversions.list(userEmail!, req.pageSize || DEFAULT_PAGE_SIZE, after);
      return { conversions: await Promise.all(page.conversions.map(present)), nextPageToken: page.nextPageToken };
    },

    async notifyImageConverted(req) {
      const violations = new Violations();
      const conversionId = take(violations, "conversionId", checkId(req.conversionId));
      const state =
        req.state === ConversionState.PROCESSING ? "processing" : req.state === ConversionState.SUCCEEDED ? "succeeded" : req.state === ConversionState.FAILED ? "failed" : undefined;
      if (!state) violations.add("state", "must be CONVERSION_STATE_PROCESSING, CONVERSION_STATE_SUCCEEDED or CONVERSION_STATE_FAILED");
      if (state === "succeeded" && req.pdfKey === "") violations.add("pdfKey", "is required when the state is CONVERSION_STATE_SUCCEEDED");
      if (req.pdfKey.length > MAX_PDF_KEY_LENGTH || /\p{Cc}/u.test(req.pdfKey)) violations.add("pdfKey", "is not a valid storage key");
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
        pdfKey: req.pdfKey || undefined,
        inputSize: req.inputSize,
        outputSize: req.outputSize,
        width: req.width,
        height: req.height,
        durationMs: req.durationMs,
        error: req.error,
      };
      return { conversion: await present(await conversions.report(report)) };
    },
  };
}
