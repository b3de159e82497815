/**
 * Two job service replicas on one Postgres, as on Kubernetes: both work the shared queue, no job runs to its end
 * twice, and when one replica is SIGKILLed (and not restarted) the survivor's crash recovery finds its dead worker
 * pool by its silent heartbeat and runs the jobs it held. The gateway calls replica 0 (as it would call a Service);
 * replica 1 only works the queue, and it is the one killed. The ImageMagick gate keeps conversions mid-flight, so
 * that each replica holds convert_image jobs at a known moment without any timing assumption.
 */
import type { ServiceProcess } from "../../scripts/lib/system.js";
import { allSucceeded, convertRequest, eventually, exactlyOneEmailEach, pdfKeys, smallPng, startChaosSystem, type ChaosSystem } from "./support.js";

/** Jobs run at once per replica: small, so that 30 held conversions are more than one replica can take. */
const CONCURRENCY = 4;
const LOAD = 30;

let system: ChaosSystem;
let replicas: ServiceProcess[];

beforeAll(async () => {
  system = await startChaosSystem({ JOB_CONCURRENCY: String(CONCURRENCY) }, { replicas: { job: 2 } });
  replicas = [system.services.get("job")!, ...system.replicas.filter((r) => r.key === "job")];
}, 120_000);

afterAll(async () => {
  system?.gate.release();
  await system?.close();
});

afterEach(() => system.gate.release());

/** The id of the newest ledger row; jobs of a test are those after it. */
async function lastJobId(): Promise<number> {
  const { rows } = await system.db.query<{ id: string | null }>(`select max(id) as id from mcsv_job.jobs`);
  return Number(rows[0]?.id ?? 0);
}

/** The worker pools registered by one replica process (graphile runs one per process). */
async function poolsOf(replica: ServiceProcess): Promise<string[]> {
  const { rows } = await system.db.query<{ id: string }>(`select id from mcsv_job.workers where pid = $1`, [replica.child.pid]);
  return rows.map((r) => r.id);
}

/** How many convert_image attempts each replica runs right now (the leases its pools hold). */
async function convertsHeld(): Promise<number[]> {
  const pools = await Promise.all(replicas.map(poolsOf));
  const { rows } = await system.db.query<{ lease_owner: string; n: string }>(
    `select lease_owner, count(*) as n from mcsv_job.jobs where task = 'convert_image' and state = 'executing' and lease_owner is not null group by 1`,
  );
  return pools.map((ids) => rows.filter((r) => ids.includes(r.lease_owner)).reduce((sum, r) => sum + Number(r.n), 0));
}

/** 30 CreateUser (a welcome email each) and 30 ConvertImage (a PDF and an email each), all at once. */
async function mixedLoad(prefix: string): Promise<{ conversions: string[]; addresses: string[] }> {
  const users = Array.from({ length: LOAD }, (_, i) => system.users.createUser({ name: `Replica ${i}`, email: `${prefix}-user-${i}@example.com`, idempotencyKey: `${prefix}-user-${i}` }));
  const requests = await Promise.all(Array.from({ length: LOAD }, async (_, i) => convertRequest(await smallPng(i), `${prefix}-conv-${i}@example.com`, `${prefix}-conv-${i}`)));
  const accepted = await Promise.all(requests.map((r) => system.users.convertImage(r)));
  await Promise.all(users);
  return {
    conversions: accepted.map((a) => a.conversion!.id),
    addresses: [...Array.from({ length: LOAD }, (_, i) => `${prefix}-user-${i}@example.com`), ...requests.map((r) => r.userEmail)],
  };
}

interface LedgerRow {
  id: string;
  task: string;
  state: string;
  attempts: number;
  errors: { attempt: number; error: string }[];
}

/** Waits until every job after `after` has finished, and returns them; the tasks run one job per step. */
async function finishedJobs(after: number): Promise<LedgerRow[]> {
  return eventually(
    async () => {
      const { rows } = await system.db.query<LedgerRow>(`select id, task, state, attempts, errors from mcsv_job.jobs where id > $1 order by id`, [after]);
      return rows.every((r) => r.state !== "pending") ? rows : undefined;
    },
    "every job of the test to finish",
    90_000,
  );
}

/** Which replica logged "job completed" for each job id. */
function completions(): Map<string, number[]> {
  const byJob = new Map<string, number[]>();
  for (const line of system.logs) {
    if (line.service !== "job" || line.json?.["message"] !== "job completed") continue;
    const id = String(line.json["job_id"]);
    byJob.set(id, [...(byJob.get(id) ?? []), line.replica]);
  }
  return byJob;
}

/** A counter's value summed over the series of `name` whose labels include `labels`, from one process's /metrics. */
async function counter(replica: ServiceProcess, name: string, labels: string): Promise<number> {
  const text = await (await fetch(`${replica.url}/metrics`)).text();
  return text
    .split("\n")
    .filter((l) => l.startsWith(`${name}{`) && l.includes(labels))
    .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(" ") + 1)), 0);
}

