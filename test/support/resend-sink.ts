/**
 * A local stand-in for Resend's API (https://api.resend.com), close enough for the real `resend` SDK:
 * `POST /emails` with `Authorization: Bearer <key>` and an optional `Idempotency-Key` header answers
 * `200 {"id": "<uuid>"}`, and errors as Resend does: `{"statusCode", "name", "message"}` JSON.
 *
 * Like Resend it remembers idempotency keys: the same key with the same body answers the first id again without a
 * second delivery; the same key with a different body answers 409 invalid_idempotent_request.
 *
 *   const sink = await startResendSink();
 *   // point the service at it: RESEND_API_KEY=anything, RESEND_BASE_URL=sink.url
 *   sink.failNext(429);             // the next POST /emails answers 429 rate_limit_exceeded
 *   sink.failNext(500, undefined, 2) // the next two answer 500
 *   sink.hangNext();                // the next one never answers (timeouts)
 *   sink.delivered();               // unique emails accepted, oldest first
 *   sink.requests();                // every request received, failures and repeats included
 *   await sink.close();
 */
import { randomUUID } from "node:crypto";
import { createServer, type IncomingHttpHeaders, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

/** The body of POST /emails as the SDK sends it (snake_case; `to` normalised to an array here). */
export interface ResendEmailBody {
  from: string;
  to: string[];
  subject: string;
  html?: string;
  text?: string;
  reply_to?: string | string[];
  cc?: string | string[];
  bcc?: string | string[];
  headers?: Record<string, string>;
  tags?: { name: string; value: string }[];
  [key: string]: unknown;
}

export interface SinkRequest {
  method: string;
  path: string;
  /** Lower-cased header names. */
  headers: IncomingHttpHeaders;
  /** Parsed JSON, or the raw text when it is not JSON. */
  body: unknown;
  /** Status the sink answered (0 while hanging). */
  status: number;
  receivedAt: Date;
}

export interface DeliveredEmail {
  id: string;
  idempotencyKey: string | undefined;
  body: ResendEmailBody;
  deliveredAt: Date;
}

export interface ResendSink {
  /** Origin to use as RESEND_BASE_URL, e.g. http://127.0.0.1:41234 (no trailing slash). */
  readonly url: string;
  /**
   * The next `times` POST /emails answer `status` with `body` (default: Resend's error JSON for that status),
   * before any idempotency or validation logic; a 429 also carries `retry-after: 1`.
   */
  failNext(status: number, body?: string | Record<string, unknown>, times?: number): void;
  /** The next `times` POST /emails get no answer until close(). */
  hangNext(times?: number): void;
  /** Unique deliveries, oldest first. */
  delivered(): DeliveredEmail[];
  /** Every request received, oldest first. */
  requests(): SinkRequest[];
  close(): Promise<void>;
}

export interface ResendSinkOptions {
  /** Only this bearer token is accepted (403 invalid_api_key otherwise); by default any non-empty one is. */
  apiKey?: string;
}

const ERROR_NAMES: Record<number, string> = {
  400: "invalid_idempotency_key",
  401: "missing_api_key",
  403: "invalid_api_key",
  404: "not_found",
  409: "invalid_idempotent_request",
  422: "validation_error",
  429: "rate_limit_exceeded",
  500: "internal_server_error",
};

function errorBody(status: number, message?: string, name?: string): Record<string, unknown> {
  return { statusCode: status, name: name ?? ERROR_NAMES[status] ?? "application_error", message: message ?? `sink answered ${status}` };
}

export async function startResendSink(options: ResendSinkOptions = {}): Promise<ResendSink> {
  const received: SinkRequest[] = [];
  const deliveries: DeliveredEmail[] = [];
  const byKey = new Map<string, { bodyText: string; id: string }>();
  const failures: { status: number; body: string | Record<string, unknown> | undefined }[] = [];
  let hangs = 0;
  const hanging = new Set<ServerResponse>();

  function send(res: ServerResponse, record: SinkRequest, status: number, body: string | Record<string, unknown>, headers: Record<string, string> = {}) {
    record.status = status;
    const text = typeof body === "string" ? body : JSON.stringify(body);
    res.writeHead(status, { "content-type": typeof body === "string" ? "text/plain" : "application/json", ...headers });
    res.end(text);
  }

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      const text = Buffer.concat(chunks).toString("utf8");
      let body: unknown = text;
      try {
        body = text ? JSON.parse(text) : undefined;
      } catch {
        body = text;
      }
      const path = (req.url ?? "/").split("?")[0] ?? "/";
      const record: SinkRequest = { method: req.method ?? "", path, headers: req.headers, body, status: 0, receivedAt: new Date() };
      received.push(record);

      if (req.method !== "POST" || path !== "/emails") return send(res, record, 404, errorBody(404, `no route for ${req.method} ${path}`));

      const failure = failures.shift();
      if (failure) {
        return send(res, record, failure.status, failure.body ?? errorBody(failure.status), failure.status === 429 ? { "retry-after": "1" } : {});
      }
      if (hangs > 0) {
        hangs--;
        hanging.add(res);
        return;
      }

      const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? "")?.[1];
      if (!token) return send(res, record, 401, errorBody(401, "Missing API key in the authorization header."));
      if (options.apiKey !== undefined && token !== options.apiKey) return send(res, record, 403, errorBody(403, "API key is invalid."));

      const email = body as Partial<ResendEmailBody> | undefined;
      const to = typeof email?.to === "string" ? [email.to] : email?.to;
      const missing = ["from", "subject"].filter((field) => typeof email?.[field] !== "string" || email[field] === "");
      if (!Array.isArray(to) || to.length === 0) missing.push("to");
      if (!email?.html && !email?.text) missing.push("html or text");
      if (missing.length > 0) {
        return send(res, record, 422, errorBody(422, `Missing required field: ${missing.join(", ")}.`, "missing_required_field"));
      }

      const key = req.headers["idempotency-key"] as string | undefined;
      if (key !== undefined) {
        if (key.length === 0 || key.length > 256) {
          return send(res, record, 400, errorBody(400, "Idempotency key must be between 1-256 characters."));
        }
        const seen = byKey.get(key);
        if (seen && seen.bodyText !== text) {
          return send(res, record, 409, errorBody(409, "Same idempotency key used with a different request payload."));
        }
        if (seen) return send(res, record, 200, { id: seen.id });
      }
      const id = randomUUID();
      if (key !== undefined) byKey.set(key, { bodyText: text, id });
      deliveries.push({ id, idempotencyKey: key, body: { ...(email as ResendEmailBody), to: to as string[] }, deliveredAt: new Date() });
      send(res, record, 200, { id });
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    failNext(status, body, times = 1) {
      for (let i = 0; i < times; i++) failures.push({ status, body });
    },
    hangNext(times = 1) {
      hangs += times;
    },
    delivered: () => [...deliveries],
    requests: () => [...received],
    async close() {
      for (const res of hanging) res.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
