/**
 * Both workflows across the five real processes: embedded Postgres, s3rver, real ImageMagick, and the real resend
 * SDK pointed at a local sink that records what it receives.
 */
import { ConversionState, EmailType, JobService, JobState, PdfEngine, Quality, UserService, ClientService, ValidationErrorSchema } from "@mcsv/sdk";
import { Code, ConnectError } from "@connectrpc/connect";
import sharp from "sharp";
import { extractImages, photoLikePng, qpdfCheck, rawPixels } from "../support/pdf.js";
import { eventually, startTestSystem, untilIdle, type TestSystem } from "../support/system.js";

let system: TestSystem;

/** Sends to Resend addressed to `address`, repeats included (the sink folds a repeat with the same idempotency key). */
const sendRequestsTo = (address: string) =>
  system.sink.requests().filter((r) => r.method === "POST" && r.path === "/emails" && ((r.body as { to?: string[] } | null)?.to ?? []).includes(address)).length;

beforeAll(async () => {
  system = await startTestSystem();
}, 120_000);

afterAll(async () => {
  await system?.close();
});

function welcomeEmailsTo(email: string) {
  return system.sink.delivered().filter((e) => e.body.to.includes(email));
}

test("workflow 1: CreateUser sends one welcome email through Resend and the client hears of it", async () => {
  const users = system.client(UserService, "user");
  const { user } = await users.createUser({ name: "Ada Lovelace", email: "ada@example.com", idempotencyKey: "ada-1" });
  expect(user?.id).toMatch(/^[0-9a-f-]{36}$/);
  expect(user?.email).toBe("ada@example.com");

  const [email] = await eventually(() => (welcomeEmailsTo("ada@example.com").length > 0 ? welcomeEmailsTo("ada@example.com") : undefined), "the welcome email");
  expect(email!.body.subject).toMatch(/welcome/i);
  expect(email!.body.html).toContain("Ada Lovelace");

  const client = system.client(ClientService, "client");
  const event = await eventually(async () => {
    const { events } = await client.listEvents({ limit: 100 });
    return events.find((e) => e.event.case === "emailSent" && e.event.value.userEmail === "ada@example.com");
  }, "the email_sent callback");
  expect(event.event.case === "emailSent" && event.event.value.emailType).toBe(EmailType.WELCOME);

  // The same request again: the same user, and still exactly one email.
  const again = await users.createUser({ name: "Ada Lovelace", email: "ada@example.com", idempotencyKey: "ada-1" });
  expect(again.user?.id).toBe(user?.id);
  const other = await users.createUser({ name: "Ada Two", email: "ada@example.com", idempotencyKey: "ada-2" }).catch((e: unknown) => e);
  expect(ConnectError.from(other).code).toBe(Code.AlreadyExists);
  await untilIdle(system);
  expect(welcomeEmailsTo("ada@example.com")).toHaveLength(1);
  // Nothing crashed here: not even a repeat that Resend would have folded.
  expect(sendRequestsTo("ada@example.com")).toBe(1);
  expect((await users.getUser({ id: user!.id })).user?.name).toBe("Ada Lovelace");
});

test("workflow 2: a PNG becomes a pixel-identical PDF, with one email and one callback", async () => {
  const users = system.client(UserService, "user");
  const png = await photoLikePng(96, 64);
  const request = {
    userEmail: "grace@example.com",
    filename: "gradient.png",
    options: { quality: Quality.LOSSLESS },
    idempotencyKey: "grace-gradient-1",
  };
  const { conversion } = await users.convertImage({ ...request, source: { case: "imageData", value: png } });
  expect(conversion?.state).toBe(ConversionState.QUEUED);
  expect(conversion?.inputFormat).toBe("png");

  const states: ConversionState[] = [];
  let last;
  for await (const update of users.watchConversion({ conversionId: conversion!.id })) {
    states.push(update.conversion!.state);
    last = update.conversion!;
  }
  // The worker may already have picked it up when the watch starts; states only ever move forward.
  expect([ConversionState.QUEUED, ConversionState.PROCESSING, ConversionState.SUCCEEDED]).toContain(states[0]);
  expect([...states].sort()).toEqual(states);
  expect(states.at(-1)).toBe(ConversionState.SUCCEEDED);
  expect(last!.pdfUrl).toMatch(/^http/);
  expect(last!.width).toBe(96);
  expect(last!.height).toBe(64);

  const pdf = new Uint8Array(await (await fetch(last!.pdfUrl)).arrayBuffer());
  expect(Buffer.from(pdf.subarray(0, 5)).toString()).toBe("%PDF-");
  expect(Number(last!.outputSize)).toBe(pdf.byteLength);
  expect(await qpdfCheck(pdf)).toMatch(/No syntax or stream encoding errors/);
  const [embedded] = await extractImages(pdf);
  const input = await rawPixels(png);
  expect([embedded!.width, embedded!.height, embedded!.channels]).toEqual([input.width, input.height, input.channels]);
  expect(embedded!.data.equals(input.data)).toBe(true);

  const completeEmails = () => system.sink.delivered().filter((e) => e.body.to.includes("grace@example.com"));
  await eventually(() => (completeEmails().length > 0 ? true : undefined), "the conversion-complete email");
  expect(completeEmails()[0]!.body.html).toContain("gradient.png");
  // The email's link was presigned by the job service when it sent the email, and works; no job carries a link.
  const emailed = /^(https?:\/\/\S+X-Amz-Signature=\S+)$/m.exec(completeEmails()[0]!.body.text ?? "")?.[1];
  expect(emailed).toBeDefined();
  expect(Buffer.from(await (await fetch(emailed!)).arrayBuffer()).subarray(0, 5).toString()).toBe("%PDF-");

  const clientEvents = system.client(ClientService, "client");
  await eventually(async () => {
    const { events } = await clientEvents.listEvents({ limit: 100 });
    return events.find((e) => e.event.case === "pdfReady" && e.event.value.conversion?.id === conversion!.id);
  }, "the pdf_ready callback");

  // Idempotency: the same request again gives the same conversion, and no second job or email.
  const repeat = await users.convertImage({ ...request, source: { case: "imageData", value: png } });
  expect(repeat.conversion?.id).toBe(conversion!.id);
  const jobs = system.client(JobService, "job");
  const { jobs: convertJobs } = await jobs.listJobs({ task: "convert_image", pageSize: 100 });
  const ours = convertJobs.filter((j) => j.jobKey === `convert_image:${conversion!.id}`);
  expect(ours).toHaveLength(1);
  await untilIdle(system);
  expect(completeEmails()).toHaveLength(1);
  expect(sendRequestsTo("grace@example.com")).toBe(1);

  const { conversions } = await users.listConversions({ userEmail: "grace@example.com" });
  expect(conversions.map((c) => c.id)).toEqual([conversion!.id]);
  const status = await jobs.getJobStatus({ id: ours[0]!.id });
  expect(status.job?.state).toBe(JobState.COMPLETED);
  // Job arguments hold object keys, never links (the job API shows them to operators).
  for (const task of ["convert_image", "send_email", "notify_client"]) {
    const listed = (await jobs.listJobs({ task, pageSize: 100 })).jobs.filter((j) => JSON.stringify(j.args).includes(conversion!.id));
    expect(listed.length).toBeGreaterThan(0);
    for (const job of listed) expect(JSON.stringify(job.args)).not.toMatch(/X-Amz-|pdf_url|pdfUrl|imageUrl/);
  }
});

