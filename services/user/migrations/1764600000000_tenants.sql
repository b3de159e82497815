-- Up Migration

-- Contract: the gateways before tenants insert rows without a tenant, which fail once the defaults are dropped. Deploy
-- this release with no old gateway left running (scale the old ones to zero, or a Recreate rollout), as it was.

-- Every row the gateway owns belongs to a tenant (the owner of the API key that created it). Rows from before
-- tenants belong to 'default'; new rows always name theirs (no default).
alter table mcsv_user.users add column tenant text not null default 'default';
alter table mcsv_user.uploads add column tenant text not null default 'default';
alter table mcsv_user.conversions add column tenant text not null default 'default';
alter table mcsv_user.outbox add column tenant text not null default 'default';
alter table mcsv_user.users alter column tenant drop default;
alter table mcsv_user.uploads alter column tenant drop default;
alter table mcsv_user.conversions alter column tenant drop default;
alter table mcsv_user.outbox alter column tenant drop default;

-- Unique per tenant: two tenants may both register an address, and use the same idempotency key.
drop index mcsv_user.users_email_unique;
create unique index users_email_unique on mcsv_user.users (tenant, lower(email));
drop index mcsv_user.conversions_idempotency_unique;
create unique index conversions_idempotency_unique on mcsv_user.conversions (tenant, lower(user_email), idempotency_key)
  where idempotency_key is not null;
drop index mcsv_user.conversions_by_email;
create index conversions_by_email on mcsv_user.conversions (tenant, lower(user_email), seq desc);
-- Conversions in flight per tenant, counted before accepting another.
create index conversions_in_flight on mcsv_user.conversions (tenant) where state in ('queued', 'processing');

-- API keys kept in Postgres: `mcsv_<prefix>_<secret>`. The prefix names the key (in lists, logs and revocation);
-- only the SHA-256 digest of the whole key is stored (keys carry 256 random bits, so a plain digest is enough).
create table mcsv_user.api_keys (
  id uuid primary key,
  tenant text not null check (tenant ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
  prefix text not null unique,
  key_sha256 bytea not null check (length(key_sha256) = 32),
  created_at timestamptz not null default now(),
  revoked_at timestamptz,
  last_used_at timestamptz
);
create index api_keys_by_tenant on mcsv_user.api_keys (tenant, created_at);

-- Down Migration

drop table mcsv_user.api_keys;
drop index mcsv_user.conversions_in_flight;
drop index mcsv_user.conversions_by_email;
create index conversions_by_email on mcsv_user.conversions (lower(user_email), seq desc);
drop index mcsv_user.conversions_idempotency_unique;
create unique index conversions_idempotency_unique on mcsv_user.conversions (lower(user_email), idempotency_key)
  where idempotency_key is not null;
drop index mcsv_user.users_email_unique;
create unique index users_email_unique on mcsv_user.users (lower(email));
alter table mcsv_user.outbox drop column tenant;
alter table mcsv_user.conversions drop column tenant;
alter table mcsv_user.uploads drop column tenant;
alter table mcsv_user.users drop column tenant;
