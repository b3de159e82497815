/**
 * Typed tasks: EnqueueJobRequest.payload (a oneof of SendEmailTask, ConvertImageTask, NotifyClientTask,
 * CleanupStorageTask, ReportConversionFailedTask) against the real job service. Each task enqueued through the oneof
 * runs as before and is reported with the same oneof (and the deprecated task and args, still filled); the
 * deprecated form still works; a task or args that disagree with the payload are refused; every rule on a payload
 * names its field; and a plain Connect JSON request (as buf curl sends it) is accepted.
 */
import { create, equals, toJson, type DescMessage } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import {
  CleanupStorageTaskSchema,
  ConversionState,
  ConvertImageTaskSchema,
  EmailType,
  ImageServiceConvertImageRequestSchema,
  JobState,
  NotifyClientTaskSchema,
  NotifyEmailSentRequestSchema,
  PdfObjectSchema,
  ReportConversionFailedTaskSchema,
  SendEmailRequestSchema,
  SendEmailTaskSchema,
  type EnqueueJobRequest,
  type Job,
} from "@mcsv/sdk";
import { TASK_PAYLOADS, taskOfCase, type TypedTask } from "../../services/shared/tasks.js";
import { TEST_INTERNAL_TOKEN } from "../support/credentials.js";
import { fieldsOf, type JobTestEnv, rejection, startJobTestEnv, eventually } from "./support.js";

let env: JobTestEnv;

beforeAll(async () => {
  env = await startJobTestEnv({}, { s3: true });
});

afterAll(async () => {
  await env?.close();
});

beforeEach(() => env.stubs.reset());

const HOUR = 3_600_000;

const welcomeRequest = (key: string) =>
  create(SendEmailRequestSchema, { userEmail: "ada@example.com", userName: "Ada", emailType: EmailType.WELCOME, idempotencyKey: key });

const pdfObject = (id: string) =>
  create(PdfObjectSchema, { key: `pdfs/${id}.pdf`, filename: `${id}.pdf`, expiresAt: timestampFromDate(new Date(Date.now() + 48 * HOUR)), linkedAt: timestampFromDate(new Date()) });

/** The job reports the payload it was given: the same oneof case and message, and the deprecated task and args. */
function expectReports(job: Job | undefined, sent: TypedTask): void {
  const task = taskOfCase(sent.case);
  const schema = TASK_PAYLOADS[task].schema as DescMessage;
  expect(job?.payload.case).toBe(sent.case);
  expect(equals(schema, job!.payload.value as never, sent.value as never)).toBe(true);
  expect(job!.task).toBe(task);
  expect(job!.args).toEqual(toJson(schema, sent.value as never));
}

/** Every way the service reports a job: EnqueueJob's answer, GetJobStatus and ListJobs. */
async function expectReportedEverywhere(enqueued: Job | undefined, sent: TypedTask): Promise<Job> {
  expectReports(enqueued, sent);
  const status = (await env.jobs.getJobStatus({ id: enqueued!.id })).job!;
  expectReports(status, sent);
  const listed = (await env.jobs.listJobs({ task: enqueued!.task, pageSize: 100 })).jobs.find((j) => j.id === enqueued!.id);
  expectReports(listed, sent);
  return status;
}

