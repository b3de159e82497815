/**
 * API keys kept in Postgres (mcsv_user.api_keys), created, listed and revoked with `npm run keys`; MCSV_API_KEYS
 * keeps working beside them for development and bootstrap.
 *
 * A key is `mcsv_<prefix>_<secret>`: the prefix (8 base32 characters) names the key in lists and revocation, and
 * finds its row; the secret is 32 random bytes (base64url). Only the SHA-256 digest of the whole key is stored: a
 * key carries 256 random bits, so its digest cannot be reversed by guessing, and no slow password hash is needed.
 */
import { randomBytes, randomUUID, timingSafeEqual } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import { digestOf, TENANT_NAME, type TenantKeyLookup } from "../shared/auth.js";
import type { Pool } from "../shared/database.js";

const BASE32 = "abcdefghijklmnopqrstuvwxyz234567";
const KEY_FORMAT = /^mcsv_([a-z2-7]{8})_([A-Za-z0-9_-]{43})$/;
const PREFIX_FORMAT = /^[a-z2-7]{8}$/;
/** The rule of tenant names in MCSV_API_KEYS (services/shared/auth.ts), also checked by the table. */

/** What is known of a key (never the key itself). */
export interface ApiKeyInfo {
  prefix: string;
  tenant: string;
  createdAt: Date;
  revokedAt?: Date | undefined;
  lastUsedAt?: Date | undefined;
}

/** A key just created: the only time the key itself is seen. */
export interface NewApiKey extends ApiKeyInfo {
  key: string;
}

interface ApiKeyRow {
  prefix: string;
  tenant: string;
  created_at: Date;
  revoked_at: Date | null;
  last_used_at: Date | null;
}

const INFO_COLUMNS = "prefix, tenant, created_at, revoked_at, last_used_at";

function toInfo(row: ApiKeyRow): ApiKeyInfo {
  return {
    prefix: row.prefix,
    tenant: row.tenant,
    createdAt: row.created_at,
    ...(row.revoked_at ? { revokedAt: row.revoked_at } : {}),
    ...(row.last_used_at ? { lastUsedAt: row.last_used_at } : {}),
  };
}

/** 5 random bytes as 8 base32 characters. */
function randomPrefix(): string {
  let bits = BigInt(`0x${randomBytes(5).toString("hex")}`);
  let out = "";
  for (let i = 0; i < 8; i++, bits >>= 5n) out = BASE32[Number(bits & 31n)]! + out;
  return out;
}

export class ApiKeys {
  constructor(private readonly pool: Pool) {}

  /** Creates a key of `tenant`; the answer holds the key, which is not kept and cannot be shown again. */
  async create(tenant: string): Promise<NewApiKey> {
    if (!TENANT_NAME.test(tenant)) throw new RangeError(`tenant ${JSON.stringify(tenant)} must be 1 to 63 of a-z, 0-9, '_', '.', '-', starting with a letter or digit`);
    for (let attempt = 1; ; attempt++) {
      const prefix = randomPrefix();
      const key = `mcsv_${prefix}_${randomBytes(32).toString("base64url")}`;
      try {
        const { rows } = await this.pool.query<ApiKeyRow>(
          `insert into mcsv_user.api_keys (id, tenant, prefix, key_sha256) values ($1, $2, $3, $4) returning ${INFO_COLUMNS}`,
          [randomUUID(), tenant, prefix, digestOf(key)],
        );
        return { ...toInfo(rows[0]!), key };
      } catch (error) {
        // 40 random bits of prefix rarely collide; when they do, draw another.
        if ((error as { code?: string }).code !== "23505" || attempt >= 5) throw error;
      }
    }
  }

  /** Every key (of `tenant`, when given), oldest first. */
  async list(tenant?: string): Promise<ApiKeyInfo[]> {
    const { rows } = await this.pool.query<ApiKeyRow>(
      `select ${INFO_COLUMNS} from mcsv_user.api_keys where $1::text is null or tenant = $1 order by created_at, prefix`,
      [tenant ?? null],
    );
    return rows.map(toInfo);
  }

  /**
   * Revokes the key with this prefix (a revoked key stays revoked since its first revocation); undefined when there
   * is none. Gateways stop accepting it within their cache time (at most ~10 s).
   */
  async revoke(prefix: string): Promise<ApiKeyInfo | undefined> {
    if (!PREFIX_FORMAT.test(prefix)) return undefined;
    const { rows } = await this.pool.query<ApiKeyRow>(
      `update mcsv_user.api_keys set revoked_at = coalesce(revoked_at, now()) where prefix = $1 returning ${INFO_COLUMNS}`,
      [prefix],
    );
    return rows[0] ? toInfo(rows[0]) : undefined;
  }
}

export interface TenantKeyLookupOptions {
  /** How long a key found valid is believed without asking Postgres again (so revocation takes this long). */
  cacheMs?: number;
  /** Most keys remembered at once. */
  maxCached?: number;
  /** The clock, in milliseconds (tests). */
  now?: () => number;
}

/**
 * The tenant of a key kept in Postgres, for the gateway's auth policy. Anything that is not a well-formed key is
 * undefined without a query; a key is found by its prefix and its digest compared in constant time. Valid keys are
 * remembered for `cacheMs` (default 10 s), so that a busy client costs one query per key every 10 s, not one per
 * RPC; unknown keys are not remembered (they would pin memory an attacker chooses). When Postgres cannot be asked,
 * the call fails with unavailable rather than calling a good key invalid.
 */
export function createTenantKeyLookup(pool: Pool, options: TenantKeyLookupOptions = {}): TenantKeyLookup {
  const cacheMs = options.cacheMs ?? 10_000;
  const maxCached = options.maxCached ?? 10_000;
  const now = options.now ?? Date.now;
  const cache = new Map<string, { tenant: string; until: number }>();
  // Concurrent first calls with one key share one query.
  const asking = new Map<string, Promise<string | undefined>>();

  async function ask(prefix: string, digest: Buffer): Promise<string | undefined> {
    let rows: Array<{ tenant: string; key_sha256: Buffer }>;
    try {
      ({ rows } = await pool.query<{ tenant: string; key_sha256: Buffer }>(
        "select tenant, key_sha256 from mcsv_user.api_keys where prefix = $1 and revoked_at is null",
        [prefix],
      ));
    } catch (error) {
      throw new ConnectError("API keys cannot be checked right now; retry", Code.Unavailable, undefined, undefined, error);
    }
    const row = rows[0];
    if (!row || row.key_sha256.length !== digest.length || !timingSafeEqual(row.key_sha256, digest)) return undefined;
    // Best effort: when it was last used, to within the cache time.
    pool.query("update mcsv_user.api_keys set last_used_at = now() where prefix = $1", [prefix]).catch(() => undefined);
    return row.tenant;
  }

  return async (key) => {
    const match = typeof key === "string" && key.length < 128 ? KEY_FORMAT.exec(key) : null;
    if (!match) return undefined;
    const digest = digestOf(key);
    const id = digest.toString("hex");
    const cached = cache.get(id);
    if (cached && cached.until > now()) return cached.tenant;
    if (cached) cache.delete(id);

    let answer = asking.get(id);
    if (!answer) {
      answer = ask(match[1]!, digest).finally(() => asking.delete(id));
      asking.set(id, answer);
    }
    const tenant = await answer;
    if (tenant !== undefined && !cache.has(id)) {
      if (cache.size >= maxCached) cache.delete(cache.keys().next().value!);
      cache.set(id, { tenant, until: now() + cacheMs });
    }
    return tenant;
  };
}
