/**
 * The life of a conversion after it is queued: NotifyImageConverted reports from the job service, WatchConversion
 * streams driven by LISTEN/NOTIFY (also across a lost listener connection, a client cancel and a server shutdown),
 * and the jobs its end causes (email, client notification, clean-up), each exactly once.
 */
import { Code, type Client } from "@connectrpc/connect";
import { ConversionState, UserService, type Conversion } from "@mcsv/sdk";
import { jobKeys } from "../../services/shared/tasks.js";
import { objectKeys } from "../../services/shared/storage.js";
import { TEST_TENANT } from "../support/credentials.js";
import { badFields, eventually, failure, image, metricValue, startGateway, startInfra, type Gateway, type Infra } from "./support.js";

let infra: Infra;
let gw: Gateway;
let png: Uint8Array;

beforeAll(async () => {
  infra = await startInfra();
  gw = await startGateway(infra, { CALLBACK_ALLOWED_HOSTS: "127.0.0.1:9" });
  png = await image("png");
});

afterAll(async () => {
  await gw?.stop();
  await infra?.stop();
});

afterEach(() => {
  infra.jobs.failing = false;
  expect(infra.jobs.invalid).toEqual([]);
});

async function queue(client: Client<typeof UserService> = gw.client, extra: { callbackUrl?: string; userEmail?: string } = {}): Promise<Conversion> {
  const { conversion } = await client.convertImage({ userEmail: extra.userEmail ?? "life@example.com", source: { case: "imageData", value: png }, filename: "cat.png", ...extra });
  return conversion!;
}

/** What the image worker does on success: stores the PDF, then reports. */
async function succeed(client: Client<typeof UserService>, id: string) {
  const pdf = new TextEncoder().encode("%PDF-1.7\n% test\n%%EOF\n");
  await gw.store.put(objectKeys.pdf(id), pdf, { contentType: "application/pdf" });
  return client.notifyImageConverted({
    conversionId: id,
    state: ConversionState.SUCCEEDED,
    pdfKey: objectKeys.pdf(id),
    inputSize: BigInt(png.byteLength),
    outputSize: BigInt(pdf.byteLength),
    width: 16,
    height: 16,
    durationMs: 42n,
  });
}

function completionJobs(id: string) {
  return {
    email: infra.jobs.calls.filter((c) => c.jobKey === jobKeys.conversionEmail(id)),
    notify: infra.jobs.calls.filter((c) => c.jobKey === jobKeys.pdfReady(id)),
  };
}

