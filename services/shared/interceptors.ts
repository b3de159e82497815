/** Connect interceptors shared by every server and client: RED metrics and log fields per RPC. */
import { Code, ConnectError, type Interceptor, type StreamResponse, type UnaryResponse } from "@connectrpc/connect";
import { connectCodeName } from "./errors.js";
import { withLogFields } from "./logger.js";
import { rpcDuration, rpcInFlight, startDurationTimer } from "./metrics.js";

function codeOf(error: unknown): string {
  return error === undefined ? "ok" : connectCodeName(ConnectError.from(error).code);
}

/**
 * Calls `next` and then `finish` once the RPC is over: at once for a unary response, or for a stream when its last
 * message has gone, it failed, or it was abandoned (so that nothing measured ever leaks).
 */
export async function untilFinished<R extends StreamResponse | UnaryResponse>(run: () => Promise<R>, finish: (error?: unknown) => void): Promise<R> {
  let res: R;
  try {
    res = await run();
  } catch (error) {
    finish(error);
    throw error;
  }
  if (!res.stream) {
    finish();
    return res;
  }
  const messages = res.message;
  return {
    ...res,
    message: (async function* () {
      let failure: unknown;
      try {
        yield* messages;
      } catch (error) {
        failure = error;
        throw error;
      } finally {
        finish(failure);
      }
    })(),
  };
}

/**
 * Records duration, outcome and in-flight count; for a server stream, until the last message is sent. Runs inside
 * the tracing interceptor, so the duration's exemplar is the RPC's own span.
 */
export function metricsInterceptor(side: "server" | "client"): Interceptor {
  return (next) => (req) => {
    const labels = { side, rpc_service: req.service.typeName, rpc_method: req.method.name };
    rpcInFlight.inc(labels);
    const stop = startDurationTimer(rpcDuration, labels);
    return untilFinished(
      () => next(req),
      (error) => {
        rpcInFlight.dec(labels);
        stop({ code: codeOf(error) });
      },
    );
  };
}

/** Adds the procedure to every log line written while a server handles the RPC. */
export const logFieldsInterceptor: Interceptor = (next) => (req) =>
  withLogFields({ rpc: `${req.service.typeName}/${req.method.name}` }, () => next(req));

/**
 * Says whether an error means that a dependency could not be reached (a restart, a fail-over), and if so what the
 * caller is told; undefined for any other error.
 */
export type DependencyErrors = (error: unknown) => string | undefined;

/**
 * Answers unavailable, instead of internal, when a handler failed because a dependency the service names could not
 * be reached: the request may be retried, and the dependency's address stays out of the answer (the cause stays
 * for the logs and the span).
 */
export function dependencyErrorsInterceptor(unreachable: DependencyErrors): Interceptor {
  const mapped = (error: unknown): unknown => {
    const message = error instanceof ConnectError ? undefined : unreachable(error);
    return message === undefined ? error : new ConnectError(message, Code.Unavailable, undefined, undefined, error);
  };
  return (next) => async (req) => {
    let res: StreamResponse | UnaryResponse;
    try {
      res = await next(req);
    } catch (error) {
      throw mapped(error);
    }
    if (!res.stream) return res;
    const messages = res.message;
    return {
      ...res,
      message: (async function* () {
        try {
          yield* messages;
        } catch (error) {
          throw mapped(error);
        }
      })(),
    };
  };
}
