-- Up Migration

-- Crash recovery. graphile-worker 0.17 locks a job with the id of the worker pool that runs it and only lets go of
-- a crashed pool's jobs when their lock is 4 hours old. Every job-svc process registers its pool here and beats
-- every few seconds; a pool whose heartbeat is older than JOB_WORKER_DEAD_AFTER_MS is dead, and any replica
-- releases its jobs (graphile_worker.force_unlock_workers) and deletes its row.
create table mcsv_job.workers (
  -- graphile's worker pool id (the jobs' locked_by).
  id text primary key,
  hostname text not null,
  pid integer not null,
  started_at timestamptz not null default now(),
  heartbeat_at timestamptz not null default now()
);

create index workers_heartbeat_at on mcsv_job.workers (heartbeat_at);

-- Attempts cut short by a dead worker that were given back (they do not count towards max_attempts, like an
-- attempt interrupted by a shutdown). Bounded, so that a job that kills its worker every time still runs out.
alter table mcsv_job.jobs add column abandoned_attempts smallint not null default 0;
