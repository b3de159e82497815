/** `mcsv jobs …`: the job service's queue, with the operator's credential. */
import { Command, Option } from "commander";
import { CancelJobResponseSchema, GetQueueStatsResponseSchema, JobState, ListJobsResponseSchema, RetryJobResponseSchema, type Job } from "@mcsv/sdk";
import { jobClient, type GlobalOptions, type JobOptions } from "../clients.js";
import { DEFAULT_JOB_URL } from "../settings.js";
import { enumName, printMessage, printTable, time } from "../output.js";
import { positiveInt } from "./options.js";

type Options = GlobalOptions & JobOptions;

const STATES = Object.fromEntries(
  Object.entries(JobState)
    .filter((e): e is [string, number] => typeof e[1] === "number" && e[1] !== JobState.UNSPECIFIED)
    .map(([name, value]) => [name.toLowerCase(), value as JobState]),
);

/** The task's name (send_email, …), from the case of its typed payload. */
const taskOf = (job: Job) => (job.payload.case ? job.payload.case.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`) : "?");
const describeJob = (job: Job | undefined) => (job ? `job ${job.id} (${taskOf(job)}): ${enumName(JobState, job.state)}\n` : "");

export function jobsCommand(): Command {
  const jobs = new Command("jobs")
    .description("the job service's queue (needs the operator's credential)")
    .addOption(new Option("--job-url <url>", `the job service (default: ${DEFAULT_JOB_URL})`).env("MCSV_JOB_URL"))
    .addOption(new Option("--internal-token <token>", "the operator's credential (default: .data/credentials.json's)").env("MCSV_INTERNAL_TOKEN"));
  jobs
    .command("list")
    .description("list jobs, newest first")
    .addOption(new Option("--state <state...>", "only jobs in these states").choices(Object.keys(STATES)))
    .option("--task <task>", "only jobs of this task (send_email, convert_image, notify_client, cleanup_storage, report_conversion_failed)")
    .option("--queue <queue>", "only jobs of this queue")
    .option("-n, --limit <n>", "how many (1 to 100)", positiveInt("--limit"), 20)
    .option("--page-token <token>", "the next page, from a previous listing")
    .action(async (_options: unknown, command: Command) => {
      const options = command.optsWithGlobals<Options & { state?: string[]; task?: string; queue?: string; limit: number; pageToken?: string }>();
      const response = await jobClient(options).listJobs({
        states: (options.state ?? []).map((s) => STATES[s]!),
        task: options.task ?? "",
        queue: options.queue ?? "",
        pageSize: options.limit,
        pageToken: options.pageToken ?? "",
      });
      if (options.json) return printMessage(ListJobsResponseSchema, response);
      printTable(
        ["ID", "TASK", "STATE", "ATTEMPTS", "QUEUE", "INSERTED", "LAST ERROR"],
        response.jobs.map((j) => [j.id, taskOf(j), enumName(JobState, j.state), `${j.attempts}/${j.maxAttempts}`, j.queue, time(j.insertedAt), j.errors.at(-1)?.error ?? ""]),
      );
      if (response.nextPageToken) process.stdout.write(`more: --page-token ${response.nextPageToken}\n`);
    });
  jobs
    .command("stats")
    .description("count jobs per queue, task and state")
    .action(async (_options: unknown, command: Command) => {
      const options = command.optsWithGlobals<Options>();
      const response = await jobClient(options).getQueueStats({});
      if (options.json) return printMessage(GetQueueStatsResponseSchema, response);
      printTable(
        ["QUEUE", "TASK", "AVAILABLE", "SCHEDULED", "EXECUTING", "RETRYABLE", "COMPLETED", "DISCARDED", "CANCELLED"],
        response.queues.map((q) => [q.queue || "-", q.task, ...[q.available, q.scheduled, q.executing, q.retryable, q.completed, q.discarded, q.cancelled].map(String)]),
      );
    });
  jobs
    .command("retry")
    .description("run a discarded, cancelled or retryable job again now")
    .argument("<id>", "the job's id")
    .action(async (id: string, _options: unknown, command: Command) => {
      const options = command.optsWithGlobals<Options>();
      const response = await jobClient(options).retryJob({ id });
      if (options.json) printMessage(RetryJobResponseSchema, response);
      else process.stdout.write(describeJob(response.job));
    });
  jobs
    .command("cancel")
    .description("cancel a job that has not finished")
    .argument("<id>", "the job's id")
    .action(async (id: string, _options: unknown, command: Command) => {
      const options = command.optsWithGlobals<Options>();
      const response = await jobClient(options).cancelJob({ id });
      if (options.json) printMessage(CancelJobResponseSchema, response);
      else process.stdout.write(describeJob(response.job));
    });
  return jobs;
}
