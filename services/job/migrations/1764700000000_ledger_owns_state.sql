-- Up Migration

-- Contract: job services before this release read attempt_offset and keep state in graphile's tables; they must all
-- have stopped before it runs (scale the job service to zero, migrate, then start the new release), as it was.

-- The ledger becomes the only authority on job state; graphile-worker only dispatches (see dispatcher.ts).
-- 'pending' splits into 'queued' (waiting for its dispatch: available, scheduled or retryable by run_at and
-- attempts) and 'executing' (an attempt holds a lease).
alter table mcsv_job.jobs drop constraint jobs_state_check;
update mcsv_job.jobs set state = 'queued' where state = 'pending';
alter table mcsv_job.jobs alter column state set default 'queued';
alter table mcsv_job.jobs add constraint jobs_state_check
  check (state in ('queued', 'executing', 'completed', 'discarded', 'cancelled'));

-- Which dispatch of the job is current: a graphile job whose ticket names an older one is stale and does nothing.
alter table mcsv_job.jobs add column dispatch integer not null default 1;
-- The lease of the attempt in progress: the graphile worker pool that runs it, and until when. The pool's process
-- renews it at every heartbeat; once it has expired, any replica abandons the attempt and dispatches the job again.
alter table mcsv_job.jobs add column lease_owner text;
alter table mcsv_job.jobs add column lease_expires_at timestamptz;
-- Attempts whose lease expired, all told (abandoned_attempts counts those of them that were given back).
alter table mcsv_job.jobs add column expired_leases smallint not null default 0;
-- Attempts are counted here alone now; a retried job keeps counting instead of starting a new graphile job's count.
alter table mcsv_job.jobs drop column attempt_offset;

comment on column mcsv_job.jobs.graphile_job_id is
  'The graphile job that dispatched the latest attempt (for rows from before the ledger owned state: the pending graphile job).';

create index jobs_lease_expires_at on mcsv_job.jobs (lease_expires_at) where lease_expires_at is not null;
drop index mcsv_job.jobs_finished_at;
create index jobs_finished_at on mcsv_job.jobs ((coalesce(completed_at, discarded_at, cancelled_at)))
  where state in ('completed', 'discarded', 'cancelled');
