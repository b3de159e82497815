/**
 * Trace ids: every mcsv response carries W3C Trace Context Level 2's `traceresponse` header,
 * `00-<32 hex trace id>-<16 hex span id>-<flags>` (set by services/shared/tracing.ts), on errors too (Connect puts an
 * error's headers in its metadata). An interceptor reads it, reports it to whoever asked through the call's context
 * values, and with --verbose prints one line per RPC to stderr.
 */
import { ConnectError, createContextKey, type Interceptor } from "@connectrpc/connect";
import { connectCodeName } from "../services/shared/errors.js";

const TRACE_RESPONSE = "traceresponse";
const TRACE_RESPONSE_FORMAT = /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$/;

/** The trace id of a `traceresponse` value; undefined when there is none or it is malformed (or all zeros). */
export function traceIdOf(header: string | null | undefined): string | undefined {
  const id = TRACE_RESPONSE_FORMAT.exec(header?.trim().toLowerCase() ?? "")?.[1];
  return id && !/^0+$/.test(id) ? id : undefined;
}

/** Receives the trace id of the call it is set on (undefined: the response named none). */
export const traceReceiver = createContextKey<((traceId: string | undefined) => void) | undefined>(undefined, { description: "mcsv trace id receiver" });

export type Log = (line: string) => void;

/** Reads the trace id of every response; `log` (--verbose) gets one line per RPC. */
export function traceInterceptor(log: Log | undefined): Interceptor {
  return (next) => async (req) => {
    const started = performance.now();
    const method = `${req.service.typeName.replace(/^mcsv\.v1\./, "")}/${req.method.name}`;
    const report = (header: string | null, outcome: string) => {
      const traceId = traceIdOf(header);
      req.contextValues.get(traceReceiver)?.(traceId);
      log?.(`rpc ${method} ${outcome} ${Math.round(performance.now() - started)} ms trace=${traceId ?? "none"}`);
    };
    try {
      const res = await next(req);
      report(res.header.get(TRACE_RESPONSE), res.stream ? "stream open" : "ok");
      return res;
    } catch (error) {
      const connectError = ConnectError.from(error);
      report(connectError.metadata.get(TRACE_RESPONSE), connectCodeName(connectError.code));
      throw error;
    }
  };
}
