/** Connect interceptors shared by every server and client: RED metrics and log fields per RPC. */
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { withLogFields } from "./logger.js";
import { rpcDuration, rpcInFlight } from "./metrics.js";

function codeOf(error: unknown): string {
  if (error === undefined) return "ok";
  return Code[ConnectError.from(error).code]
    .replace(/([a-z])([A-Z])/g, "$1_$2")
    .toLowerCase();
}

/** Records duration, outcome and in-flight count; for a server stream, until the last message is sent. */
export function metricsInterceptor(side: "server" | "client"): Interceptor {
  return (next) => async (req) => {
    const labels = { side, rpc_service: req.service.typeName, rpc_method: req.method.name };
    rpcInFlight.inc(labels);
    const stop = rpcDuration.startTimer(labels);
    const finish = (error?: unknown) => {
      rpcInFlight.dec(labels);
      stop({ code: codeOf(error) });
    };
    try {
      const res = await next(req);
      if (!res.stream) {
        finish();
        return res;
      }
      const message = res.message;
      return {
        ...res,
        message: (async function* () {
          let failure: unknown;
          try {
            yield* message;
          } catch (error) {
            failure = error;
            throw error;
          } finally {
            // Also runs when the stream is abandoned, so the in-flight gauge never leaks.
            finish(failure);
          }
        })(),
      };
    } catch (error) {
      finish(error);
      throw error;
    }
  };
}

/** Adds the procedure to every log line written while a server handles the RPC. */
export const logFieldsInterceptor: Interceptor = (next) => (req) =>
  withLogFields({ rpc: `${req.service.typeName}/${req.method.name}` }, () => next(req));
