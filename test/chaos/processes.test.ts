/**
 * Faults of the service processes themselves, on the real system: a SIGKILLed job service (its jobs are found by
 * the restarted one through the worker heartbeats), a SIGKILLed image service mid-conversion, and SIGTERM under load
 * (gateway, then job service). Every test ends the same way: everything accepted finishes, exactly once.
 */
import { Code } from "@connectrpc/connect";
import { JobState } from "@mcsv/sdk";
import { allSucceeded, convertRequest, eventually, exactlyOneEmailEach, imageMagickStarted, jobByKey, outcomeOf, pdfKeys, smallPng, startChaosSystem, type ChaosSystem } from "./support.js";

let system: ChaosSystem;
/** Every conversion the tests of this file made, to check the bucket holds nothing else. */
const conversionIds = new Set<string>();

beforeAll(async () => {
  system = await startChaosSystem();
}, 120_000);

afterAll(async () => {
  system?.gate.release();
  await system?.close();
});

afterEach(() => system.gate.release());

/** Exactly one PDF per conversion, under its own key, and no PDF of any other conversion. */
async function onePdfEach(ids: string[]): Promise<void> {
  const keys = await pdfKeys(system);
  for (const id of ids) expect(keys.filter((k) => k.includes(id))).toEqual([`pdfs/${id}.pdf`]);
  expect(keys.filter((k) => ![...conversionIds].some((id) => k === `pdfs/${id}.pdf`))).toEqual([]);
}

test("SIGKILL of the job service with 30 conversions in flight: after a restart all succeed, one PDF and one email each", async () => {
  const before = system.gate.started();
  system.gate.hold();
  const requests = await Promise.all(Array.from({ length: 30 }, async (_, i) => convertRequest(await smallPng(i), `kill-job-${i}@example.com`, `kill-job-${i}`)));
  const accepted = await Promise.all(requests.map((r) => system.users.convertImage(r)));
  const ids = accepted.map((a) => a.conversion!.id);
  ids.forEach((id) => conversionIds.add(id));

  // Conversions are inside ImageMagick (held there), so the job service has attempts running when it dies.
  await imageMagickStarted(system, before);
  const { rows: pools } = await system.db.query<{ id: string }>(`select id from mcsv_job.workers`);
  expect(pools).toHaveLength(1);
  await system.stopService("job", "SIGKILL");
  // The image service finishes the held conversions for a caller that is gone: their PDFs are written once already.
  system.gate.release();
  await system.startService("job");

  await allSucceeded(system, ids);
  await onePdfEach(ids);
  await exactlyOneEmailEach(system, requests.map((r) => r.userEmail));

  // The dead process's leases expired and the new process dispatched their jobs again (not after graphile's 4-hour
  // lock expiry), the abandoned attempt recorded in the ledger and given back; the dead pool's registration is gone.
  const convertJobs = await Promise.all(ids.map((id) => jobByKey(system, "convert_image", `convert_image:${id}`)));
  expect(convertJobs.map((j) => j?.state)).toEqual(ids.map(() => JobState.COMPLETED));
  const abandoned = convertJobs.filter((j) => j!.errors.some((e) => e.error.includes(`lease expired (worker ${pools[0]!.id} stopped renewing it`)));
  expect(abandoned.length).toBeGreaterThanOrEqual(1);
  for (const job of abandoned) expect(job!.attempts).toBe(job!.errors.length);
  const { rows: after } = await system.db.query<{ id: string }>(`select id from mcsv_job.workers`);
  expect(after.map((r) => r.id)).not.toContain(pools[0]!.id);
});

test("SIGKILL of the image service mid-conversion: the job retries and the conversion completes once", async () => {
  const before = system.gate.started();
  system.gate.hold();
  const request = convertRequest(await smallPng(100), "kill-image@example.com", "kill-image");
  const { conversion } = await system.users.convertImage(request);
  conversionIds.add(conversion!.id);
  await imageMagickStarted(system, before);

  await system.stopService("image", "SIGKILL");
  system.gate.release();
  await system.startService("image");

  await allSucceeded(system, [conversion!.id]);
  await onePdfEach([conversion!.id]);
  await exactlyOneEmailEach(system, [request.userEmail]);
  const job = await jobByKey(system, "convert_image", `convert_image:${conversion!.id}`);
  expect(job).toMatchObject({ state: JobState.COMPLETED });
  expect(job!.attempts).toBeGreaterThanOrEqual(2);
  expect(job!.errors.length).toBe(job!.attempts - 1);
});