test("a JPEG with engine PASSTHROUGH reaches SUCCEEDED with its own pixels; an unknown engine is refused", async () => {
  const users = system.client(UserService, "user");
  const jpeg = await sharp(await photoLikePng(120, 80)).jpeg({ quality: 85 }).toBuffer();
  const refused = await users
    .convertImage({ userEmail: "hedy@example.com", source: { case: "imageData", value: jpeg }, options: { engine: 99 as PdfEngine } })
    .catch((e: unknown) => ConnectError.from(e));
  expect(refused instanceof ConnectError && refused.code).toBe(Code.InvalidArgument);
  expect((refused as ConnectError).findDetails(ValidationErrorSchema).flatMap((d) => d.violations.map((v) => v.field))).toEqual(["options.engine"]);

  const { conversion } = await users.convertImage({
    userEmail: "hedy@example.com",
    filename: "photo.jpg",
    source: { case: "imageData", value: jpeg },
    // HIGH would have ImageMagick re-encode the JPEG; passthrough keeps its own DCT data.
    options: { quality: Quality.HIGH, engine: PdfEngine.PASSTHROUGH },
  });
  expect(conversion?.options?.engine).toBe(PdfEngine.PASSTHROUGH);
  let last;
  for await (const update of users.watchConversion({ conversionId: conversion!.id })) last = update.conversion!;
  expect(last!.state).toBe(ConversionState.SUCCEEDED);
  expect(last!.options?.engine).toBe(PdfEngine.PASSTHROUGH);
  expect([last!.width, last!.height]).toEqual([120, 80]);

  const pdf = new Uint8Array(await (await fetch(last!.pdfUrl)).arrayBuffer());
  expect(await qpdfCheck(pdf)).toMatch(/No syntax or stream encoding errors/);
  // The JPEG's bytes are in the PDF as they are, and poppler decodes them to exactly the original's pixels.
  expect(Buffer.from(pdf).includes(jpeg)).toBe(true);
  const [embedded] = await extractImages(pdf);
  const input = await rawPixels(jpeg);
  expect([embedded!.width, embedded!.height, embedded!.channels]).toEqual([input.width, input.height, input.channels]);
  expect(embedded!.data.equals(input.data)).toBe(true);
});

test("the original design's scenario, scaled down: 200 CreateUser calls at concurrency 10 send exactly 200 welcome emails", async () => {
  const users = system.client(UserService, "user");
  const total = 200;
  let next = 0;
  const ids: string[] = [];
  await Promise.all(
    Array.from({ length: 10 }, async () => {
      while (next < total) {
        const i = next++;
        const { user } = await users.createUser({ name: `Load ${i}`, email: `load-${i}@example.com`, idempotencyKey: `load-${i}` });
        ids.push(user!.id);
      }
    }),
  );
  expect(new Set(ids).size).toBe(total);
  const loadEmails = () => system.sink.delivered().filter((e) => e.body.to.some((to: string) => to.startsWith("load-")));
  await eventually(() => (loadEmails().length >= total ? true : undefined), "200 welcome emails", 120_000);
  await untilIdle(system);
  const recipients = loadEmails().map((e) => e.body.to[0]);
  expect(recipients).toHaveLength(total);
  expect(new Set(recipients).size).toBe(total);
});

test("the five services run on the Node.js that runs this test (npm test runs this file on the current LTS as well)", async () => {
  for (const key of ["user", "job", "email", "image", "client"] as const) {
    const metrics = await (await fetch(`${system.urls[key]}/metrics`)).text();
    const version = /^nodejs_version_info\{[^}]*version="(v[\d.]+)"/m.exec(metrics)?.[1];
    expect({ key, version }).toEqual({ key, version: process.version });
  }
});
