/**
 * Who is calling. Every RPC carries `Authorization: Bearer <credential>`, and one of three kinds of caller presents it:
 * - a **tenant**, by API key: the gateway's public RPCs, each scoped to that tenant's rows (keys from MCSV_API_KEYS
 *   as `tenant=key` entries, or kept hashed in Postgres through a TenantKeyLookup);
 * - a **service**, by its own credential (MCSV_SERVICE_TOKEN, which it sends on its calls): only the methods that
 *   INTERNAL_CALLS grants it. A callee knows the callers' credentials by their SHA-256 digests
 *   (MCSV_SERVICE_TOKEN_SHA256S), so no service holds another's credential;
 * - the **operator** (MCSV_INTERNAL_TOKEN, held by people, the CLI and Prometheus, never by a service; services know
 *   it by its digest, MCSV_OPERATOR_TOKEN_SHA256): every internal method, /metrics and readiness details.
 *
 * The server checks the credential from the headers before it reads, decompresses or parses the body (server.ts),
 * and hands the caller to handlers as a context value (principalOf). Credentials are compared as SHA-256 digests in
 * constant time and never logged.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { Code, ConnectError, createContextKey, type HandlerContext, type Interceptor } from "@connectrpc/connect";
import { z } from "zod";
import { SERVICE_KEYS, type ServiceKey } from "./topology.js";

export const SECRET_MIN_LENGTH = 24;

/** The caller of an RPC, as authenticated. */
export type Principal = { kind: "tenant"; tenant: string } | { kind: "service"; service: ServiceKey } | { kind: "operator" };

/** The authenticated caller, set by the server before the handler runs. */
export const principalKey = createContextKey<Principal | undefined>(undefined, { description: "mcsv authenticated caller" });

export function principalOf(ctx: Pick<HandlerContext, "values">): Principal | undefined {
  return ctx.values.get(principalKey);
}

/** The tenant whose API key the call carries; the gateway's public handlers scope every read and write to it. */
export function tenantOf(ctx: Pick<HandlerContext, "values">): string {
  const principal = principalOf(ctx);
  if (principal?.kind !== "tenant") throw new ConnectError("this method needs an API key", Code.PermissionDenied);
  return principal.tenant;
}

/** Which internal methods each service may call: its credential opens these and nothing else. */
export const INTERNAL_CALLS: Record<ServiceKey, Readonly<Record<string, readonly string[]>>> = {
  user: { "mcsv.v1.JobService": ["EnqueueJob", "EnqueueJobs"] },
  job: {
    "mcsv.v1.EmailService": ["SendEmail"],
    "mcsv.v1.ImageService": ["ConvertImage", "ConvertDocument"],
    "mcsv.v1.UserService": ["NotifyImageConverted", "GetWebhookSigningSecrets"],
    "mcsv.v1.ClientService": ["NotifyPdfReady", "NotifyEmailSent"],
  },
  email: {},
  image: {},
  client: {},
};

export const digestOf = (value: string): Buffer => createHash("sha256").update(value).digest();

/** SHA-256 digest as 64 hex digits (MCSV_OPERATOR_TOKEN_SHA256, MCSV_SERVICE_TOKEN_SHA256S). */
export const hexDigestOf = (value: string): string => digestOf(value).toString("hex");

/** Whether `candidate` equals one of `digests`, in the same time whichever matches (or none); returns its index. */
function findDigest(candidate: Buffer, digests: readonly Buffer[]): number {
  let found = -1;
  for (let i = 0; i < digests.length; i++) if (timingSafeEqual(candidate, digests[i]!) && found < 0) found = i;
  return found;
}

/**
 * Accepted secrets, as the SHA-256 digests that are compared: digests have one length whatever the secret's, so
 * timingSafeEqual can compare them, and they are computed once rather than on every RPC.
 */
export class SecretSet {
  private readonly digests: readonly Buffer[];

  constructor(secrets: readonly string[]) {
    this.digests = secrets.map(digestOf);
  }

