/**
 * OpenTelemetry for Connect (no Connect library for TypeScript ships it): one SERVER or CLIENT span per RPC, named
 * `mcsv.v1.ImageService/ConvertImage`, with the RPC semantic-convention attributes, W3C trace context and baggage
 * carried in the request headers, server streams covered until their last message. Also `withSpan` for the
 * internal steps (sharp, ImageMagick, the presigned fetch, the Resend call).
 */
import { ConnectError, type Interceptor } from "@connectrpc/connect";
import {
  context,
  isSpanContextValid,
  propagation,
  type Context,
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes,
  type Span,
  type TextMapGetter,
  type TextMapSetter,
} from "@opentelemetry/api";
import { connectCodeName } from "./errors.js";
import { untilFinished } from "./interceptors.js";
import { SERVICE_VERSION } from "./topology.js";

const tracer = trace.getTracer("mcsv", SERVICE_VERSION);

const headerGetter: TextMapGetter<Headers> = {
  keys: (headers) => [...headers.keys()],
  get: (headers, key) => headers.get(key) ?? undefined,
};
const headerSetter: TextMapSetter<Headers> = {
  set: (headers, key, value) => headers.set(key, value),
};


function rpcAttributes(service: string, method: string, url: string): Attributes {
  const { hostname, port, protocol } = new URL(url, "http://localhost");
  return {
    "rpc.system": "connect_rpc",
    "rpc.service": service,
    "rpc.method": method,
    "server.address": hostname,
    "server.port": Number(port || (protocol === "https:" ? 443 : 80)),
  };
}

function endWithError(span: Span, error: unknown): void {
  const connectError = ConnectError.from(error);
  span.setAttribute("rpc.connect_rpc.error_code", connectCodeName(connectError.code));
  span.recordException(connectError);
  span.setStatus({ code: SpanStatusCode.ERROR, message: connectError.rawMessage });
  span.end();
}

/**
 * The response header that names the trace of a call, so that a caller can find it (Tempo's search, the CLI's
 * --verbose, the console): W3C Trace Context Level 2's `traceresponse`, `00-<trace id>-<span id>-<flags>`.
 */
export const TRACE_RESPONSE = "traceresponse";

/** The server span's `traceresponse` value; none without a valid trace (no tracer registered). */
function traceResponse(span: Span): string | undefined {
  const ctx = span.spanContext();
  if (!isSpanContextValid(ctx)) return undefined;
  return `00-${ctx.traceId}-${ctx.spanId}-${(ctx.traceFlags & 0xff).toString(16).padStart(2, "0")}`;
}

function traced(kind: SpanKind): Interceptor {
  return (next) => (req) => {
    const name = `${req.service.typeName}/${req.method.name}`;
    const parent = kind === SpanKind.SERVER ? propagation.extract(context.active(), req.header, headerGetter) : context.active();
    const span = tracer.startSpan(name, { kind, attributes: rpcAttributes(req.service.typeName, req.method.name, req.url) }, parent);
    const active = trace.setSpan(parent, span);
    if (kind === SpanKind.CLIENT) propagation.inject(active, req.header, headerSetter);
    const answered = kind === SpanKind.SERVER ? traceResponse(span) : undefined;
    return untilFinished(
      async () => {
        let res;
        try {
          res = await context.with(active, () => next(req));
        } catch (error) {
          // An error's metadata travels as its response headers (trailers in gRPC).
          if (answered && error instanceof ConnectError) error.metadata.set(TRACE_RESPONSE, answered);
          throw error;
        }
        if (answered) res.header.set(TRACE_RESPONSE, answered);
        // A server stream's handler runs as its messages are pulled, after next() returned: pull them in the span.
        return res.stream ? { ...res, message: inContext(active, res.message) } : res;
      },
      (error) => {
        if (error === undefined) span.end();
        else endWithError(span, error);
      },
    );
  };
}

/** `messages`, each pulled inside `ctx`. */
function inContext<T>(ctx: Context, messages: AsyncIterable<T>): AsyncIterable<T> {
  return {
    [Symbol.asyncIterator]() {
      const iterator = messages[Symbol.asyncIterator]();
      return {
        next: () => context.with(ctx, () => iterator.next()),
        return: (value?: unknown) => context.with(ctx, () => iterator.return?.(value) ?? Promise.resolve({ done: true as const, value: undefined })),
        throw: (error?: unknown) => context.with(ctx, () => iterator.throw?.(error) ?? Promise.reject(error)),
      };
    },
  };
}

export const serverTracingInterceptor = traced(SpanKind.SERVER);
export const clientTracingInterceptor = traced(SpanKind.CLIENT);

/**
 * Runs `fn` in a child span of the active one (INTERNAL unless `kind` says otherwise, e.g. CLIENT for a call to
 * something outside the process); a thrown error marks the span failed and is rethrown.
 */
export async function withSpan<T>(name: string, attributes: Attributes, fn: (span: Span) => Promise<T>, options: { kind?: SpanKind } = {}): Promise<T> {
  return tracer.startActiveSpan(name, { attributes, kind: options.kind ?? SpanKind.INTERNAL }, async (span) => {
    try {
      const result = await fn(span);
      span.end();
      return result;
    } catch (error) {
      span.recordException(error instanceof Error ? error : String(error));
      span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
      span.end();
      throw error;
    }
  });
}

/** The active trace context as a plain object (for a job's payload). */
export function injectTraceContext(): Record<string, string> {
  const carrier: Record<string, string> = {};
  propagation.inject(context.active(), carrier);
  return carrier;
}

/** Runs `fn` inside the trace context stored by `injectTraceContext`. */
export function withTraceContext<T>(carrier: Record<string, string> | undefined, fn: () => T): T {
  if (!carrier) return fn();
  return context.with(propagation.extract(context.active(), carrier), fn);
}

/**
 * Exports the spans the SDK still holds in its batch (at most `timeoutMs`); a no-op without the SDK. Called before
 * the process exits: `process.exit` skips the SDK's own shutdown, and the batch may hold seconds of spans.
 */
export async function flushSpans(timeoutMs = 5_000): Promise<void> {
  const provider = trace.getTracerProvider() as { getDelegate?: () => unknown; forceFlush?: () => Promise<void> };
  const sdk = (provider.getDelegate?.() ?? provider) as { forceFlush?: () => Promise<void> };
  if (typeof sdk.forceFlush !== "function") return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([sdk.forceFlush().catch(() => undefined), new Promise((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
  clearTimeout(timer);
}
