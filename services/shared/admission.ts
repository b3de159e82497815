/**
 * What a server checks before it reads a request body: the credential and the bytes it may hold.
 *
 * connect-es reads, decompresses and parses the body before any interceptor runs, so an interceptor that refuses a
 * caller does so only after the work an attacker wanted it to do (a 100-byte brotli body inflating to tens of MB).
 * The credential is therefore checked from the headers alone. A refused request is still answered by Connect, in
 * its own protocol (Connect, gRPC, gRPC-Web) and through every interceptor (tracing, metrics, logs), but with its body
 * replaced by an empty message: the caller's bytes are never read, and the refusal travels as a context value that
 * refusalInterceptor throws.
 */
import { Transform } from "node:stream";
import { Code, ConnectError, createContextKey, createContextValues, type ContextValues, type Interceptor } from "@connectrpc/connect";
import type { UniversalServerRequest } from "@connectrpc/connect/protocol";
import { universalRequestFromNodeRequest } from "@connectrpc/connect-node";
import type { AnyRequest, AnyResponse } from "./listener.js";
import { bearerCredential, principalKey, type AuthPolicy } from "./auth.js";
import { resourceExhausted } from "./errors.js";

/** Why the request is refused before its body was read; thrown by refusalInterceptor. */
const refusalKey = createContextKey<ConnectError | undefined>(undefined, { description: "mcsv refusal before parsing" });

/** Throws the refusal decided before parsing, so that it is traced, counted and logged like any other error. */
export const refusalInterceptor: Interceptor = (next) => (req) => {
  const refusal = req.contextValues.get(refusalKey);
  if (refusal) throw refusal;
  return next(req);
};

/**
 * A budget of request bytes held at once by one process. A request reserves what it may hold before it is read
 * (or, sent in chunks of unknown total, as they arrive), and gives it back when its answer is done.
 */
export class ByteBudget {
  private held = 0;

  constructor(readonly capacity: number) {}

  tryReserve(bytes: number): boolean {
    if (this.held + bytes > this.capacity) return false;
    this.held += bytes;
    return true;
  }

  release(bytes: number): void {
    this.held = Math.max(0, this.held - bytes);
  }

  get inUse(): number {
    return this.held;
  }
}

export interface Admission {
  policy: AuthPolicy;
  /** The bytes of tenants' (and anonymous) requests. */
  budget: ByteBudget;
  /**
   * The bytes of the other services' and the operator's requests, kept apart so that a burst of public uploads
   * never refuses the job service's reports to the gateway; when unset, they share `budget`.
   */
  internalBudget?: ByteBudget;
  /**
   * Protocol services that need no credential (gRPC health for probes; server reflection unless it is put behind
   * one), and those that take any valid credential whatever it opens.
   */
  open?: ReadonlySet<string>;
  anyCredential?: ReadonlySet<string>;
}

/**
 * Authenticates the request and reserves its bytes, from its headers alone; returns the Connect request to handle:
 * the real one, or, when refused, one whose body is an empty message and whose context carries the refusal.
 */
export async function admit(
  admission: Admission,
  rpc: { service: string; method: string; readMaxBytes: number },
  req: AnyRequest,
  res: AnyResponse,
): Promise<UniversalServerRequest> {
  const values = createContextValues();
  const credential = bearerCredential(req.headers.authorization);
  try {
    if (admission.anyCredential?.has(rpc.service)) {
      const principal = await admission.policy.identify(credential);
      if (!principal) throw new ConnectError(credential ? "invalid credentials" : "missing credentials: send Authorization: Bearer <key>", Code.Unauthenticated);
      values.set(principalKey, principal);
    } else if (!admission.open?.has(rpc.service)) {
      values.set(principalKey, await admission.policy.authenticate(credential, rpc.service, rpc.method));
    }
  } catch (error) {
    return refused(req, res, values.set(refusalKey, ConnectError.from(error)));
  }
  // A compressed body may inflate to the method's limit, so it reserves that much; an identity body reserves its
  // declared length, or, sent in chunks of unknown total, each chunk as it arrives.
  const compressed = ["content-encoding", "connect-content-encoding", "grpc-encoding"].some((name) => (req.headers[name] ?? "identity") !== "identity");
  const declared = Number(req.headers["content-length"]);
  const upFront = compressed ? rpc.readMaxBytes : Number.isSafeInteger(declared) && declared >= 0 ? Math.min(declared, rpc.readMaxBytes) : 0;
  const kind = values.get(principalKey)?.kind;
  const budget = kind === "service" || kind === "operator" ? (admission.internalBudget ?? admission.budget) : admission.budget;
  if (!budget.tryReserve(upFront)) return refused(req, res, values.set(refusalKey, overBudget()));
  let held = upFront;
  res.once("close", () => budget.release(held));
  const request = universalRequestFromNodeRequest(req, res, undefined, values);
  if (compressed || upFront > 0 || request.body === null || typeof request.body !== "object" || !(Symbol.asyncIterator in request.body)) return request;
  return { ...request, body: budgetedBody(req, budget, (bytes) => (held += bytes)) };
}