  /** Whether `presented` is one of the secrets, taking the same time whichever matches (or none). */
  matches(presented: string): boolean {
    return findDigest(digestOf(presented), this.digests) >= 0;
  }
}

const hex64 = z.string().regex(/^[0-9a-f]{64}$/i, "must be a SHA-256 digest (64 hex digits)");
/** A tenant's name: what MCSV_API_KEYS and the key store accept. */
export const TENANT_NAME = /^[a-z0-9][a-z0-9_.-]{0,62}$/;

/** One API key of MCSV_API_KEYS and the tenant it belongs to. */
export interface ApiKeyEntry {
  tenant: string;
  key: string;
}

/** A bare key is a tenant of its own, named after the key's digest (so that the name gives nothing away). */
export function tenantOfBareKey(key: string): string {
  return `key-${hexDigestOf(key).slice(0, 12)}`;
}

function commaEntries(value: string): string[] {
  return value
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
}

export const apiKeysEnv = {
  /**
   * API keys, comma-separated `tenant=key` entries (a bare key is a tenant of its own). Keys can also be kept in
   * Postgres (`npm run keys`); this list serves development and bootstrap.
   */
  MCSV_API_KEYS: z
    .string()
    .default("")
    .transform((value, ctx) =>
      commaEntries(value).flatMap((entry): ApiKeyEntry[] => {
        const at = entry.indexOf("=");
        const tenant = at < 0 ? undefined : entry.slice(0, at).trim().toLowerCase();
        const key = at < 0 ? entry : entry.slice(at + 1).trim();
        if (tenant !== undefined && !TENANT_NAME.test(tenant)) {
          ctx.addIssue({ code: "custom", message: `tenant ${JSON.stringify(tenant)} must be 1 to 63 of a-z, 0-9, '_', '.', '-'` });
          return [];
        }
        if (key.length < SECRET_MIN_LENGTH) {
          ctx.addIssue({ code: "custom", message: `every key must be at least ${SECRET_MIN_LENGTH} characters` });
          return [];
        }
        return [{ tenant: tenant ?? tenantOfBareKey(key), key }];
      }),
    ),
};

/** Every service: its own credential, its callers' digests and the operator's. */
export const internalAuthEnv = {
  /** This service's own credential, sent on every call it makes to another service. */
  MCSV_SERVICE_TOKEN: z.string().min(SECRET_MIN_LENGTH, `must be at least ${SECRET_MIN_LENGTH} characters`).optional(),
  /** SHA-256 digests of the services' credentials, comma-separated `service=hex`; each caller gets INTERNAL_CALLS. */
  MCSV_SERVICE_TOKEN_SHA256S: z
    .string()
    .default("")
    .transform((value, ctx) => {
      const digests: Partial<Record<ServiceKey, string>> = {};
      for (const entry of commaEntries(value)) {
        const [service, digest] = entry.split("=", 2).map((s) => s.trim());
        if (!SERVICE_KEYS.includes(service as ServiceKey) || !hex64.safeParse(digest).success) {
          ctx.addIssue({ code: "custom", message: `entries must be service=sha256hex with a service among ${SERVICE_KEYS.join(", ")}` });
          continue;
        }
        digests[service as ServiceKey] = digest!.toLowerCase();
      }
      return digests;
    }),
  /** SHA-256 digest of the operator's credential (MCSV_INTERNAL_TOKEN), which no service holds itself. */
  MCSV_OPERATOR_TOKEN_SHA256: hex64.transform((v) => v.toLowerCase()).optional(),
};

/** A service that calls others must have its own credential. */
export const callerEnv = {
  MCSV_SERVICE_TOKEN: z.string({ error: "is required: this service calls others with it" }).min(SECRET_MIN_LENGTH, `must be at least ${SECRET_MIN_LENGTH} characters`),
};

