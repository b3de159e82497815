/**
 * Credentials for services started by tests: an API key of tenant "acme", the operator's credential, and each
 * service's own credential. Services get digests only (auth.ts), as in production.
 */
import type { Interceptor } from "@connectrpc/connect";
import { authPolicy, bearerInterceptor, hexDigestOf } from "../../services/shared/auth.js";
import { SERVICE_KEYS, type ServiceKey } from "../../services/shared/topology.js";

export const TEST_TENANT = "acme";
export const TEST_API_KEY = "test-api-key-0123456789abcdef";
/** The operator's credential (MCSV_INTERNAL_TOKEN): every internal method of every service. */
export const TEST_INTERNAL_TOKEN = "test-internal-token-0123456789abcdef";
export const TEST_SERVICE_TOKENS = Object.fromEntries(SERVICE_KEYS.map((key) => [key, `test-${key}-service-token-0123456789abcdef`])) as Record<ServiceKey, string>;

/** The environment that gives a service these credentials (every service; add serviceAuthEnv for its own). */
export const testAuthEnv = {
  MCSV_API_KEYS: `${TEST_TENANT}=${TEST_API_KEY}`,
  MCSV_OPERATOR_TOKEN_SHA256: hexDigestOf(TEST_INTERNAL_TOKEN),
  MCSV_SERVICE_TOKEN_SHA256S: SERVICE_KEYS.map((key) => `${key}=${hexDigestOf(TEST_SERVICE_TOKENS[key])}`).join(","),
};

/** testAuthEnv plus the service's own credential, for a service started in the test's process. */
export function serviceAuthEnv(key: ServiceKey) {
  return { ...testAuthEnv, MCSV_SERVICE_TOKEN: TEST_SERVICE_TOKENS[key] };
}

/** Sends the API key (for the gateway's public RPCs). */
export const apiKeyAuth = bearerInterceptor(TEST_API_KEY);

/** Sends the operator's credential (internal services, and the gateway's internal RPCs). */
export const internalAuth = bearerInterceptor(TEST_INTERNAL_TOKEN);

/** For the gateway: the operator's credential on its internal RPCs, the API key on the others. */
export const gatewayAuth: Interceptor = (next) => (req) =>
  (req.method.name === "NotifyImageConverted" || req.method.name === "GetWebhookSigningSecrets" ? internalAuth : apiKeyAuth)(next)(req);

/** A policy that opens every internal method to the operator's credential (servers built by tests). */
export const operatorPolicy = authPolicy({ internal: { MCSV_OPERATOR_TOKEN_SHA256: hexDigestOf(TEST_INTERNAL_TOKEN), MCSV_SERVICE_TOKEN_SHA256S: {} } });
