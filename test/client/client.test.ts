/**
 * ClientService in-process: callbacks are validated and recorded once, ListEvents returns them newest first within
 * its limit, the log forgets the oldest beyond CLIENT_MAX_EVENTS, and GET / shows them escaped, to the operator only
 * and without any PDF link.
 */
import { randomUUID } from "node:crypto";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { ClientService, ConversionState, EmailType, ValidationErrorSchema, type ConversionSchema } from "@mcsv/sdk";
import { loadClientConfig } from "../../services/client/config.js";
import { EventLog } from "../../services/client/event-log.js";
import { startClientService } from "../../services/client/service.js";
import { createServiceClient } from "../../services/shared/service-clients.js";
import { createLogger } from "../../services/shared/logger.js";
import type { RunningService } from "../../services/shared/server.js";
import { TEST_INTERNAL_TOKEN, testAuthEnv } from "../support/credentials.js";

let service: RunningService;
let client: Client<typeof ClientService>;

beforeAll(async () => {
  const config = loadClientConfig({ ...testAuthEnv, CLIENT_PORT: "0", HOST: "127.0.0.1", CLIENT_MAX_EVENTS: "5" });
  service = await startClientService(config, { logger: createLogger("client-svc", { level: "error", format: "json" }) });
  client = createServiceClient(ClientService, service.url, { timeoutMs: 10_000, credential: TEST_INTERNAL_TOKEN });
});

/** The operator's credential as a browser sends it after the prompt: HTTP Basic, any user name. */
const basic = (user: string, password: string) => ({ authorization: `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}` });
const asOperator = basic("anyone", TEST_INTERNAL_TOKEN);
const page = (path: string, headers: Record<string, string> = asOperator) => fetch(`${service.url}${path}`, { headers });

afterAll(async () => {
  await service?.shutdown("test over");
});

function conversion(overrides: MessageInitShape<typeof ConversionSchema> = {}): MessageInitShape<typeof ConversionSchema> {
  return {
    id: randomUUID(),
    userEmail: "grace@example.com",
    state: ConversionState.SUCCEEDED,
    filename: "photo.png",
    pdfUrl: "https://s3.example.com/mcsv/pdfs/x.pdf?X-Amz-Signature=abc&X-Amz-Expires=900",
    pdfUrlExpiresAt: timestampFromDate(new Date("2030-01-01T00:00:00Z")),
    ...overrides,
  };
}

async function violationsOf(call: Promise<unknown>): Promise<string[]> {
  const error = await call.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ConnectError);
  expect((error as ConnectError).code).toBe(Code.InvalidArgument);
  const [detail] = (error as ConnectError).findDetails(ValidationErrorSchema);
  return detail!.violations.map((v) => v.field).sort();
}

test("a callback is recorded once; its repeat is recognised; another outcome of the same conversion is new", async () => {
  const c = conversion();
  expect((await client.notifyPdfReady({ conversion: c })).recorded).toBe(true);
  expect((await client.notifyPdfReady({ conversion: c })).recorded).toBe(false);
  expect((await client.notifyPdfReady({ conversion: { ...c, state: ConversionState.FAILED, pdfUrl: "", error: "boom" } })).recorded).toBe(true);

  const sent = { userId: "u-1", userEmail: "ada@example.com", emailType: EmailType.WELCOME, emailId: "re-1", success: true, message: "welcome email accepted by resend" };
  expect((await client.notifyEmailSent(sent)).recorded).toBe(true);
  expect((await client.notifyEmailSent(sent)).recorded).toBe(false);
  const unsent = { userEmail: "ada@example.com", emailType: EmailType.WELCOME, success: false, message: "Resend 422: invalid" };
  expect((await client.notifyEmailSent(unsent)).recorded).toBe(true);
  expect((await client.notifyEmailSent(unsent)).recorded).toBe(false);

  const { events } = await client.listEvents({});
  expect(events.map((e) => e.id)).toEqual([
    expect.stringMatching(/^email_sent:unsent:[0-9a-f]{32}$/),
    "email_sent:re-1",
    `pdf_ready:${c.id}:failed`,
    `pdf_ready:${c.id}:succeeded`,
  ]);
  const [, welcome] = events;
  expect(welcome!.event.case === "emailSent" && welcome!.event.value.userId).toBe("u-1");
  expect(welcome!.receivedAt).toBeDefined();
});

test("ListEvents: newest first, limited, and the log keeps only CLIENT_MAX_EVENTS", async () => {
  const ids: string[] = [];
  for (let i = 0; i < 6; i++) {
    const c = conversion({ filename: `file-${i}.png` });
    ids.push(`pdf_ready:${c.id}:succeeded`);
    await client.notifyPdfReady({ conversion: c });
  }
  expect((await client.listEvents({ limit: 2 })).events.map((e) => e.id)).toEqual([ids[5], ids[4]]);
  expect((await client.listEvents({ limit: 1000 })).events.map((e) => e.id)).toEqual(ids.slice(1).reverse());
  expect(await violationsOf(client.listEvents({ limit: 1001 }))).toEqual(["limit"]);
  expect(await violationsOf(client.listEvents({ limit: -1 }))).toEqual(["limit"]);
});

