/**
 * Expected failures as one line that says what to do: Connect errors, unreachable services, missing files. Anything
 * else is a bug and keeps its stack (with --verbose).
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { connectCodeName } from "../services/shared/errors.js";

/** A failure whose message is already what the user should read. */
export class CliError extends Error {}

/** What a failing call was talking to, so that the message can say what to check. */
export interface Endpoint {
  url: string;
  /** How to give the credential this endpoint takes, e.g. "pass --api-key or set MCSV_API_KEY". */
  credentialHint: string;
}

const NETWORK_CODES = new Set(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH", "ENETUNREACH", "ECONNRESET", "ETIMEDOUT", "UND_ERR_CONNECT_TIMEOUT"]);

/** The system error code (ECONNREFUSED, …) somewhere in an error's cause chain, if any. */
function networkCode(error: unknown): string | undefined {
  for (let e: unknown = error, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code && NETWORK_CODES.has(code)) return code;
    // AggregateError (happy eyeballs tried IPv6 and IPv4): any of them.
    if (e instanceof AggregateError) {
      const inner = e.errors.map(networkCode).find(Boolean);
      if (inner) return inner;
    }
  }
  return undefined;
}

/** One line for an expected failure; undefined for what is not one (a bug). */
export function describeFailure(error: unknown, endpoint?: Endpoint): string | undefined {
  if (error instanceof CliError) return error.message;
  const network = networkCode(error);
  if (network && endpoint) return `cannot reach ${endpoint.url} (${network}): is \`npm start\` running?`;
  if (error instanceof ConnectError) {
    switch (error.code) {
      case Code.Unauthenticated:
        return `unauthenticated (${error.rawMessage.split(":")[0]}): ${endpoint ? endpoint.credentialHint : "check the credential"}`;
      case Code.PermissionDenied:
        return `permission denied: ${error.rawMessage}${endpoint ? ` (${endpoint.credentialHint} with a credential that may call it)` : ""}`;
      case Code.ResourceExhausted: {
        const retry = error.metadata.get("retry-after");
        return `resource_exhausted: ${error.rawMessage}${retry && !error.rawMessage.includes("retry in") ? `; retry in ${retry} s` : ""}`;
      }
      case Code.Unimplemented:
        return `unimplemented: ${error.rawMessage}${endpoint ? ` (is ${endpoint.url} the right service?)` : ""}`;
      default:
        return `${connectCodeName(error.code)}: ${error.rawMessage}`;
    }
  }
  if (network) return `network error (${network}): ${error instanceof Error ? error.message : String(error)}`;
  const fsCode = (error as NodeJS.ErrnoException | undefined)?.code;
  if (fsCode === "ENOENT" || fsCode === "EACCES" || fsCode === "EISDIR" || fsCode === "EEXIST") {
    return (error as Error).message;
  }
  return undefined;
}