describe("each task enqueued through the oneof runs as before and is reported with the same oneof", () => {
  test("send_email", async () => {
    const payload: TypedTask = {
      case: "sendEmail",
      value: create(SendEmailTaskSchema, { request: welcomeRequest("typed-mail"), conversionId: "conv-typed-mail", pdf: pdfObject("conv-typed-mail") }),
    };
    const { job } = await env.jobs.enqueueJob({ payload, jobKey: "typed:send_email" });
    await expectReportedEverywhere(job, payload);
    expectReports((await env.waitForState(job!.id, JobState.COMPLETED)), payload);
    const sent = env.stubs.calls.sendEmail.find((r) => r.idempotencyKey === "typed-mail")!;
    expect(sent).toMatchObject({ userEmail: "ada@example.com", emailType: EmailType.WELCOME });
    expect(new URL(sent.variables["pdf_url"]!).pathname).toBe("/mcsv/pdfs/conv-typed-mail.pdf");
    // Its follow-up (the client's notification) is typed too.
    const notified = await eventually(async () => env.stubs.calls.notifyEmailSent, (calls) => calls.length > 0);
    expect(notified[0]).toMatchObject({ conversionId: "conv-typed-mail", success: true });
    const followUp = (await env.jobs.listJobs({ task: "notify_client", pageSize: 100 })).jobs.find((j) => j.jobKey === "notify_client:email_sent:typed-mail")!;
    expect(followUp.payload.case).toBe("notifyClient");
  });

  test("convert_image", async () => {
    const payload: TypedTask = {
      case: "convertImage",
      value: create(ConvertImageTaskSchema, {
        request: create(ImageServiceConvertImageRequestSchema, { conversionId: "conv-typed", inputFormat: "png" }),
        objectKey: "originals/conv-typed",
      }),
    };
    const { job } = await env.jobs.enqueueJob({ payload });
    expect(job!.maxAttempts).toBe(5);
    await expectReportedEverywhere(job, payload);
    await env.waitForState(job!.id, JobState.COMPLETED);
    expect(env.stubs.calls.convertImage[0]).toMatchObject({ conversionId: "conv-typed", inputFormat: "png" });
    expect(new URL(env.stubs.calls.convertImage[0]!.imageUrl).pathname).toBe("/mcsv/originals/conv-typed");
    const reports = env.stubs.calls.notifyImageConverted.filter((r) => r.conversionId === "conv-typed");
    expect(reports.map((r) => r.state)).toEqual([ConversionState.SUCCEEDED]);
  });

  test("convert_image: a link in the typed request is dropped before it is stored", async () => {
    const payload: TypedTask = {
      case: "convertImage",
      value: create(ConvertImageTaskSchema, {
        request: create(ImageServiceConvertImageRequestSchema, { conversionId: "conv-linked", imageUrl: "https://s3.example/x?X-Amz-Signature=abc", inputFormat: "png" }),
        objectKey: "originals/conv-linked",
      }),
    };
    const { job } = await env.jobs.enqueueJob({ payload, runAt: timestampFromDate(new Date(Date.now() + HOUR)) });
    expect(JSON.stringify(job!.args)).not.toContain("X-Amz");
    expect(job!.payload.case === "convertImage" && job!.payload.value.request?.imageUrl).toBe("");
    await env.jobs.cancelJob({ id: job!.id });
  });

  test("notify_client", async () => {
    const event = create(NotifyEmailSentRequestSchema, { userEmail: "ada@example.com", emailType: EmailType.WELCOME, emailId: "e-typed", success: true, message: "sent" });
    const payload: TypedTask = { case: "notifyClient", value: create(NotifyClientTaskSchema, { event: { case: "emailSent", value: event }, tenant: "acme" }) };
    const { job } = await env.jobs.enqueueJob({ payload });
    await expectReportedEverywhere(job, payload);
    await env.waitForState(job!.id, JobState.COMPLETED);
    expect(env.stubs.calls.notifyEmailSent.find((r) => r.emailId === "e-typed")).toMatchObject({ userEmail: "ada@example.com", success: true });
  });

  test("cleanup_storage", async () => {
    const store = env.s3!.store;
    await store.put("originals/typed-clean", new Uint8Array([1, 2, 3]), { contentType: "image/png" });
    const payload: TypedTask = { case: "cleanupStorage", value: create(CleanupStorageTaskSchema, { target: { case: "objectKey", value: "originals/typed-clean" } }) };
    const { job } = await env.jobs.enqueueJob({ payload });
    await expectReportedEverywhere(job, payload);
    await env.waitForState(job!.id, JobState.COMPLETED);
    expect(await store.head("originals/typed-clean")).toBeUndefined();
  });

  test("report_conversion_failed", async () => {
    const payload: TypedTask = { case: "reportConversionFailed", value: create(ReportConversionFailedTaskSchema, { conversionId: "conv-typed-failed", error: "it broke" }) };
    const { job } = await env.jobs.enqueueJob({ payload });
    expect(job!.maxAttempts).toBe(25);
    await expectReportedEverywhere(job, payload);
    await env.waitForState(job!.id, JobState.COMPLETED);
    expect(env.stubs.calls.notifyImageConverted.find((r) => r.conversionId === "conv-typed-failed")).toMatchObject({ state: ConversionState.FAILED, error: "it broke" });
  });
});