test("GET / shows the events escaped; GET /events returns them as JSON", async () => {
  const c = conversion({ filename: `<script>alert("x")</script>.png`, inputSize: 2_048n, outputSize: 3_145_728n });
  await client.notifyPdfReady({ conversion: c });
  await client.notifyEmailSent({ userEmail: "eve@example.com", emailType: EmailType.CONVERSION_COMPLETE, emailId: "<b>id</b>", success: true, conversionId: c.id });

  const res = await page("/");
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toBe("text/html; charset=utf-8");
  expect(res.headers.get("content-security-policy")).toContain("default-src 'none'");
  const html = await res.text();
  expect(html).not.toContain("<script>");
  expect(html).toContain("&lt;script&gt;alert(&quot;x&quot;)&lt;&#x2F;script&gt;.png");
  expect(html).toContain(`Conversion <code>${c.id}</code>: <span class="ok">succeeded</span>`);
  expect(html).toContain("2.0 KiB image, 3.0 MiB PDF. PDF ready");
  expect(html).toContain("conversion_complete email to eve@example.com, id <code>&lt;b&gt;id&lt;&#x2F;b&gt;</code>");
  // Newest first: the email callback came after the conversion's.
  expect(html.indexOf("email_sent")).toBeLessThan(html.indexOf("pdf_ready"));

  const json = (await (await page("/events?limit=1")).json()) as { events: { id: string; emailSent?: { emailId: string } }[] };
  expect(json.events).toHaveLength(1);
  expect(json.events[0]!.id).toBe("email_sent:<b>id</b>");
  expect(json.events[0]!.emailSent?.emailId).toBe("<b>id</b>");
  expect((await page("/events?limit=abc")).status).toBe(400);
});

test("the pages need the operator's credential: Basic (any user name) or Bearer; else 401 with a Basic challenge", async () => {
  for (const headers of [{}, basic("anyone", "wrong-credential-0123456789abcdef"), { authorization: "Bearer wrong-credential-0123456789abcdef" }, basic(TEST_INTERNAL_TOKEN, "")]) {
    for (const path of ["/", "/events"]) {
      const res = await page(path, headers);
      expect(res.status).toBe(401);
      expect(res.headers.get("www-authenticate")).toBe('Basic realm="mcsv client", charset="UTF-8"');
      const body = await res.text();
      expect(body).not.toContain("@example.com");
      expect(body).not.toContain("pdf_ready");
    }
  }
  for (const headers of [asOperator, basic("", TEST_INTERNAL_TOKEN), { authorization: `Bearer ${TEST_INTERNAL_TOKEN}` }]) {
    expect((await page("/", headers)).status).toBe(200);
    expect((await page("/events", headers)).status).toBe(200);
  }
  // Other paths are not the pages': still 404, with or without a credential.
  expect((await page("/nothing-here", {})).status).toBe(404);
});

test("no PDF link anywhere: not on the page, not in /events, not in ListEvents", async () => {
  const c = conversion();
  expect(c.pdfUrl).toContain("X-Amz-Signature");
  await client.notifyPdfReady({ conversion: c });
  const html = await (await page("/")).text();
  const json = await (await page("/events?limit=1000")).text();
  const { events } = await client.listEvents({ limit: 1000 });
  for (const shown of [html, json, JSON.stringify(events, (_, v: unknown) => (typeof v === "bigint" ? String(v) : v))]) {
    expect(shown).toContain(c.id);
    expect(shown).not.toMatch(/X-Amz-|s3\.example\.com|pdfUrl"?:\s*"[^"]|href="http/);
  }
  const held = events.find((e) => e.id === `pdf_ready:${c.id}:succeeded`)!;
  const kept = held.event.case === "pdfReady" ? held.event.value.conversion : undefined;
  expect(kept).toMatchObject({ id: c.id, filename: "photo.png", pdfUrl: "" });
  expect(kept?.pdfUrlExpiresAt).toBeUndefined();
});

test("bad callbacks are refused with every bad field named", async () => {
  expect(await violationsOf(client.notifyPdfReady({}))).toEqual(["conversion"]);
  expect(
    await violationsOf(
      client.notifyPdfReady({ conversion: conversion({ id: "not-a-uuid", state: ConversionState.PROCESSING, userEmail: "nope", pdfUrl: "javascript:alert(1)" }) }),
    ),
  ).toEqual(["conversion.id", "conversion.pdfUrl", "conversion.state", "conversion.userEmail"]);
  expect(await violationsOf(client.notifyPdfReady({ conversion: conversion({ pdfUrl: "" }) }))).toEqual(["conversion.pdfUrl"]);
  expect(await violationsOf(client.notifyEmailSent({ userEmail: "bad", emailType: EmailType.UNSPECIFIED, success: true, conversionId: "x" }))).toEqual([
    "conversionId",
    "emailId",
    "emailType",
    "userEmail",
  ]);
  expect(await violationsOf(client.notifyEmailSent({ emailType: EmailType.WELCOME, emailId: "a\nb", success: true }))).toEqual(["emailId", "userEmail"]);
});

test("the event log is a ring: it forgets the oldest and recognises what it still holds", () => {
  const log = new EventLog<{ id: string }>(3);
  expect(["a", "b", "c"].map((id) => log.add({ id }))).toEqual([true, true, true]);
  expect(log.add({ id: "a" })).toBe(false);
  expect(log.add({ id: "d" })).toBe(true);
  expect(log.newest(10).map((e) => e.id)).toEqual(["d", "c", "b"]);
  expect(log.has("a")).toBe(false);
  expect(log.add({ id: "a" })).toBe(true);
  expect(log.newest(2).map((e) => e.id)).toEqual(["a", "d"]);
  expect(log.size).toBe(3);
});
