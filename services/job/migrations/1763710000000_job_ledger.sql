-- Up Migration

-- The ledger: one row per job, kept after graphile-worker deletes the job it ran, so that JobService reports the
-- whole life cycle (available … completed, discarded, cancelled) with attempts and errors.
-- While `state` is 'pending', the live state (available, scheduled, executing, retryable) is read from graphile's
-- row `graphile_job_id`; the terminal states are written here by the task wrapper and by CancelJob.
create table mcsv_job.jobs (
  id bigint generated always as identity primary key,
  task text not null,
  -- Named queue (jobs of one queue run one at a time); null runs in parallel.
  queue text,
  -- The task's arguments as enqueued (without the reserved trace context).
  args jsonb not null,
  -- W3C trace context of the enqueueing span, handed to every attempt.
  trace jsonb,
  priority smallint not null default 0,
  max_attempts smallint not null check (max_attempts >= 1),
  -- Unique across time (graphile's own key only deduplicates while a job is pending).
  job_key text unique,
  state text not null default 'pending' check (state in ('pending', 'completed', 'discarded', 'cancelled')),
  -- graphile-worker's job that runs this one now; a RetryJob of a finished job adds a new one.
  graphile_job_id bigint,
  -- Attempts made by earlier graphile jobs of this ledger row (before a RetryJob).
  attempt_offset smallint not null default 0,
  attempts smallint not null default 0,
  -- [{attempt, error, at}] of the failed attempts, oldest first.
  errors jsonb not null default '[]',
  run_at timestamptz not null default now(),
  inserted_at timestamptz not null default now(),
  attempted_at timestamptz,
  completed_at timestamptz,
  discarded_at timestamptz,
  cancelled_at timestamptz
);

create unique index jobs_graphile_job_id on mcsv_job.jobs (graphile_job_id) where graphile_job_id is not null;
-- ListJobs pages newest first, optionally by task or queue.
create index jobs_task_id on mcsv_job.jobs (task, id desc);
create index jobs_queue_id on mcsv_job.jobs (queue, id desc) where queue is not null;
-- GetQueueStats and the queue gauge count by state; pruning finds old finished jobs.
create index jobs_state_task_queue on mcsv_job.jobs (state, task, queue);
create index jobs_finished_at on mcsv_job.jobs ((coalesce(completed_at, discarded_at, cancelled_at))) where state <> 'pending';
