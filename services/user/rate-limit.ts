/**
 * Per-tenant rate limit of the gateway: a token bucket per tenant over all its public RPCs; over it,
 * resource_exhausted with a `retry-after` hint.
 *
 * The buckets live in this process: with N replicas behind a load balancer a tenant gets up to N times the rate.
 * That is accepted: the limit is there against floods and runaway clients, not for billing, and the conversions
 * that cost the most are also capped in Postgres (TENANT_MAX_CONVERSIONS_IN_FLIGHT), across replicas.
 */
import { resourceExhausted } from "../shared/errors.js";

export interface TenantRateOptions {
  /** Requests per second each tenant may sustain; 0 turns the limit off. */
  perSecond: number;
  /** Requests a tenant may make at once after a quiet spell (the bucket's size). */
  burst: number;
  /** The clock, in milliseconds (tests). */
  now?: () => number;
}

interface Bucket {
  tokens: number;
  at: number;
}

/** Buckets idle long enough to be full again are dropped past this many tenants, to keep the map small. */
const PRUNE_ABOVE = 10_000;

export class TenantRateLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private readonly now: () => number;

  constructor(private readonly options: TenantRateOptions) {
    this.now = options.now ?? Date.now;
  }

  /** Takes one request from the tenant's bucket, or throws resource_exhausted saying when the next one fits. */
  take(tenant: string): void {
    const { perSecond, burst } = this.options;
    if (perSecond <= 0) return;
    const now = this.now();
    const bucket = this.buckets.get(tenant) ?? { tokens: burst, at: now };
    bucket.tokens = Math.min(burst, bucket.tokens + ((now - bucket.at) / 1000) * perSecond);
    bucket.at = now;
    if (bucket.tokens < 1) {
      this.buckets.set(tenant, bucket);
      throw resourceExhausted(`too many requests: this tenant may make ${perSecond} a second (bursts of ${burst})`, (1 - bucket.tokens) / perSecond);
    }
    bucket.tokens -= 1;
    this.buckets.set(tenant, bucket);
    if (this.buckets.size > PRUNE_ABOVE) this.prune(now);
  }

  private prune(now: number): void {
    const { perSecond, burst } = this.options;
    for (const [tenant, bucket] of this.buckets) {
      if (bucket.tokens + ((now - bucket.at) / 1000) * perSecond >= burst) this.buckets.delete(tenant);
    }
  }
}