describe("WatchConversion", () => {
  test("streams QUEUED → PROCESSING → SUCCEEDED as NotifyImageConverted reports them, then ends", async () => {
    const { id } = await queue(gw.client, { callbackUrl: "http://127.0.0.1:9/hook" });
    const states: ConversionState[] = [];
    let last: Conversion | undefined;
    for await (const { conversion } of gw.client.watchConversion({ conversionId: id })) {
      states.push(conversion!.state);
      last = conversion;
      if (conversion!.state === ConversionState.QUEUED) {
        await gw.client.notifyImageConverted({ conversionId: id, state: ConversionState.PROCESSING });
      } else if (conversion!.state === ConversionState.PROCESSING) {
        await succeed(gw.client, id);
      }
    }
    expect(states).toEqual([ConversionState.QUEUED, ConversionState.PROCESSING, ConversionState.SUCCEEDED]);
    expect(last).toMatchObject({ outputSize: 22n, width: 16, height: 16, error: "" });
    // The download link lives PRESIGN_TTL_SECONDS from now, well before the PDF itself goes.
    const linkExpires = Number(last!.pdfUrlExpiresAt!.seconds) * 1000;
    expect(Math.abs(linkExpires - (Date.now() + gw.config.PRESIGN_TTL_SECONDS * 1000))).toBeLessThan(5_000);
    expect(linkExpires).toBeLessThanOrEqual(Number(last!.pdfExpiresAt!.seconds) * 1000);
    const pdf = await fetch(last!.pdfUrl);
    expect(pdf.status).toBe(200);
    expect(pdf.headers.get("content-disposition")).toContain("cat.pdf");
    expect(await pdf.text()).toContain("%PDF-1.7");

    const jobs = completionJobs(id);
    expect(jobs.email).toHaveLength(1);
    expect(jobs.email[0]!.args).toMatchObject({
      conversionId: id,
      request: {
        userEmail: "life@example.com",
        emailType: "EMAIL_TYPE_CONVERSION_COMPLETE",
        idempotencyKey: `conversion_complete:${id}`,
        variables: { filename: "cat.png", state: "succeeded", conversion_id: id },
      },
    });
    // The PDF's key, never a link: the job service presigns it when it sends the email and the notification.
    const finishedAt = (await gw.db.query<{ finished_at: Date }>("select finished_at from mcsv_user.conversions where id = $1", [id])).rows[0]!.finished_at;
    // Timestamps as RFC 3339 (protobuf JSON: no fraction when the milliseconds are 0).
    const pdfObject = { key: objectKeys.pdf(id), filename: "cat.pdf", expiresAt: expect.any(String), linkedAt: expect.any(String) };
    for (const job of [jobs.email[0]!, jobs.notify[0]!]) {
      expect(job.args["pdf"]).toEqual(pdfObject);
      expect(Date.parse((job.args["pdf"] as { linkedAt: string }).linkedAt)).toBe(finishedAt.getTime());
    }
    for (const job of [...jobs.email, ...jobs.notify]) expect(JSON.stringify(job.args)).not.toMatch(/X-Amz-|pdf_url|pdfUrl/);
    const { rows } = await gw.db.query<{ args: unknown }>("select args from mcsv_user.outbox where job_key like $1", [`%${id}%`]);
    expect(rows.length).toBeGreaterThanOrEqual(2);
    for (const { args } of rows) expect(JSON.stringify(args)).not.toMatch(/X-Amz-|pdf_url|pdfUrl/);

    expect(jobs.notify).toHaveLength(1);
    expect(jobs.notify[0]!.args).toMatchObject({
      callbackUrl: "http://127.0.0.1:9/hook",
      // Whose webhook secrets sign the callback: the conversion's tenant.
      tenant: TEST_TENANT,
      pdfReady: { conversion: { id, state: "CONVERSION_STATE_SUCCEEDED", filename: "cat.png", userEmail: "life@example.com" } },
    });
    // The gateway deleted the original itself: no job for it.
    expect(await gw.store.head(objectKeys.original(id))).toBeUndefined();
    expect(infra.jobs.calls.filter((c) => c.task === "cleanup_storage" && JSON.stringify(c.args).includes(id))).toEqual([]);
    expect(await metricValue(gw.service.url, "mcsv_conversion_results_total", { state: "succeeded" })).toBe(1);
  });

  test("several watchers of one conversion all follow it, and a terminal conversion is sent once", async () => {
    const { id } = await queue();
    const watch = async () => {
      const states: ConversionState[] = [];
      for await (const { conversion } of gw.client.watchConversion({ conversionId: id })) states.push(conversion!.state);
      return states;
    };
    const watchers = [watch(), watch(), watch()];
    await eventually(async () => ((await metricValue(gw.service.url, "mcsv_conversion_watchers")) === 3 ? true : undefined), "three watchers");
    await gw.client.notifyImageConverted({ conversionId: id, state: ConversionState.FAILED, error: "the image is corrupt" });
    for (const states of await Promise.all(watchers)) expect(states.at(-1)).toBe(ConversionState.FAILED);
    expect(await watch()).toEqual([ConversionState.FAILED]);
    await eventually(async () => ((await metricValue(gw.service.url, "mcsv_conversion_watchers")) === 0 ? true : undefined), "no watchers left");
  });

  test("not_found and invalid_argument", async () => {
    const drain = async (conversionId: string) => {
      for await (const _ of gw.client.watchConversion({ conversionId })) void _;
    };
    expect((await failure(drain("6f1c2b1e-0000-4000-8000-000000000000"))).code).toBe(Code.NotFound);
    expect(badFields(await failure(drain("nope")))).toEqual(["conversionId"]);
  });

  test("a client that cancels ends its watch on the server", async () => {
    const { id } = await queue();
    const abort = new AbortController();
    const states: ConversionState[] = [];
    const watching = (async () => {
      for await (const { conversion } of gw.client.watchConversion({ conversionId: id }, { signal: abort.signal })) {
        states.push(conversion!.state);
        abort.abort();
      }
    })();
    expect((await failure(watching)).code).toBe(Code.Canceled);
    expect(states).toEqual([ConversionState.QUEUED]);
    await eventually(async () => ((await metricValue(gw.service.url, "mcsv_conversion_watchers")) === 0 ? true : undefined), "the server-side watch to end");
  });

  test("a lost LISTEN connection is re-established and watchers catch up", async () => {
    const { id } = await queue();
    const states: ConversionState[] = [];
    let killed = false;
    for await (const { conversion } of gw.client.watchConversion({ conversionId: id })) {
      states.push(conversion!.state);
      if (!killed) {
        killed = true;
        // Postgres drops the listener (a failover or restart looks the same to the service).
        const { rows } = await gw.db.query("select pg_terminate_backend(pid) as done from pg_stat_activity where application_name = 'user-svc-listen'");
        expect(rows.length).toBeGreaterThanOrEqual(1);
        await gw.client.notifyImageConverted({ conversionId: id, state: ConversionState.PROCESSING });
        await succeed(gw.client, id);
      }
    }
    expect(states[0]).toBe(ConversionState.QUEUED);
    expect(states.at(-1)).toBe(ConversionState.SUCCEEDED);
    // Listening again: a new watch sees the next change through a notification.
    const next = await queue();
    const seen: ConversionState[] = [];
    for await (const { conversion } of gw.client.watchConversion({ conversionId: next.id })) {
      seen.push(conversion!.state);
      if (conversion!.state === ConversionState.QUEUED) await gw.client.notifyImageConverted({ conversionId: next.id, state: ConversionState.FAILED, error: "x" });
    }
    expect(seen).toEqual([ConversionState.QUEUED, ConversionState.FAILED]);
  });

  test("a server shutdown ends open watches with unavailable", async () => {
    const second = await startGateway(infra);
    let stopped = false;
    try {
      const { id } = await queue(second.client);
      const states: ConversionState[] = [];
      const watching = (async () => {
        for await (const { conversion } of second.client.watchConversion({ conversionId: id })) {
          states.push(conversion!.state);
          if (!stopped) {
            stopped = true;
            void second.stop();
          }
        }
      })();
      const error = await failure(watching);
      expect(error.code).toBe(Code.Unavailable);
      expect(states).toEqual([ConversionState.QUEUED]);
    } finally {
      if (!stopped) await second.stop();
    }
  });
});

