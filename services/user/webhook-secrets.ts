/**
 * Each tenant's webhook signing secrets (Standard Webhooks): the job service signs every callback POST with them, so
 * that a receiver can tell ours from a forgery. A tenant has one current secret, created on first use. A rotation
 * makes a new one current and gives the previous one a grace period during which callbacks carry a signature by
 * both (the spec allows several in webhook-signature), so that receivers switch without losing a callback.
 */
import { randomBytes } from "node:crypto";
import { transaction, type Pool, type PoolClient } from "../shared/database.js";

export interface WebhookSecret {
  /** `whsec_` + base64 of 32 random bytes, the form the standardwebhooks libraries take. */
  secret: string;
  createdAt: Date;
  /** When a rotated secret stops signing; null for the current one. */
  expiresAt: Date | null;
}

export interface WebhookSecretsOptions {
  /** How long a rotated secret keeps signing beside its successor. */
  graceMs: number;
}

interface SecretRow {
  secret: string;
  created_at: Date;
  expires_at: Date | null;
}

const SECRET_BYTES = 32;


export function newWebhookSecret(): string {
  return `whsec_${randomBytes(SECRET_BYTES).toString("base64")}`;
}

/**
 * One change of a tenant's secrets at a time (until the transaction ends): two rotations at once would both retire
 * the same secret and then collide, and a first use must not slip a secret in between retiring and replacing.
 */
async function lockTenant(db: PoolClient, tenant: string): Promise<void> {
  await db.query("select pg_advisory_xact_lock(hashtext('mcsv_user.webhook_secrets'), hashtext($1))", [tenant]);
}

const toSecret = (row: SecretRow): WebhookSecret => ({ secret: row.secret, createdAt: row.created_at, expiresAt: row.expires_at });

export class WebhookSecrets {
  constructor(
    private readonly pool: Pool,
    private readonly options: WebhookSecretsOptions,
  ) {}

  /** The tenant's current secret, created on first use (concurrent first uses agree on one). */
  async current(tenant: string): Promise<WebhookSecret> {
    const existing = await this.findCurrent(tenant);
    if (existing) return existing;
    await transaction(this.pool, async (db) => {
      await lockTenant(db, tenant);
      await db.query(
        `insert into mcsv_user.webhook_secrets (tenant, secret) values ($1, $2)
         on conflict (tenant) where expires_at is null do nothing`,
        [tenant, newWebhookSecret()],
      );
    });
    const created = await this.findCurrent(tenant);
    if (!created) throw new Error(`no webhook secret for tenant ${tenant} after creating one`);
    return created;
  }

  /**
   * Makes a new secret current; the previous one signs beside it until the grace period ends. Secrets whose grace
   * has ended are deleted. Returns the new secret and when the previous one stops signing (none on first use).
   */
  async rotate(tenant: string): Promise<{ current: WebhookSecret; previousExpiresAt: Date | undefined }> {
    return transaction(this.pool, async (db) => {
      await lockTenant(db, tenant);
      const retired = await db.query<{ expires_at: Date }>(
        `update mcsv_user.webhook_secrets set expires_at = now() + make_interval(secs => $2::double precision / 1000)
         where tenant = $1 and expires_at is null returning expires_at`,
        [tenant, this.options.graceMs],
      );
      await db.query("delete from mcsv_user.webhook_secrets where tenant = $1 and expires_at <= now()", [tenant]);
      const { rows } = await db.query<SecretRow>(
        "insert into mcsv_user.webhook_secrets (tenant, secret) values ($1, $2) returning secret, created_at, expires_at",
        [tenant, newWebhookSecret()],
      );
      return { current: toSecret(rows[0]!), previousExpiresAt: retired.rows[0]?.expires_at };
    });
  }

  /** The secrets that sign the tenant's callbacks now: the current one (created when none) first, then rotated ones. */
  async signing(tenant: string): Promise<WebhookSecret[]> {
    await this.current(tenant);
    const { rows } = await this.pool.query<SecretRow>(
      `select secret, created_at, expires_at from mcsv_user.webhook_secrets
       where tenant = $1 and (expires_at is null or expires_at > now())
       order by expires_at is not null, created_at desc`,
      [tenant],
    );
    return rows.map(toSecret);
  }

  private async findCurrent(tenant: string): Promise<WebhookSecret | undefined> {
    const { rows } = await this.pool.query<SecretRow>(
      "select secret, created_at, expires_at from mcsv_user.webhook_secrets where tenant = $1 and expires_at is null",
      [tenant],
    );
    return rows[0] ? toSecret(rows[0]) : undefined;
  }
}