/** Exactly one PDF per conversion, under its own key. */
async function onePdfEach(ids: string[]): Promise<void> {
  const keys = await pdfKeys(system);
  for (const id of ids) expect(keys.filter((k) => k.includes(id))).toEqual([`pdfs/${id}.pdf`]);
}

test("two job replicas share the queue: both run jobs, every job completes exactly once", async () => {
  const after = await lastJobId();
  system.gate.hold();
  const { conversions, addresses } = await mixedLoad("both");
  // One replica holds at most CONCURRENCY conversions while ImageMagick is held; the other must take the rest.
  await eventually(async () => ((await convertsHeld()).every((n) => n > 0) ? true : undefined), "both replicas to hold conversions");
  system.gate.release();

  await allSucceeded(system, conversions);
  await onePdfEach(conversions);
  await exactlyOneEmailEach(system, addresses);

  const jobs = await finishedJobs(after);
  // A convert_image and a send_email per conversion, a send_email per user (and whatever else the steps enqueue).
  expect(jobs.length).toBeGreaterThanOrEqual(3 * LOAD);
  expect(jobs.filter((j) => j.state !== "completed" || j.attempts !== 1 || j.errors.length > 0)).toEqual([]);
  // Each job ran to its end once, on one replica; both replicas ran jobs.
  const done = completions();
  expect(jobs.filter((j) => done.get(j.id)?.length !== 1).map((j) => ({ id: j.id, task: j.task, replicas: done.get(j.id) }))).toEqual([]);
  const ranBy = new Set(jobs.map((j) => done.get(j.id)![0]));
  expect([...ranBy].sort()).toEqual([0, 1]);
  for (const replica of replicas) expect(await counter(replica, "mcsv_job_attempts_total", 'outcome="completed"')).toBeGreaterThan(0);
  for (const replica of replicas) expect(await counter(replica, "mcsv_job_attempts_total", 'outcome="skipped"')).toBe(0);
});

test("SIGKILL of the replica the gateway does not call, with conversions in flight: the survivor recovers its jobs and all complete once", async () => {
  const after = await lastJobId();
  const [survivor, victim] = replicas as [ServiceProcess, ServiceProcess];
  system.gate.hold();
  const { conversions, addresses } = await mixedLoad("kill");
  await eventually(async () => ((await convertsHeld())[1]! > 0 ? true : undefined), "the doomed replica to hold conversions");
  const deadPools = await poolsOf(victim);
  expect(deadPools).toHaveLength(1);

  await system.stopProcess(victim, "SIGKILL");
  // The image service finishes the held conversions for a caller that is gone; their jobs run again on the survivor.
  system.gate.release();

  await allSucceeded(system, conversions);
  await onePdfEach(conversions);
  await exactlyOneEmailEach(system, addresses);

  const jobs = await finishedJobs(after);
  expect(jobs.length).toBeGreaterThanOrEqual(3 * LOAD);
  expect(jobs.filter((j) => j.state !== "completed")).toEqual([]);
  // The leases of the victim's attempts expired, and the survivor dispatched their jobs again (not after graphile's
  // 4-hour lock expiry), the abandoned attempt recorded and given back; no other job saw an error.
  const abandoned = jobs.filter((j) => j.errors.length > 0);
  expect(abandoned.length).toBeGreaterThanOrEqual(1);
  for (const job of abandoned) {
    expect(job.errors.map((e) => e.error)).toEqual(job.errors.map(() => expect.stringContaining(`lease expired (worker ${deadPools[0]} stopped renewing it`)));
    expect(job.attempts).toBe(job.errors.length);
  }
  expect(jobs.filter((j) => j.errors.length === 0 && j.attempts !== 1)).toEqual([]);

  // Each job ran to its end once; every job the victim abandoned, on the survivor.
  const done = completions();
  expect(jobs.filter((j) => done.get(j.id)?.length !== 1).map((j) => ({ id: j.id, task: j.task, replicas: done.get(j.id) }))).toEqual([]);
  expect(abandoned.filter((j) => done.get(j.id)![0] !== survivor.replica)).toEqual([]);
  const recovered = system.logs.filter((l) => l.service === "job" && l.json?.["message"] === "expired job leases found; their attempts are abandoned and the jobs dispatched again");
  expect(recovered.map((l) => l.replica)).toEqual(recovered.map(() => survivor.replica));
  expect(recovered.flatMap((l) => l.json!["dead_workers"] as string[])).toContain(deadPools[0]);
  // The dead pool's registration is gone, and the survivor still answers.
  const { rows: registered } = await system.db.query<{ id: string }>(`select id from mcsv_job.workers`);
  expect(registered.map((r) => r.id)).not.toContain(deadPools[0]);
  expect((await system.jobs.listJobs({ pageSize: 1 })).jobs).toHaveLength(1);
});
