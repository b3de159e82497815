/** Credentials for services started by tests: an API key for the gateway and the internal service token. */
import type { Interceptor } from "@connectrpc/connect";
import { bearerInterceptor } from "../../services/shared/auth.js";

export const TEST_API_KEY = "test-api-key-0123456789abcdef";
export const TEST_INTERNAL_TOKEN = "test-internal-token-0123456789abcdef";

/** The environment that gives a service these credentials. */
export const testAuthEnv = { MCSV_API_KEYS: TEST_API_KEY, MCSV_INTERNAL_TOKEN: TEST_INTERNAL_TOKEN };

/** Sends the API key (for the gateway's public RPCs). */
export const apiKeyAuth = bearerInterceptor(TEST_API_KEY);

/** Sends the internal token (for internal services and the gateway's NotifyImageConverted). */
export const internalAuth = bearerInterceptor(TEST_INTERNAL_TOKEN);

/** For the gateway: the internal token on its internal RPC, the API key on the others. */
export const gatewayAuth: Interceptor = (next) => (req) =>
  (req.method.name === "NotifyImageConverted" ? internalAuth : apiKeyAuth)(next)(req);
