/**
 * POSTs a workflow event to a client's callback URL. The gateway checked the URL when it accepted it, but by now DNS
 * may answer otherwise (rebinding: a public address then, 127.0.0.1 or 169.254.169.254 now) and the allowlist may
 * have changed. So the URL is checked again with the same policy right before sending, and the connection goes only
 * to the addresses that check returned: the socket's lookup answers from them, and nothing resolves the host a second
 * time between check and connect. https keeps verifying the certificate against the host name.
 *
 * Redirects are not followed, so that an allowed host cannot bounce the request elsewhere. A 2xx answer is success;
 * a refused URL and other 3xx and 4xx answers are permanent; 408, 429, 5xx, timeouts, DNS and network errors are
 * retried. Only the URL's origin appears in errors: a callback URL may carry a secret in its path or query.
 *
 * Every POST is signed (Standard Webhooks, webhook-signing.ts): `webhook-id` is the delivery's idempotency key, so
 * a receiver can both verify the sender and drop repeats; the timestamp is this attempt's.
 */
import type { LookupAddress } from "node:dns";
import { request as httpRequest, type OutgoingHttpHeaders, type RequestOptions } from "node:http";
import { request as httpsRequest, type RequestOptions as HttpsRequestOptions } from "node:https";
import { isIP, type LookupFunction } from "node:net";
import { SpanKind } from "@opentelemetry/api";
import type { JsonValue } from "@bufbuild/protobuf";
import { normaliseHost, type AcceptedCallback, type CallbackPolicy, type CallbackRefusal } from "../shared/callback-policy.js";
import { describeError } from "../shared/errors.js";
import { SERVICE_VERSION } from "../shared/topology.js";
import { withSpan } from "../shared/tracing.js";
import { PermanentJobError } from "./tasks/context.js";
import { signatureHeaders } from "./webhook-signing.js";

export interface CallbackOptions {
  /** Sent as X-Mcsv-Event, e.g. pdf_ready. */
  event: string;
  /** The same for every retry of one delivery, so that the receiver can drop repeats; also the webhook-id. */
  idempotencyKey: string;
  /** The tenant's signing secrets (whsec_…), current first: the POST carries one signature by each. */
  signingSecrets: readonly string[];
  timeoutMs: number;
  signal?: AbortSignal | undefined;
  /** Certificate authorities trusted for https instead of the system's (tests; in production use NODE_EXTRA_CA_CERTS). */
  ca?: string | Buffer | undefined;
}

/** The URL is not (or no longer) one the policy allows: no retry can change that. */
export class CallbackRefusedError extends PermanentJobError {
  override name = "CallbackRefusedError";

  constructor(
    readonly origin: string,
    readonly refusal: CallbackRefusal,
    problem: string,
  ) {
    super(`callback to ${origin} refused: ${problem}`);
  }
}

export async function postCallback(policy: CallbackPolicy, url: string, body: JsonValue, options: CallbackOptions): Promise<void> {
  let origin: string;
  try {
    origin = new URL(url).origin;
  } catch {
    throw new CallbackRefusedError("(invalid URL)", "invalid", "must be an absolute http(s) URL");
  }
  const timeout = AbortSignal.timeout(options.timeoutMs);
  const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;

  const checked = await policy.check(url);
  if ("problem" in checked) {
    // A DNS failure may pass; a host that is not allowed, or resolves to an internal address, is refused for good.
    if (checked.refusal === "unresolvable") throw new Error(`callback to ${origin} failed: ${checked.problem}`);
    throw new CallbackRefusedError(origin, checked.refusal, checked.problem);
  }

  const target = new URL(checked.url);
  const payload = JSON.stringify(body);
  const headers: OutgoingHttpHeaders = {
    "content-type": "application/json",
    "user-agent": `mcsv-job/${SERVICE_VERSION}`,
    "x-mcsv-event": options.event,
    "idempotency-key": options.idempotencyKey,
    ...signatureHeaders(options.signingSecrets, options.idempotencyKey, new Date(), payload),
  };
  const attributes = {
    "http.request.method": "POST",
    "server.address": checked.host,
    "server.port": Number(target.port || (target.protocol === "https:" ? 443 : 80)),
    "url.scheme": target.protocol.slice(0, -1),
  };
  const status = await withSpan(
    "POST callback",
    attributes,
    async (span) => {
      try {
        const answer = await send(checked, payload, headers, signal, options.ca);
        span.setAttribute("http.response.status_code", answer);
        return answer;
      } catch (error) {
        const reason = timeout.aborted ? `timed out after ${options.timeoutMs} ms` : describeError(error);
        throw new Error(`callback to ${origin} failed: ${reason}`);
      }
    },
    { kind: SpanKind.CLIENT },
  );
  if (status >= 200 && status < 300) return;
  const answer = `callback to ${origin} answered ${status}`;
  if (status === 408 || status === 429 || status >= 500) throw new Error(answer);
  if (status >= 300 && status < 400) throw new PermanentJobError(`${answer} (redirects are not followed)`);
  throw new PermanentJobError(answer);
}

/** One POST over a fresh connection to one of the checked addresses; resolves with the status code. */
function send(checked: AcceptedCallback, payload: string, headers: OutgoingHttpHeaders, signal: AbortSignal, ca: string | Buffer | undefined): Promise<number> {
  const url = new URL(checked.url);
  const hostname = url.hostname.replace(/^\[(.*)\]$/, "$1");
  const https = url.protocol === "https:";
  const options: RequestOptions & HttpsRequestOptions = {
    method: "POST",
    hostname,
    ...(url.port ? { port: Number(url.port) } : {}),
    path: `${url.pathname}${url.search}`,
    headers: { ...headers, "content-length": Buffer.byteLength(payload) },
    lookup: pinnedLookup(checked),
    // No pooled socket: one kept alive from an earlier delivery was opened under an earlier check.
    agent: false,
    signal,
    ...(https ? { rejectUnauthorized: true, ...(isIP(hostname) ? {} : { servername: hostname }), ...(ca ? { ca } : {}) } : {}),
  };
  return new Promise<number>((resolve, reject) => {
    const req = (https ? httpsRequest : httpRequest)(options, (res) => {
      // The status is the answer; the body is read and dropped. An abort after this point only ends the stream.
      res.on("error", () => undefined);
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on("error", reject);
    req.end(payload);
  });
}

/**
 * A lookup that answers only from the addresses the policy checked, so that the connection cannot go anywhere the
 * check did not see. Node calls it with `all: true` when it tries several addresses (autoSelectFamily).
 */
export function pinnedLookup(checked: Pick<AcceptedCallback, "host" | "addresses">): LookupFunction {
  return (hostname, options, callback) => {
    const family = options.family === "IPv4" || options.family === 4 ? 4 : options.family === "IPv6" || options.family === 6 ? 6 : 0;
    const answers: LookupAddress[] = checked.addresses
      .map((address) => ({ address, family: isIP(address) }))
      .filter((answer) => answer.family !== 0 && (family === 0 || answer.family === family));
    const first = answers[0];
    if (normaliseHost(hostname) !== checked.host || !first) {
      const error: NodeJS.ErrnoException = new Error(`no checked address for ${hostname}`);
      error.code = "ENOTFOUND";
      callback(error, options.all ? [] : "", 0);
      return;
    }
    if (options.all) callback(null, answers);
    else callback(null, first.address, first.family);
  };
}
