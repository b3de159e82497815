/**
 * Downloads the original image through its presigned URL, with a size limit and a timeout. The caller checked that
 * the URL points at the service's own bucket; redirects are not followed, so it cannot lead anywhere else.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { SpanKind, type Attributes, type Span } from "@opentelemetry/api";
import { withSpan } from "../shared/tracing.js";

export interface FetchSourceOptions {
  maxBytes: number;
  timeoutMs: number;
  /** Aborts the download (the RPC's deadline or cancellation). */
  signal?: AbortSignal | undefined;
}

const MiB = 1024 * 1024;
const formatBytes = (bytes: number) => (bytes >= MiB ? `${(bytes / MiB).toFixed(bytes % MiB === 0 ? 0 : 1)} MiB` : `${bytes} bytes`);

function tooLarge(maxBytes: number): ConnectError {
  return new ConnectError(`the image is larger than the limit of ${formatBytes(maxBytes)}`, Code.InvalidArgument);
}

/** Maps an S3 answer other than 200 to a Connect error: 403/404 are permanent, 5xx worth a retry. */
function statusError(status: number): ConnectError {
  if (status === 404) return new ConnectError("the image no longer exists in storage", Code.NotFound);
  if (status === 403) return new ConnectError("the image URL was refused by storage (expired or not valid)", Code.FailedPrecondition);
  if (status >= 500 || status === 429) return new ConnectError(`storage answered ${status} to the image download`, Code.Unavailable);
  return new ConnectError(`storage answered ${status} to the image download`, Code.FailedPrecondition);
}

/**
 * Downloads the image in an HTTP CLIENT span. The span names the host and path only: the query string of a
 * presigned URL is its credential.
 */
export async function fetchSource(url: string, options: FetchSourceOptions): Promise<Uint8Array> {
  const attributes: Attributes = { "http.request.method": "GET" };
  if (URL.canParse(url)) {
    const { protocol, hostname, port, pathname } = new URL(url);
    Object.assign(attributes, {
      "server.address": hostname,
      "server.port": Number(port || (protocol === "https:" ? 443 : 80)),
      "url.scheme": protocol.replace(/:$/, ""),
      "url.path": pathname,
    });
  }
  return withSpan("GET", attributes, (span) => download(url, options, span), { kind: SpanKind.CLIENT });
}

async function download(url: string, options: FetchSourceOptions, span: Span): Promise<Uint8Array> {
  const timeout = AbortSignal.timeout(options.timeoutMs);
  const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
  const failed = (error: unknown): ConnectError => {
    if (options.signal?.aborted) return ConnectError.from(options.signal.reason);
    if (timeout.aborted) return new ConnectError(`the image download took longer than ${options.timeoutMs} ms`, Code.DeadlineExceeded);
    if (error instanceof ConnectError) return error;
    return new ConnectError(`the image download failed: ${describeCause(error)}`, Code.Unavailable);
  };

  let response: Response;
  try {
    // A redirect is answered, not followed: it could lead outside the bucket.
    response = await fetch(url, { signal, redirect: "manual" });
  } catch (error) {
    throw failed(error);
  }
  span.setAttribute("http.response.status_code", response.status);
  if (response.status !== 200) {
    await response.body?.cancel().catch(() => undefined);
    throw statusError(response.status);
  }
  // fetch decodes a Content-Encoding, after which Content-Length no longer counts the bytes read.
  const declared = response.headers.has("content-encoding") ? Number.NaN : Number(response.headers.get("content-length") ?? Number.NaN);
  if (declared > options.maxBytes) {
    await response.body?.cancel().catch(() => undefined);
    throw tooLarge(options.maxBytes);
  }
  if (!response.body) return new Uint8Array();

  // Collect the chunks and copy them once at the end; give up the moment the limit is passed.
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = response.body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > options.maxBytes) throw tooLarge(options.maxBytes);
      chunks.push(value);
    }
  } catch (error) {
    await reader.cancel().catch(() => undefined);
    throw failed(error);
  }
  span.setAttribute("http.response.body.size", size);
  if (Number.isFinite(declared) && declared !== size) {
    throw new ConnectError(`the image download ended after ${size} of ${declared} bytes`, Code.Unavailable);
  }
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size);
}

/** undici hides the socket error in `cause`. */
function describeCause(error: unknown): string {
  const cause = (error as { cause?: unknown } | undefined)?.cause;
  const inner = cause instanceof Error ? `: ${(cause as NodeJS.ErrnoException).code ?? cause.message}` : "";
  return `${error instanceof Error ? error.message : String(error)}${inner}`;
}