/**
 * The body of a request sent in chunks of unknown total (how connect-node's HTTP/1.1 client sends every request),
 * each chunk reserved as it arrives. When the budget runs out, the body fails with resource_exhausted. Whenever the
 * body is left unread (that refusal, or Connect's own read limit), the rest is read and dropped: an HTTP/1.1
 * connection holding half a request would never serve the next one, and keep-alive clients send it there.
 */
function budgetedBody(req: AnyRequest, budget: ByteBudget, hold: (bytes: number) => void): AsyncIterable<Uint8Array> {
  const meter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      if (!budget.tryReserve(chunk.byteLength)) return callback(overBudget());
      hold(chunk.byteLength);
      callback(null, chunk);
    },
  });
  // pipe() does not pass a request's failure on: the body fails with it.
  req.once("error", (error) => meter.destroy(error));
  req.once("close", () => {
    if (!req.complete) meter.destroy(new ConnectError("the request ended before its body did", Code.Aborted));
  });
  meter.once("close", () => {
    if (req.complete) return;
    req.unpipe(meter);
    discardRest(req);
  });
  req.pipe(meter);
  return meter;
}

/** Reads and drops what is left of a request's body; one that goes on too long loses its connection. */
function discardRest(req: AnyRequest): void {
  let discarded = 0;
  req.on("data", (chunk: Buffer) => {
    discarded += chunk.byteLength;
    if (discarded > MAX_DISCARDED_BYTES) req.destroy();
  });
  req.resume();
}

function overBudget(): ConnectError {
  return resourceExhausted("the server holds too many request bytes at once", 1);
}

const CONTENT_CODINGS = ["content-encoding", "connect-content-encoding", "grpc-encoding", "content-length"];
/** How much of a refused body is read and dropped, so that a client still sending gets its answer; beyond, reset. */
const MAX_DISCARDED_BYTES = 1024 * 1024;

function refused(req: AnyRequest, res: AnyResponse, values: ContextValues): UniversalServerRequest {
  // The body is dropped as it arrives, never held or inflated. Closing at once would fail a client that is still
  // sending (EPIPE instead of the answer).
  discardRest(req);
  const request = universalRequestFromNodeRequest(req, res, undefined, values);
  const header = new Headers(request.header);
  for (const name of CONTENT_CODINGS) header.delete(name);
  return { ...request, header, url: request.method === "GET" ? emptyGetUrl(request.url) : request.url, body: once(emptyMessage(header.get("content-type") ?? "")) };
}

/** An empty message in the framing and encoding the content type names. */
function emptyMessage(contentType: string): Uint8Array {
  const type = contentType.split(";", 1)[0]!.trim().toLowerCase();
  const json = /\+json$/.test(type) || type === "application/json";
  const message = json ? new TextEncoder().encode("{}") : new Uint8Array(0);
  if (!/^application\/(connect|grpc|grpc-web)(\+|$)/.test(type) && !type.startsWith("application/grpc-web-text")) return message;
  const envelope = new Uint8Array(5 + message.length);
  new DataView(envelope.buffer).setUint32(1, message.length);
  envelope.set(message, 5);
  return type.startsWith("application/grpc-web-text") ? new TextEncoder().encode(Buffer.from(envelope).toString("base64")) : envelope;
}

/** A Connect GET carries its message in the query: keep only an empty one. */
function emptyGetUrl(url: string): string {
  const parsed = new URL(url);
  const proto = parsed.searchParams.get("encoding") === "proto";
  parsed.search = "";
  parsed.searchParams.set("connect", "v1");
  parsed.searchParams.set("encoding", proto ? "proto" : "json");
  if (proto) parsed.searchParams.set("base64", "1");
  parsed.searchParams.set("message", proto ? "" : "{}");
  return parsed.toString();
}

async function* once(bytes: Uint8Array): AsyncIterable<Uint8Array> {
  yield bytes;
}

/** The operator's credential, from `Authorization: Bearer …` or HTTP Basic (any user name, the credential as password). */
export function presentedCredential(header: string | undefined): string | undefined {
  const basic = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header ?? "");
  if (!basic) return bearerCredential(header);
  const decoded = Buffer.from(basic[1]!, "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  return colon < 0 ? undefined : decoded.slice(colon + 1);
}