export interface InternalAuthConfig {
  MCSV_SERVICE_TOKEN?: string | undefined;
  MCSV_SERVICE_TOKEN_SHA256S: Partial<Record<ServiceKey, string>>;
  MCSV_OPERATOR_TOKEN_SHA256?: string | undefined;
}

/** Finds the tenant of an API key kept outside the environment (the gateway's key table); undefined if none. */
export type TenantKeyLookup = (key: string) => Promise<string | undefined>;

/** Why a credential was not accepted for a method. */
export class AuthRefusal extends ConnectError {}

const refuse = {
  missing: () => new AuthRefusal("missing credentials: send Authorization: Bearer <key>", Code.Unauthenticated),
  invalid: () => new AuthRefusal("invalid credentials", Code.Unauthenticated),
  forbidden: (rpc: string) => new AuthRefusal(`this credential may not call ${rpc}`, Code.PermissionDenied),
};

export interface AuthPolicy {
  /** The caller, when `credential` opens `service`/`method`; else throws an AuthRefusal. */
  authenticate(credential: string | undefined, service: string, method: string): Promise<Principal>;
  /** Whoever the credential belongs to, whatever it opens (for protocol services such as reflection). */
  identify(credential: string | undefined): Promise<Principal | undefined>;
  /** Whether `credential` is the operator's (for /metrics, readiness details and pages). */
  isOperator(credential: string | undefined): boolean;
}

export interface PolicyOptions {
  internal: InternalAuthConfig;
  /** The methods tenants call with API keys (the gateway's public RPCs); every other method is internal. */
  publicMethods?: readonly string[];
  apiKeys?: readonly ApiKeyEntry[];
  lookupTenantKey?: TenantKeyLookup;
}

/** The credentials a service accepts, and for which methods. */
export function authPolicy(options: PolicyOptions): AuthPolicy {
  const operator = options.internal.MCSV_OPERATOR_TOKEN_SHA256 ? [Buffer.from(options.internal.MCSV_OPERATOR_TOKEN_SHA256, "hex")] : [];
  const services = Object.entries(options.internal.MCSV_SERVICE_TOKEN_SHA256S) as [ServiceKey, string][];
  const serviceDigests = services.map(([, hex]) => Buffer.from(hex, "hex"));
  const keys = options.apiKeys ?? [];
  const keyDigests = keys.map((entry) => digestOf(entry.key));
  const publicMethods = new Set(options.publicMethods ?? []);

  async function identify(credential: string): Promise<Principal | undefined> {
    const candidate = digestOf(credential);
    if (findDigest(candidate, operator) >= 0) return { kind: "operator" };
    const service = findDigest(candidate, serviceDigests);
    if (service >= 0) return { kind: "service", service: services[service]![0] };
    const key = findDigest(candidate, keyDigests);
    if (key >= 0) return { kind: "tenant", tenant: keys[key]!.tenant };
    const tenant = publicMethods.size > 0 ? await options.lookupTenantKey?.(credential) : undefined;
    return tenant === undefined ? undefined : { kind: "tenant", tenant };
  }

  return {
    async authenticate(credential, service, method) {
      if (credential === undefined) throw refuse.missing();
      const principal = await identify(credential);
      if (!principal) throw refuse.invalid();
      const allowed = publicMethods.has(method)
        ? principal.kind === "tenant"
        : principal.kind === "operator" || (principal.kind === "service" && (INTERNAL_CALLS[principal.service][service] ?? []).includes(method));
      if (!allowed) throw refuse.forbidden(`${service}/${method}`);
      return principal;
    },
    identify: async (credential) => (credential === undefined ? undefined : identify(credential)),
    isOperator(credential) {
      return credential !== undefined && findDigest(digestOf(credential), operator) >= 0;
    },
  };
}

/** The credential of an `Authorization: Bearer …` header, if it has one. */
export function bearerCredential(header: string | null | undefined): string | undefined {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header ?? "");
  return match?.[1];
}

/** Sends a bearer credential on every call (for createServiceClient and tests). */
export function bearerInterceptor(secret: string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${secret}`);
    return next(req);
  };
}