/** One request of the load, sent until it was answered OK; `refusals` are the failed tries before that. */
interface Sent {
  kind: "user" | "conversion";
  key: string;
  email: string;
  id: string;
  refusals: { code: Code; message: string }[];
}

/**
 * A steady stream of requests from three clients, alternating CreateUser and ConvertImage (each with its own
 * address and idempotency key). A client whose request is refused backs off and sends it again, as a client should,
 * until it is answered OK. Once 9 requests were answered, `fault` runs while the stream goes on; the stream ends 6
 * requests after the fault is over.
 */
async function load(prefix: string, fault: () => Promise<void>): Promise<Sent[]> {
  const sent: Sent[] = [];
  let next = 0;
  let phase: "before" | "during" | "after" = "before";
  let answeredAfter = 0;
  let faulted: Promise<void> | undefined;
  await Promise.all(
    Array.from({ length: 3 }, async () => {
      while (!(phase === "after" && answeredAfter >= 6)) {
        const i = next++;
        const key = `${prefix}-${i}`;
        const email = `${key}@example.com`;
        const kind = i % 2 === 0 ? "user" : "conversion";
        const refusals: Sent["refusals"] = [];
        for (;;) {
          const outcome =
            kind === "user"
              ? await outcomeOf(system.users.createUser({ name: `Load ${i}`, email, idempotencyKey: key }).then((r) => r.user!.id))
              : await outcomeOf(system.users.convertImage(convertRequest(await smallPng(i), email, key)).then((r) => r.conversion!.id));
          if (outcome.ok) {
            sent.push({ kind, key, email, id: outcome.value, refusals });
            if (kind === "conversion") conversionIds.add(outcome.value);
            break;
          }
          refusals.push({ code: outcome.code, message: outcome.message });
          await new Promise((r) => setTimeout(r, 250));
        }
        if (phase === "after") answeredAfter++;
        if (phase === "before" && sent.length >= 9) {
          phase = "during";
          faulted = fault().then(() => void (phase = "after"));
        }
        await new Promise((r) => setTimeout(r, 300));
      }
    }),
  );
  await faulted;
  return sent;
}

/** Every request answered OK is finished, exactly once; every refusal before that was unavailable. */
async function noneLost(sent: Sent[]): Promise<void> {
  expect(sent.flatMap((s) => s.refusals).filter((r) => r.code !== Code.Unavailable)).toEqual([]);
  for (const s of sent.filter((x) => x.kind === "user")) expect((await system.users.getUser({ id: s.id })).user?.email).toBe(s.email);
  const conversions = sent.filter((s) => s.kind === "conversion").map((s) => s.id);
  await allSucceeded(system, conversions);
  await onePdfEach(conversions);
  // One welcome email per user, one conversion-complete email per conversion (each address is used once).
  await exactlyOneEmailEach(system, sent.map((s) => s.email));
}

test("SIGTERM of the gateway under load: every OK answer is kept, every refusal is unavailable", async () => {
  const sent = await load("term-user", async () => {
    await system.stopService("user", "SIGTERM");
    await system.startService("user");
  });
  // Requests were refused while the gateway was away, and answered before and after.
  expect(sent.some((s) => s.refusals.length > 0)).toBe(true);
  await noneLost(sent);
});

test("SIGTERM of the job service under load: the gateway keeps accepting, and everything accepted finishes once", async () => {
  const sent = await load("term-job", async () => {
    await system.stopService("job", "SIGTERM");
    await system.startService("job");
  });
  // The gateway does not depend on the job service to accept work (the outbox holds it).
  expect(sent.flatMap((s) => s.refusals)).toEqual([]);
  await noneLost(sent);
  // And the outbox has handed everything to the job service.
  await eventually(async () => {
    const { rows } = await system.db.query<{ n: string }>(`select count(*) as n from mcsv_user.outbox where sent_at is null`);
    return Number(rows[0]!.n) === 0 ? true : undefined;
  }, "an empty outbox");
});
