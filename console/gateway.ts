/**
 * The gateway's UserService, called from the page (same origin) over Connect with @mcsv/sdk's types. Two
 * interceptors: the API key as a bearer token, and the trace id of each answer, read from its `traceresponse` header.
 */
import { Code, ConnectError, createClient, createContextKey, createContextValues, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { UserService, ValidationErrorSchema } from "@mcsv/sdk";
import { TRACE_RESPONSE, traceIdOf } from "./trace.js";

export type Gateway = Client<typeof UserService>;

/** Where a call's trace id lands: pass `traced()` as the call's contextValues, then read `traceId` of it. */
const traceIdKey = createContextKey<{ traceId?: string }>({}, { description: "the trace id of the call" });

export function traced() {
  const holder: { traceId?: string } = {};
  const contextValues = createContextValues().set(traceIdKey, holder);
  return { contextValues, holder };
}

/** Records the trace id of the answer, a refusal included (an error's metadata carries its headers). */
const traceReader: Interceptor = (next) => async (req) => {
  const holder = req.contextValues.get(traceIdKey);
  try {
    const res = await next(req);
    holder.traceId = traceIdOf(res.header.get(TRACE_RESPONSE));
    return res;
  } catch (error) {
    if (error instanceof ConnectError) holder.traceId = traceIdOf(error.metadata.get(TRACE_RESPONSE));
    throw error;
  }
};

const bearer =
  (apiKey: string): Interceptor =>
  (next) =>
  (req) => {
    req.header.set("authorization", `Bearer ${apiKey}`);
    return next(req);
  };

export function createGateway(apiKey: string): Gateway {
  // Binary protobuf: images travel as bytes, not base64 in JSON.
  const transport = createConnectTransport({ baseUrl: location.origin, useBinaryFormat: true, interceptors: [bearer(apiKey), traceReader] });
  return createClient(UserService, transport);
}

export function isAborted(error: unknown): boolean {
  return error instanceof DOMException ? error.name === "AbortError" : ConnectError.from(error).code === Code.Canceled;
}

export function isKeyRefused(error: unknown): boolean {
  const code = ConnectError.from(error).code;
  return code === Code.Unauthenticated || code === Code.PermissionDenied;
}

/** One line a person can act on, for any failed call. */
export function describeFailure(error: unknown): string {
  const failure = ConnectError.from(error);
  if (isKeyRefused(failure)) return "the API key was refused";
  const [validation] = failure.findDetails(ValidationErrorSchema);
  if (validation && validation.violations.length > 0) return validation.violations.map((v) => `${v.field} ${v.description}`).join("; ");
  if (failure.code === Code.Unavailable) return `the gateway is unavailable (${failure.rawMessage}); try again`;
  return failure.rawMessage || Code[failure.code];
}