test("the deprecated task and args still work, and the job is reported with the oneof as well", async () => {
  const args = { request: { userEmail: "ada@example.com", userName: "Ada", emailType: "EMAIL_TYPE_WELCOME", idempotencyKey: "untyped-mail" } };
  const { job } = await env.jobs.enqueueJob({ task: "send_email", args });
  expect(job!.task).toBe("send_email");
  expect(job!.args).toEqual(args);
  expectReports(job, { case: "sendEmail", value: create(SendEmailTaskSchema, { request: welcomeRequest("untyped-mail") }) });
  await env.waitForState(job!.id, JobState.COMPLETED);
  expect(env.stubs.calls.sendEmail.some((r) => r.idempotencyKey === "untyped-mail")).toBe(true);
});

test("a task or args that disagree with the oneof are invalid_argument, naming the fields; agreeing ones are accepted", async () => {
  const value = create(SendEmailTaskSchema, { request: welcomeRequest("both-forms") });
  const payload: TypedTask = { case: "sendEmail", value };
  const later = () => timestampFromDate(new Date(Date.now() + HOUR));

  const task = await rejection(env.jobs.enqueueJob({ payload, task: "convert_image" }));
  expect(task.code).toBe(Code.InvalidArgument);
  expect(fieldsOf(task)).toEqual(["task"]);
  expect(task.rawMessage).toContain("sendEmail");

  const args = await rejection(env.jobs.enqueueJob({ payload, task: "send_email", args: { request: { userEmail: "eve@example.com" } } }));
  expect(args.code).toBe(Code.InvalidArgument);
  expect(fieldsOf(args)).toEqual(["args"]);

  const both = await rejection(env.jobs.enqueueJob({ payload, task: "cleanup_storage", args: { sweep: true } }));
  expect(fieldsOf(both).sort()).toEqual(["args", "task"]);

  const agreeing = await env.jobs.enqueueJob({ payload, task: "send_email", args: toJson(SendEmailTaskSchema, value) as never, runAt: later() });
  expectReports(agreeing.job, payload);
  await env.jobs.cancelJob({ id: agreeing.job!.id });

  const neither = await rejection(env.jobs.enqueueJob({ jobKey: "nothing" }));
  expect(neither.code).toBe(Code.InvalidArgument);
  expect(fieldsOf(neither)).toEqual(["payload"]);
});

