/**
 * Authentication, as Connect interceptors. The gateway's public RPCs take `Authorization: Bearer <API key>` (keys
 * from MCSV_API_KEYS); every internal RPC (all of job, email, image and client, and the gateway's
 * NotifyImageConverted) takes the internal service credential MCSV_INTERNAL_TOKEN, which createServiceClient sends.
 * Credentials are compared in constant time and never logged. Health, readiness and metrics are plain HTTP routes,
 * outside these interceptors, and stay open.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { listFromEnv } from "./config.js";

const SECRET_MIN_LENGTH = 24;

export const apiKeysEnv = {
  MCSV_API_KEYS: listFromEnv.refine(
    (keys) => keys.length > 0 && keys.every((key) => key.length >= SECRET_MIN_LENGTH),
    `must list at least one key, comma-separated, each at least ${SECRET_MIN_LENGTH} characters`,
  ),
};

const digest = (value: string) => createHash("sha256").update(value).digest();

/**
 * Accepted secrets, as the SHA-256 digests that are compared: digests have one length whatever the secret's, so
 * timingSafeEqual can compare them, and they are computed once rather than on every RPC.
 */
export class SecretSet {
  private readonly digests: readonly Buffer[];

  constructor(secrets: readonly string[]) {
    this.digests = secrets.map(digest);
  }

  /** Whether `presented` is one of the secrets, taking the same time whichever matches (or none). */
  matches(presented: string): boolean {
    const candidate = digest(presented);
    let match = false;
    for (const accepted of this.digests) match = timingSafeEqual(candidate, accepted) || match;
    return match;
  }
}

function bearer(header: string | null): string | undefined {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header ?? "");
  return match?.[1];
}

export interface AuthPolicy {
  /** Secrets accepted for a method: API keys or the internal token. */
  secretsFor(serviceTypeName: string, methodName: string): SecretSet;
}

/** Refuses, with unauthenticated, any RPC that does not carry a credential the policy accepts for it. */
export function authInterceptor(policy: AuthPolicy): Interceptor {
  return (next) => (req) => {
    const token = bearer(req.header.get("authorization"));
    if (token === undefined) throw new ConnectError("missing credentials: send Authorization: Bearer <key>", Code.Unauthenticated);
    if (!policy.secretsFor(req.service.typeName, req.method.name).matches(token)) {
      throw new ConnectError("invalid credentials", Code.Unauthenticated);
    }
    return next(req);
  };
}

/** Every RPC of the service is internal. */
export function internalOnly(internalToken: string): AuthPolicy {
  const internal = new SecretSet([internalToken]);
  return { secretsFor: () => internal };
}

/** Public RPCs take API keys; the named internal methods take the internal token. */
export function publicWithInternal(apiKeys: readonly string[], internalToken: string, internalMethods: readonly string[]): AuthPolicy {
  const internal = new SecretSet([internalToken]);
  const keys = new SecretSet(apiKeys);
  return { secretsFor: (_service, method) => (internalMethods.includes(method) ? internal : keys) };
}

/** Sends a bearer credential on every call (for createServiceClient and tests). */
export function bearerInterceptor(secret: string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${secret}`);
    return next(req);
  };
}
