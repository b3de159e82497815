/**
 * Standard Webhooks signatures of callback POSTs: `webhook-id` (the delivery's idempotency key, the same on every
 * retry), `webhook-timestamp` (when this attempt is sent, in seconds) and `webhook-signature`, one `v1,<base64>`
 * per secret of the tenant that signs now, space-separated (after a rotation, the new secret's and the previous
 * one's, until its grace period ends). A receiver verifies with any standardwebhooks library (docs/webhooks.md).
 *
 * The secrets live in the gateway (UserService.GetWebhookSigningSecrets); they are kept here for a short while so
 * that a burst of callbacks does not ask for them each time. A rotation therefore reaches the signatures within
 * WEBHOOK_SECRETS_CACHE_MS, and the previous secret keeps signing meanwhile.
 */
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import type { UserService } from "@mcsv/sdk";
import { Webhook } from "standardwebhooks";

/** The signature headers of one delivery attempt. */
export function signatureHeaders(secrets: readonly string[], msgId: string, sentAt: Date, payload: string): Record<string, string> {
  if (secrets.length === 0) throw new Error("no webhook signing secret: callbacks are never sent unsigned");
  return {
    "webhook-id": msgId,
    "webhook-timestamp": String(Math.floor(sentAt.getTime() / 1000)),
    "webhook-signature": secrets.map((secret) => new Webhook(secret).sign(msgId, sentAt, payload)).join(" "),
  };
}

/** The secrets that sign a tenant's callbacks now, current first. */
export type SigningSecretSource = (tenant: string, signal?: AbortSignal) => Promise<string[]>;

export interface SigningSecretsOptions {
  /** How long a tenant's answer is reused (0: ask every time). */
  cacheMs: number;
  rpcTimeoutMs: number;
  /** Tenants whose secrets are held at once; the oldest entry goes first. */
  maxTenants?: number;
}

const DEFAULT_MAX_TENANTS = 1_000;

/** Asks the gateway for a tenant's signing secrets, and keeps the answer for a short while. */
export function gatewaySigningSecrets(user: Pick<Client<typeof UserService>, "getWebhookSigningSecrets">, options: SigningSecretsOptions): SigningSecretSource {
  const cache = new Map<string, { secrets: string[]; until: number }>();
  const maxTenants = options.maxTenants ?? DEFAULT_MAX_TENANTS;
  return async (tenant, signal) => {
    const now = Date.now();
    const held = cache.get(tenant);
    if (held && held.until > now) return held.secrets;
    const { secrets } = await user.getWebhookSigningSecrets({ tenant }, { signal, timeoutMs: options.rpcTimeoutMs });
    const values = secrets.map((s) => s.secret).filter(Boolean);
    if (values.length === 0) throw new Error(`the gateway returned no webhook signing secret for tenant ${tenant}`);
    // Never past the end of a rotated secret's grace period.
    const ends = secrets.flatMap((s) => (s.expiresAt ? [timestampDate(s.expiresAt).getTime()] : []));
    const until = Math.min(now + options.cacheMs, ...ends);
    cache.delete(tenant);
    if (options.cacheMs > 0) {
      if (cache.size >= maxTenants) cache.delete(cache.keys().next().value!);
      cache.set(tenant, { secrets: values, until });
    }
    return values;
  };
}
