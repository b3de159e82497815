-- Up Migration

-- Each tenant's Standard Webhooks signing secrets (`whsec_` + base64 of 32 random bytes). They are kept in the clear:
-- signing needs the secret itself, not a digest. The current secret has no expires_at; a rotation gives the
-- previous one an expires_at (the grace period), until which callbacks carry its signature too.
create table mcsv_user.webhook_secrets (
  id bigint generated always as identity primary key,
  tenant text not null,
  secret text not null check (secret ~ '^whsec_[A-Za-z0-9+/]+={0,2}$'),
  created_at timestamptz not null default now(),
  expires_at timestamptz
);
-- One current secret per tenant; concurrent first uses create one, not two.
create unique index webhook_secrets_current on mcsv_user.webhook_secrets (tenant) where expires_at is null;
create index webhook_secrets_by_tenant on mcsv_user.webhook_secrets (tenant, created_at desc);

-- Down Migration

drop table mcsv_user.webhook_secrets;