describe("NotifyImageConverted", () => {
  test("is idempotent: terminal states never change and their jobs are enqueued once", async () => {
    const { id } = await queue();
    expect((await gw.client.notifyImageConverted({ conversionId: id, state: ConversionState.PROCESSING, inputSize: 123n })).conversion).toMatchObject({
      state: ConversionState.PROCESSING,
      inputSize: 123n,
    });
    // A repeated PROCESSING (a retried job) changes nothing.
    const processing = await gw.client.getConversion({ conversionId: id });
    expect((await gw.client.notifyImageConverted({ conversionId: id, state: ConversionState.PROCESSING })).conversion).toEqual(processing.conversion);

    const done = (await succeed(gw.client, id)).conversion!;
    expect(done.state).toBe(ConversionState.SUCCEEDED);
    const calls = infra.jobs.calls.length;
    const withoutLink = (c: Conversion) => ({ ...c, pdfUrl: "", pdfUrlExpiresAt: undefined });
    // The same terminal report again returns the conversion as it is.
    expect(withoutLink((await succeed(gw.client, id)).conversion!)).toEqual(withoutLink(done));
    // Any other report cannot move it out of its terminal state (a retried convert_image job stops on this).
    for (const report of [
      gw.client.notifyImageConverted({ conversionId: id, state: ConversionState.FAILED, error: "late failure" }),
      gw.client.notifyImageConverted({ conversionId: id, state: ConversionState.PROCESSING }),
    ]) {
      expect((await failure(report)).code).toBe(Code.FailedPrecondition);
    }
    expect(withoutLink((await gw.client.getConversion({ conversionId: id })).conversion!)).toEqual(withoutLink(done));
    // Concurrent duplicates of the terminal report are just as harmless.
    await Promise.all(Array.from({ length: 5 }, () => succeed(gw.client, id)));
    expect(infra.jobs.calls.length).toBe(calls);
    const jobs = completionJobs(id);
    expect([jobs.email.length, jobs.notify.length]).toEqual([1, 1]);
    expect(jobs.notify[0]!.args["callbackUrl"]).toBeUndefined();
  });

  test("a failure records the error, emails it, notifies the client and keeps the original", async () => {
    await gw.client.createUser({ name: "Failing Fred", email: "fred@example.com" });
    const { id } = await queue(gw.client, { userEmail: "fred@example.com" });
    const { conversion } = await gw.client.notifyImageConverted({ conversionId: id, state: ConversionState.FAILED, error: "unsupported colour space" });
    expect(conversion).toMatchObject({ state: ConversionState.FAILED, error: "unsupported colour space", pdfUrl: "" });
    const jobs = completionJobs(id);
    expect(jobs.email).toHaveLength(1);
    expect(jobs.email[0]!.args["request"]).toMatchObject({
      userName: "Failing Fred",
      variables: { state: "failed", error: "unsupported colour space", filename: "cat.png" },
    });
    expect((jobs.email[0]!.args["request"] as { variables: Record<string, string> }).variables["pdf_url"]).toBeUndefined();
    expect(jobs.email[0]!.args["pdf"]).toBeUndefined();
    expect(jobs.notify[0]!.args["pdf"]).toBeUndefined();
    expect(jobs.notify[0]!.args).toMatchObject({ pdfReady: { conversion: { id, state: "CONVERSION_STATE_FAILED", error: "unsupported colour space" } } });
    expect(await gw.store.head(objectKeys.original(id))).toBeDefined();
  });

  test("the outbox delivers the completion jobs once the job service is back", async () => {
    const { id } = await queue();
    infra.jobs.failing = true;
    expect((await succeed(gw.client, id)).conversion!.state).toBe(ConversionState.SUCCEEDED);
    expect(infra.jobs.jobs("send_email", jobKeys.conversionEmail(id))).toHaveLength(0);
    infra.jobs.failing = false;
    await eventually(() => {
      const accepted = [jobKeys.conversionEmail(id), jobKeys.pdfReady(id)].map((key) => infra.jobs.accepted.filter((j) => j.jobKey === key).length);
      return accepted.every((n) => n === 1) ? true : undefined;
    }, "the completion jobs");
  });

  test("validates the report", async () => {
    const { id } = await queue();
    expect(badFields(await failure(gw.client.notifyImageConverted({ conversionId: id, state: ConversionState.QUEUED })))).toEqual(["state"]);
    expect(badFields(await failure(gw.client.notifyImageConverted({ conversionId: id, state: ConversionState.UNSPECIFIED })))).toEqual(["state"]);
    // The gateway derives the PDF's key: it refuses any other, so a caller cannot have it presign another object.
    for (const pdfKey of ["originals/someone-else", "pdfs/6f1c2b1e-0000-4000-8000-000000000000.pdf", "../secrets"]) {
      expect(badFields(await failure(gw.client.notifyImageConverted({ conversionId: id, state: ConversionState.SUCCEEDED, pdfKey })))).toEqual(["pdfKey"]);
    }
    expect(badFields(await failure(gw.client.notifyImageConverted({ conversionId: "x", state: ConversionState.PROCESSING, outputSize: -1n })).then((e) => e)).sort()).toEqual([
      "conversionId",
      "outputSize",
    ]);
    expect((await failure(gw.client.notifyImageConverted({ conversionId: "6f1c2b1e-0000-4000-8000-000000000000", state: ConversionState.PROCESSING }))).code).toBe(Code.NotFound);
    expect((await gw.client.getConversion({ conversionId: id })).conversion!.state).toBe(ConversionState.QUEUED);
  });

  test("a success reported without a key is stored under the key the gateway derives", async () => {
    const { id } = await queue();
    await gw.client.notifyImageConverted({ conversionId: id, state: ConversionState.SUCCEEDED, outputSize: 10n });
    const { rows } = await gw.db.query<{ pdf_key: string }>("select pdf_key from mcsv_user.conversions where id = $1", [id]);
    expect(rows[0]!.pdf_key).toBe(objectKeys.pdf(id));
  });
});

