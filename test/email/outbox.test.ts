/**
 * EmailService without RESEND_API_KEY: the dev outbox. Each email is one .eml file that a MIME parser reads back
 * (headers, text and HTML parts); a repeated idempotency key writes nothing new. Production refuses the outbox unless
 * EMAIL_OUTBOX_DIR names it; readiness names the transport; each recipient gets a limited number of emails.
 */
import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { EmailType } from "@mcsv/sdk";
import PostalMime from "postal-mime";
import { loadEmailConfig } from "../../services/email/config.js";
import { hexDigestOf } from "../../services/shared/auth.js";
import { ConfigError } from "../../services/shared/config.js";
import { tempDir } from "../contract/support.js";
import { startEmail, type EmailUnderTest } from "./support.js";
import { TEST_INTERNAL_TOKEN, testAuthEnv } from "../support/credentials.js";

const temp = tempDir("email-outbox");
const outbox = join(temp.dir, "outbox");
let email: EmailUnderTest;

beforeAll(async () => {
  email = await startEmail({ MCSV_DATA_DIR: temp.dir, EMAIL_FROM: "mcsv <noreply@mcsv.test>" });
});

afterAll(async () => {
  await email?.close();
  temp.remove();
});

const emlFiles = () => readdirSync(outbox).filter((f) => f.endsWith(".eml"));

test("an email becomes one .eml file in $MCSV_DATA_DIR/outbox: multipart/alternative, both parts, proper headers", async () => {
  const res = await email.client.sendEmail({
    userId: "u-1",
    userName: "Zoë <b>",
    userEmail: "zoe@example.com",
    emailType: EmailType.CONVERSION_COMPLETE,
    variables: { filename: "café.png", state: "succeeded", pdf_url: "https://s3.example.com/pdfs/c.pdf?a=1&b=2" },
    idempotencyKey: "send_email:conversion_complete:c-1",
  });
  expect(res.success).toBe(true);
  expect(res.emailId).toMatch(/^outbox-[0-9a-f]{32}$/);
  expect(emlFiles()).toEqual([`${res.emailId}.eml`]);

  const raw = readFileSync(join(outbox, `${res.emailId}.eml`));
  expect(raw.toString("latin1")).toMatch(/^Content-Type: multipart\/alternative;/m);
  const parsed = await PostalMime.parse(raw);
  expect(parsed.from).toEqual({ name: "mcsv", address: "noreply@mcsv.test" });
  expect(parsed.to).toEqual([{ name: "", address: "zoe@example.com" }]);
  expect(parsed.subject).toBe("Your PDF is ready");
  expect(parsed.text).toContain("We converted café.png into a PDF.");
  expect(parsed.messageId).toBe(`<${res.emailId}@outbox.mcsv.invalid>`);
  expect(parsed.date).toBeTruthy();
  expect(parsed.headers.find((h) => h.key === "x-mcsv-email-type")?.value).toBe("conversion_complete");
  expect(parsed.text).toContain("Hello Zoë <b>,");
  expect(parsed.text).toContain("https://s3.example.com/pdfs/c.pdf?a=1&b=2");
  expect(parsed.html).toContain("Hello Zoë &lt;b&gt;,");
  expect(parsed.html).toContain("&amp;b&#x3D;2");
});

test("the same idempotency key again: the same email id and no new file; another key: another file", async () => {
  const request = { userName: "Ada", userEmail: "ada@example.com", emailType: EmailType.WELCOME, idempotencyKey: "send_email:welcome:u-2" };
  const first = await email.client.sendEmail(request);
  const before = readFileSync(join(outbox, `${first.emailId}.eml`));
  const again = await Promise.all([email.client.sendEmail(request), email.client.sendEmail(request)]);
  expect(again.map((r) => r.emailId)).toEqual([first.emailId, first.emailId]);
  expect(readFileSync(join(outbox, `${first.emailId}.eml`))).toEqual(before);
  expect(emlFiles()).toHaveLength(2);

  const other = await email.client.sendEmail({ ...request, idempotencyKey: "send_email:welcome:u-3" });
  expect(other.emailId).not.toBe(first.emailId);
  expect(emlFiles()).toHaveLength(3);
  // Temporary files never stay behind.
  expect(readdirSync(outbox).filter((f) => !f.endsWith(".eml"))).toEqual([]);
});

test("readiness names the transport and follows whether the outbox can be written", async () => {
  const ready = await fetch(`${email.service.url}/health/ready`);
  expect(ready.status).toBe(200);
  expect(((await ready.json()) as { checks: Record<string, string> }).checks).toEqual({ transport_outbox: "ok" });
  rmSync(outbox, { recursive: true });
  writeFileSync(outbox, "not a directory");
  const res = await fetch(`${email.service.url}/health/ready`, { headers: { authorization: `Bearer ${TEST_INTERNAL_TOKEN}` } });
  expect(res.status).toBe(503);
  expect(((await res.json()) as { checks: Record<string, string> }).checks["transport_outbox"]).toMatch(/EEXIST|ENOTDIR/);
  rmSync(outbox);
  expect((await fetch(`${email.service.url}/health/ready`)).status).toBe(200);
});

