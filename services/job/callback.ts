/**
 * POSTs a workflow event to a client's callback URL (already checked against the allowlist by the gateway).
 * Redirects are not followed, so that an allowed host cannot bounce the request elsewhere. A 2xx answer is
 * success; other 4xx and 3xx answers are permanent; 408, 429, 5xx, timeouts and network errors are retried.
 */
import type { JsonValue } from "@bufbuild/protobuf";
import { describeError } from "../shared/errors.js";
import { SERVICE_VERSION } from "../shared/topology.js";
import { PermanentJobError } from "./tasks/context.js";

export interface CallbackOptions {
  /** Sent as X-Mcsv-Event, e.g. pdf_ready. */
  event: string;
  /** The same for every retry of one delivery, so that the receiver can drop repeats. */
  idempotencyKey: string;
  timeoutMs: number;
  signal?: AbortSignal | undefined;
}

export async function postCallback(url: string, body: JsonValue, options: CallbackOptions): Promise<void> {
  // Only the origin appears in errors and logs: a callback URL may carry a secret in its path or query.
  const origin = new URL(url).origin;
  const timeout = AbortSignal.timeout(options.timeoutMs);
  let res: Response;
  try {
    res = await fetch(url, {
      method: "POST",
      redirect: "manual",
      headers: {
        "content-type": "application/json",
        "user-agent": `mcsv-job/${SERVICE_VERSION}`,
        "x-mcsv-event": options.event,
        "idempotency-key": options.idempotencyKey,
      },
      body: JSON.stringify(body),
      signal: options.signal ? AbortSignal.any([options.signal, timeout]) : timeout,
    });
  } catch (error) {
    const reason = timeout.aborted ? `timed out after ${options.timeoutMs} ms` : describeError((error as { cause?: unknown }).cause ?? error);
    throw new Error(`callback to ${origin} failed: ${reason}`);
  }
  await res.body?.cancel().catch(() => undefined);
  if (res.status >= 200 && res.status < 300) return;
  const answer = `callback to ${origin} answered ${res.status}`;
  if (res.status === 408 || res.status === 429 || res.status >= 500) throw new Error(answer);
  if (res.status >= 300 && res.status < 400) throw new PermanentJobError(`${answer} (redirects are not followed)`);
  throw new PermanentJobError(answer);
}