test("the outbox relay hands jobs over typed (EnqueueJobRequest.payload); a legacy row goes as the deprecated task and args", async () => {
  const { id } = await queue();
  await succeed(gw.client, id);
  const keys = [jobKeys.convertImage(id), jobKeys.conversionEmail(id), jobKeys.pdfReady(id)];
  await eventually(() => (keys.every((key) => infra.jobs.accepted.some((j) => j.jobKey === key)) ? true : undefined), "the conversion's jobs");
  expect(infra.jobs.untyped.filter((j) => keys.includes(j.jobKey))).toEqual([]);

  // A row written before the upgrade, with a link in it: not a ConvertImageTask exactly, so it goes untyped, and the
  // job service upgrades it.
  const legacyKey = `convert_image:legacy-${id}`;
  const legacy = {
    request: { conversionId: id, imageUrl: "http://127.0.0.1:9000/mcsv/originals/x?X-Amz-Signature=abc", inputFormat: "png" },
    objectKey: `originals/${id}`,
    imageUrlExpiresAt: "2026-11-30T00:00:00.000Z",
  };
  await gw.db.query("insert into mcsv_user.outbox (tenant, task, job_key, args) values ($1, 'convert_image', $2, $3)", [TEST_TENANT, legacyKey, JSON.stringify(legacy)]);
  await eventually(() => (infra.jobs.accepted.some((j) => j.jobKey === legacyKey) ? true : undefined), "the legacy row delivered");
  expect(infra.jobs.untyped.map((j) => j.jobKey)).toContain(legacyKey);
});