test("configuration lists every problem at once", () => {
  expect(() => loadEmailConfig({ EMAIL_FROM: "two@example.com, three@example.com" })).toThrow(/EMAIL_FROM/);
  let message = "";
  try {
    loadEmailConfig({ EMAIL_FROM: "nobody", RESEND_BASE_URL: "ftp://x", RESEND_TIMEOUT_MS: "0" });
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    message = String(error);
  }
  for (const variable of ["EMAIL_FROM", "RESEND_BASE_URL", "RESEND_TIMEOUT_MS"]) expect(message).toContain(variable);
  const config = loadEmailConfig({ ...testAuthEnv, MCSV_DATA_DIR: "/var/lib/mcsv", RESEND_BASE_URL: "http://127.0.0.1:9/" });
  expect(config.EMAIL_OUTBOX_DIR).toBe("/var/lib/mcsv/outbox");
  expect(config.RESEND_BASE_URL).toBe("http://127.0.0.1:9");
  expect(config.EMAIL_FROM).toBe("mcsv <noreply@mcsv.dev>");
});

test("each recipient gets at most EMAIL_PER_RECIPIENT_PER_HOUR emails; repeats do not count; over it, resource_exhausted with retry-after", async () => {
  const limited = tempDir("email-limited");
  const service = await startEmail({ MCSV_DATA_DIR: limited.dir, EMAIL_PER_RECIPIENT_PER_HOUR: "2" });
  try {
    const welcome = (userEmail: string, idempotencyKey: string) => service.client.sendEmail({ userName: "Eve", userEmail, emailType: EmailType.WELCOME, idempotencyKey });
    const first = await welcome("eve@example.com", "limit-1");
    await welcome("Eve@Example.com", "limit-2");
    expect((await welcome("eve@example.com", "limit-1")).emailId).toBe(first.emailId);
    const error = await welcome("eve+again@example.com", "limit-3").then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    expect(error?.code).toBe(Code.ResourceExhausted);
    const retryAfter = Number(error!.metadata.get("retry-after"));
    expect(retryAfter).toBeGreaterThan(3500);
    expect(retryAfter).toBeLessThanOrEqual(3600);
    expect(error!.rawMessage).toContain(`retry in ${retryAfter} s`);
    await welcome("frank@example.com", "limit-4");
    expect(readdirSync(join(limited.dir, "outbox")).filter((f) => f.endsWith(".eml"))).toHaveLength(3);
    const metrics = await (await fetch(`${service.service.url}/metrics`)).text();
    expect(metrics).toMatch(/mcsv_emails_total\{[^}]*type="welcome"[^}]*outcome="resource_exhausted"[^}]*\} [1-9]/);
  } finally {
    await service.close();
    limited.remove();
  }
});

describe("production", () => {
  // Valid production credentials: only the transport is in question here.
  const production = { NODE_ENV: "production", MCSV_OPERATOR_TOKEN_SHA256: hexDigestOf(randomBytes(32).toString("base64")), MCSV_SERVICE_TOKEN: "" };

  test("refuses the dev outbox unless EMAIL_OUTBOX_DIR names it", () => {
    let message = "";
    try {
      loadEmailConfig({ ...production, RESEND_TIMEOUT_MS: "0" });
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      message = String(error);
    }
    expect(message).toContain("RESEND_API_KEY: is required in production (set EMAIL_OUTBOX_DIR to use the dev outbox deliberately)");
    // In the same one message as every other problem.
    expect(message).toContain("RESEND_TIMEOUT_MS");
    // MCSV_DATA_DIR alone does not count as choosing the outbox.
    expect(() => loadEmailConfig({ ...production, MCSV_DATA_DIR: temp.dir })).toThrow(/RESEND_API_KEY: is required in production/);
    expect(loadEmailConfig({ ...production, EMAIL_OUTBOX_DIR: "/var/lib/mcsv/outbox" }).EMAIL_OUTBOX_DIR).toBe("/var/lib/mcsv/outbox");
    expect(loadEmailConfig({ ...production, RESEND_API_KEY: `re_${randomBytes(24).toString("base64url")}` }).RESEND_API_KEY).toMatch(/^re_/);
    // Development keeps the outbox as the default.
    expect(loadEmailConfig({ ...testAuthEnv }).RESEND_API_KEY).toBeUndefined();
  });

  test("with the outbox chosen explicitly, readiness tells anyone the transport (not the details)", async () => {
    const explicit = tempDir("email-production");
    const service = await startEmail({ ...production, EMAIL_OUTBOX_DIR: join(explicit.dir, "outbox") });
    try {
      const res = await fetch(`${service.service.url}/health/ready`);
      expect(res.status).toBe(200);
      expect(((await res.json()) as { checks: Record<string, string> }).checks).toEqual({ transport_outbox: "ok" });
    } finally {
      await service.close();
      explicit.remove();
    }
  });
});