describe("every rule on a typed payload names its field", () => {
  const request = welcomeRequest("rules");
  const bad: Array<[string, EnqueueJobRequest["payload"], string[]]> = [
    ["send_email without request", { case: "sendEmail", value: create(SendEmailTaskSchema, {}) }, ["sendEmail.request"]],
    [
      "send_email with a pdf key outside pdfs/ and no filename",
      { case: "sendEmail", value: create(SendEmailTaskSchema, { request, pdf: create(PdfObjectSchema, { key: "originals/x", filename: "" }) }) },
      ["sendEmail.pdf.filename", "sendEmail.pdf.key"],
    ],
    [
      "send_email with a filename too long",
      { case: "sendEmail", value: create(SendEmailTaskSchema, { request, pdf: create(PdfObjectSchema, { key: "pdfs/x.pdf", filename: "f".repeat(256) }) }) },
      ["sendEmail.pdf.filename"],
    ],
    ["convert_image without request, its key outside originals/", { case: "convertImage", value: create(ConvertImageTaskSchema, { objectKey: "pdfs/x.pdf" }) }, ["convertImage.objectKey", "convertImage.request"]],
    ["notify_client without an event", { case: "notifyClient", value: create(NotifyClientTaskSchema, {}) }, ["notifyClient"]],
    [
      "notify_client with a bad callback URL, tenant and pdf",
      {
        case: "notifyClient",
        value: create(NotifyClientTaskSchema, {
          event: { case: "emailSent", value: create(NotifyEmailSentRequestSchema, {}) },
          callbackUrl: "not a url",
          tenant: "t".repeat(64),
          pdf: create(PdfObjectSchema, { key: "pdfs/../x", filename: "x.pdf" }),
        }),
      },
      ["notifyClient.callbackUrl", "notifyClient.pdf.key", "notifyClient.tenant"],
    ],
    ["cleanup_storage without a target", { case: "cleanupStorage", value: create(CleanupStorageTaskSchema, {}) }, ["cleanupStorage"]],
    ["cleanup_storage of a key it does not own", { case: "cleanupStorage", value: create(CleanupStorageTaskSchema, { target: { case: "objectKey", value: "backups/db.dump" } }) }, ["cleanupStorage.objectKey"]],
    ["cleanup_storage with sweep false", { case: "cleanupStorage", value: create(CleanupStorageTaskSchema, { target: { case: "sweep", value: false } }) }, ["cleanupStorage.sweep"]],
    ["report_conversion_failed empty", { case: "reportConversionFailed", value: create(ReportConversionFailedTaskSchema, {}) }, ["reportConversionFailed.conversionId", "reportConversionFailed.error"]],
    ["report_conversion_failed with a long error", { case: "reportConversionFailed", value: create(ReportConversionFailedTaskSchema, { conversionId: "c", error: "e".repeat(2_001) }) }, ["reportConversionFailed.error"]],
  ];
  test.each(bad)("%s", async (_name, payload, fields) => {
    const error = await rejection(env.jobs.enqueueJob({ payload }));
    expect(error.code).toBe(Code.InvalidArgument);
    expect(fieldsOf(error).sort()).toEqual(fields);
  });

  test("the deprecated form names the same fields under args", async () => {
    const error = await rejection(env.jobs.enqueueJob({ task: "send_email", args: { request: {}, pdf: { key: "originals/x", filename: "x.pdf" } } }));
    expect(fieldsOf(error)).toEqual(["args.pdf.key"]);
    const cleanup = await rejection(env.jobs.enqueueJob({ task: "cleanup_storage", args: { sweep: false } }));
    expect(fieldsOf(cleanup)).toEqual(["args.sweep"]);
    const time = await rejection(env.jobs.enqueueJob({ task: "send_email", args: { request: {}, pdf: { key: "pdfs/x.pdf", filename: "x.pdf", linkedAt: "yesterday" } } }));
    expect(fieldsOf(time)).toEqual(["args.pdf.linkedAt"]);
    const both = await rejection(env.jobs.enqueueJob({ task: "notify_client", args: { pdfReady: {}, emailSent: {} } }));
    expect(fieldsOf(both)).toEqual(["args"]);
    expect(both.rawMessage).toContain("exactly one of pdfReady and emailSent");
    // As before the payloads were messages, a falsy member of a oneof counts as absent.
    const { job } = await env.jobs.enqueueJob({ task: "cleanup_storage", args: { objectKey: "originals/falsy", sweep: false }, runAt: timestampFromDate(new Date(Date.now() + HOUR)) });
    expect(job!.payload).toMatchObject({ case: "cleanupStorage", value: { target: { case: "objectKey", value: "originals/falsy" } } });
    await env.jobs.cancelJob({ id: job!.id });
  });
});

test("Connect JSON with \"sendEmail\" (as buf curl sends it) is accepted by the job service and runs", async () => {
  const body = {
    sendEmail: {
      request: { userEmail: "ada@example.com", userName: "Ada", emailType: "EMAIL_TYPE_WELCOME", idempotencyKey: "curl-mail" },
      pdf: { key: "pdfs/curl.pdf", filename: "curl.pdf", linkedAt: new Date().toISOString() },
    },
    jobKey: "typed:curl",
  };
  const res = await fetch(`${env.service.url}/mcsv.v1.JobService/EnqueueJob`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${TEST_INTERNAL_TOKEN}` },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  expect({ status: res.status, text }).toMatchObject({ status: 200 });
  const { job } = JSON.parse(text) as { job: Record<string, unknown> & { id: string } };
  // The answer carries the oneof as JSON too, and the deprecated task and args.
  expect(job).toMatchObject({ task: "send_email", sendEmail: { request: { idempotencyKey: "curl-mail" }, pdf: { key: "pdfs/curl.pdf" } }, args: { pdf: { key: "pdfs/curl.pdf" } } });
  await env.waitForState(job.id, JobState.COMPLETED);
  expect(env.stubs.calls.sendEmail.some((r) => r.idempotencyKey === "curl-mail")).toBe(true);

  const refused = await fetch(`${env.service.url}/mcsv.v1.JobService/EnqueueJob`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${TEST_INTERNAL_TOKEN}` },
    body: JSON.stringify({ sendEmail: { ...body.sendEmail, pdf: { key: "elsewhere/x", filename: "x.pdf" } } }),
  });
  expect(refused.status).toBe(400);
  expect(await refused.text()).toContain("sendEmail.pdf.key");
});
