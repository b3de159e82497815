-- Up Migration

-- Registered users. Emails compare case-insensitively: the unique index is on lower(email).
create table mcsv_user.users (
  id uuid primary key,
  name text not null,
  email text not null,
  -- The key of the CreateUser request that created the user: a repeat with it returns the user.
  idempotency_key text,
  created_at timestamptz not null default now()
);
create unique index users_email_unique on mcsv_user.users (lower(email));

-- Presigned uploads handed out by CreateUploadUrl; ConvertImage checks the owner, the declared size and that an
-- upload is converted at most once.
create table mcsv_user.uploads (
  id uuid primary key,
  user_email text not null,
  filename text not null,
  content_type text not null,
  size bigint not null check (size > 0),
  expires_at timestamptz not null,
  conversion_id uuid,
  created_at timestamptz not null default now()
);
create unique index uploads_conversion_unique on mcsv_user.uploads (conversion_id) where conversion_id is not null;

create table mcsv_user.conversions (
  id uuid primary key,
  -- Keyset order of ListConversions (newest first); created_at alone is not unique.
  seq bigint generated always as identity unique,
  user_email text not null,
  state text not null check (state in ('queued', 'processing', 'succeeded', 'failed')),
  filename text not null,
  input_format text not null,
  input_size bigint not null default 0,
  output_size bigint not null default 0,
  width integer not null default 0,
  height integer not null default 0,
  duration_ms bigint not null default 0,
  options jsonb not null,
  source text not null check (source in ('inline', 'upload')),
  upload_id uuid references mcsv_user.uploads (id),
  original_key text not null,
  pdf_key text,
  error text not null default '',
  callback_url text,
  idempotency_key text,
  -- Digest of what the request asked for, so that a key reused for a different request is refused.
  request_digest text not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  finished_at timestamptz
);
-- Idempotency keys are scoped to the address: one client cannot reach another's conversion by guessing its key.
create unique index conversions_idempotency_unique on mcsv_user.conversions (lower(user_email), idempotency_key)
  where idempotency_key is not null;
create index conversions_by_email on mcsv_user.conversions (lower(user_email), seq desc);

-- Transactional outbox: jobs to enqueue in the job service, written in the same transaction as the change that
-- causes them and delivered (at least once; the job key makes a repeat harmless) by OutboxRelay.
create table mcsv_user.outbox (
  id bigint generated always as identity primary key,
  job_key text not null unique,
  task text not null,
  args jsonb not null,
  -- W3C trace context of the request that wrote the row, so the enqueue continues its trace.
  trace_context jsonb,
  attempts integer not null default 0,
  last_error text,
  next_attempt_at timestamptz not null default now(),
  -- A relay that claimed the row owns it until then (several replicas may relay at once).
  claimed_until timestamptz,
  created_at timestamptz not null default now(),
  sent_at timestamptz,
  -- Set when the job service refused the job for good (a bug: the payload broke the contract).
  dead_at timestamptz
);
create index outbox_pending on mcsv_user.outbox (next_attempt_at) where sent_at is null and dead_at is null;

-- Down Migration

drop table mcsv_user.outbox;
drop table mcsv_user.conversions;
drop table mcsv_user.uploads;
drop table mcsv_user.users;
