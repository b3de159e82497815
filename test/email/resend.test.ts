/**
 * EmailService.SendEmail through the real resend SDK against a local Resend sink: the templates as delivered,
 * request validation, idempotency, and how Resend's failures map to Connect codes.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { EmailType, ValidationErrorSchema, type SendEmailRequestSchema } from "@mcsv/sdk";
import Mustache from "mustache";
import { freePort } from "../../scripts/lib/embedded.js";
import { resendError } from "../../services/email/resend-mailer.js";
import { startResendSink, type ResendSink } from "../support/resend-sink.js";
import { startEmail, type EmailUnderTest } from "./support.js";

let sink: ResendSink;
let email: EmailUnderTest;
let keys = 0;
const key = () => `test-key-${++keys}`;

beforeAll(async () => {
  sink = await startResendSink({ apiKey: "re_test" });
  email = await startEmail({ RESEND_API_KEY: "re_test", RESEND_BASE_URL: sink.url, EMAIL_FROM: "mcsv tests <noreply@mcsv.test>" });
});

afterAll(async () => {
  await email?.close();
  await sink?.close();
});

type Request = MessageInitShape<typeof SendEmailRequestSchema>;

async function failure(request: Request, client = email.client): Promise<ConnectError> {
  const error = await client.sendEmail(request).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ConnectError);
  return error as ConnectError;
}

function violations(error: ConnectError): Record<string, string> {
  expect(error.code).toBe(Code.InvalidArgument);
  const [detail] = error.findDetails(ValidationErrorSchema);
  expect(detail).toBeDefined();
  return Object.fromEntries(detail!.violations.map((v) => [v.field, v.description]));
}

/** The delivery the sink recorded for `emailId`. */
function deliveryOf(emailId: string) {
  const found = sink.delivered().filter((d) => d.id === emailId);
  expect(found).toHaveLength(1);
  return found[0]!;
}

const hostileName = `Ada <script>alert("x")</script> & Co`;

describe("templates, as Resend receives them", () => {
  test("welcome greets the user: HTML-escaped in the HTML part, verbatim in the text part, never in the subject", async () => {
    const idempotencyKey = key();
    const res = await email.client.sendEmail({ userId: "u-1", userName: hostileName, userEmail: "ada@example.com", emailType: EmailType.WELCOME, idempotencyKey });
    expect(res.success).toBe(true);
    expect(res.timestamp).toBeDefined();
    const { body, idempotencyKey: sentKey } = deliveryOf(res.emailId);
    expect(sentKey).toBe(idempotencyKey);
    expect(body.from).toBe("mcsv tests <noreply@mcsv.test>");
    expect(body.to).toEqual(["ada@example.com"]);
    expect(body.subject).toBe("Welcome to mcsv");
    expect(body.html).toContain("Ada &lt;script&gt;alert(&quot;x&quot;)&lt;&#x2F;script&gt; &amp; Co");
    expect(body.html).not.toContain("<script>");
    expect(body.text).toContain(`Welcome to mcsv, ${hostileName}!`);
    expect(body.text).not.toContain("&lt;");
    expect(body.tags).toEqual([{ name: "email_type", value: "welcome" }]);
  });

  test("notification has a fixed subject, its subject variable as the heading, and keeps the message's lines", async () => {
    const res = await email.client.sendEmail({
      userEmail: "bob@example.com",
      emailType: EmailType.NOTIFICATION,
      variables: { subject: "Maintenance <tonight>", message: "We restart at 22:00.\nExpect <b>5 minutes</b> of downtime." },
      idempotencyKey: key(),
    });
    const { body } = deliveryOf(res.emailId);
    expect(body.subject).toBe("A message from mcsv");
    expect(body.html).toContain("<h1 style=\"margin:0 0 16px;font-size:20px;\">Maintenance &lt;tonight&gt;</h1>");
    expect(body.html).toContain("Expect &lt;b&gt;5 minutes&lt;&#x2F;b&gt; of downtime.");
    expect(body.text).toContain("We restart at 22:00.\nExpect <b>5 minutes</b> of downtime.");
    expect(body.text).not.toContain("Hello");
  });

  test("conversion_complete, succeeded: link (escaped in HTML), expiry and file name", async () => {
    const pdfUrl = "https://s3.example.com/mcsv/pdfs/c1.pdf?X-Amz-Signature=abc&X-Amz-Expires=900";
    const res = await email.client.sendEmail({
      userName: "Grace",
      userEmail: "grace@example.com",
      emailType: EmailType.CONVERSION_COMPLETE,
      variables: { filename: "<photo>.png", state: "succeeded", pdf_url: pdfUrl, pdf_url_expires_at: "2030-01-02T03:04:05Z", conversion_id: "c1" },
      idempotencyKey: key(),
    });
    const { body } = deliveryOf(res.emailId);
    expect(body.subject).toBe("Your PDF is ready");
    expect(body.html).toContain(`href="${Mustache.escape(pdfUrl)}"`);
    expect(body.html).toContain("&amp;X-Amz-Expires");
    expect(body.html).toContain("&lt;photo&gt;.png");
    expect(body.html).toContain("2030-01-02 03:04 UTC");
    expect(body.html).not.toContain("Your conversion failed");
    expect(body.text).toContain(`Download it here:\n${pdfUrl}\n`);
    expect(body.text).toContain("We converted <photo>.png into a PDF.");
    expect(body.text).toContain("Hello Grace,");
    expect(body.text).toContain("about conversion c1.");
  });

  test("conversion_complete, failed: says why, no link", async () => {
    const res = await email.client.sendEmail({
      userEmail: "grace@example.com",
      emailType: EmailType.CONVERSION_COMPLETE,
      variables: { filename: "scan.tiff", state: "failed", error: "the image is <corrupt>" },
      idempotencyKey: key(),
    });
    const { body } = deliveryOf(res.emailId);
    expect(body.subject).toBe("Your conversion failed");
    expect(body.html).toContain("Reason: the image is &lt;corrupt&gt;");
    expect(body.html).not.toContain("href=");
    expect(body.text).toContain("Reason: the image is <corrupt>");
  });

  test("conversion_complete accepts what the gateway accepts: no file name, or 255 characters beyond the BMP", async () => {
    const unnamed = await email.client.sendEmail({
      userEmail: "grace@example.com",
      emailType: EmailType.CONVERSION_COMPLETE,
      variables: { state: "succeeded", pdf_url: "https://s3.example.com/p.pdf", error: "" },
      idempotencyKey: key(),
    });
    const { body } = deliveryOf(unnamed.emailId);
    expect(body.subject).toBe("Your PDF is ready");
    expect(body.text).toContain("We converted your image into a PDF.");
    const emoji = "📄".repeat(255);
    const named = await email.client.sendEmail({
      userEmail: "grace@example.com",
      emailType: EmailType.CONVERSION_COMPLETE,
      variables: { filename: emoji, state: "failed" },
      idempotencyKey: key(),
    });
    expect(deliveryOf(named.emailId).body.subject).toBe("Your conversion failed");
    expect(deliveryOf(named.emailId).body.text).toContain(`We could not convert ${emoji} into a PDF.`);
    expect(deliveryOf(named.emailId).body.text).toContain("Reason: unknown error");
  });
});

describe("validation", () => {
  test("every bad field is named at once, and nothing reaches Resend", async () => {
    const before = sink.requests().length;
    const error = await failure({ userName: "Eve\r\nBcc: victim@example.com", userEmail: "not-an-email", emailType: EmailType.UNSPECIFIED, idempotencyKey: "" });
    const bad = violations(error);
    expect(Object.keys(bad).sort()).toEqual(["emailType", "idempotencyKey", "userEmail", "userName"]);
    expect(bad["userName"]).toMatch(/line breaks/);
    expect(sink.requests().length).toBe(before);
  });

  test("line breaks in a value that reaches a header are refused", async () => {
    const bad = violations(
      await failure({
        userEmail: "ada@example.com\r\nBcc: victim@example.com",
        emailType: EmailType.NOTIFICATION,
        variables: { subject: "Hi\nBcc: victim@example.com", message: "multi\nline is fine here" },
        idempotencyKey: key(),
      }),
    );
    expect(Object.keys(bad).sort()).toEqual(["userEmail", "variables.subject"]);
  });

  test("missing, unknown and malformed variables", async () => {
    expect(Object.keys(violations(await failure({ userEmail: "a@example.com", emailType: EmailType.NOTIFICATION, idempotencyKey: key() }))).sort()).toEqual([
      "variables.message",
      "variables.subject",
    ]);
    const bad = violations(
      await failure({
        userEmail: "a@example.com",
        emailType: EmailType.CONVERSION_COMPLETE,
        variables: { filename: "a.png", state: "succeeded", pdfUrl: "https://x.example/a.pdf", pdf_url_expires_at: "tomorrow" },
        idempotencyKey: key(),
      }),
    );
    expect(Object.keys(bad).sort()).toEqual(["variables.pdfUrl", "variables.pdf_url", "variables.pdf_url_expires_at"]);
    expect(bad["variables.pdfUrl"]).toMatch(/allowed: .*pdf_url/);
    const script = violations(
      await failure({
        userEmail: "a@example.com",
        emailType: EmailType.CONVERSION_COMPLETE,
        variables: { filename: "a.png", state: "done", pdf_url: "javascript:alert(1)" },
        idempotencyKey: key(),
      }),
    );
    expect(Object.keys(script).sort()).toEqual(["variables.pdf_url", "variables.state"]);
  });

  test("welcome needs a name; limits on the name and the key", async () => {
    const bad = violations(await failure({ userName: "x".repeat(201), userEmail: "a@example.com", emailType: EmailType.WELCOME, idempotencyKey: "k".repeat(201) }));
    expect(Object.keys(bad).sort()).toEqual(["idempotencyKey", "userName"]);
    expect(Object.keys(violations(await failure({ userEmail: "a@example.com", emailType: EmailType.WELCOME, idempotencyKey: key() })))).toEqual(["userName"]);
    expect(Object.keys(violations(await failure({ userName: "A", userEmail: "a@example.com", emailType: 42 as EmailType, idempotencyKey: key() })))).toEqual(["emailType"]);
  });
});

describe("delivery through Resend", () => {
  const welcome = (idempotencyKey: string): Request => ({ userName: "Ada", userEmail: "ada@example.com", emailType: EmailType.WELCOME, idempotencyKey });

  test("the same idempotency key twice: one delivery, the same email id, the key sent as Idempotency-Key", async () => {
    const idempotencyKey = `send_email:welcome:${key()}`;
    const first = await email.client.sendEmail(welcome(idempotencyKey));
    const second = await email.client.sendEmail(welcome(idempotencyKey));
    expect(second.emailId).toBe(first.emailId);
    expect(sink.delivered().filter((d) => d.idempotencyKey === idempotencyKey)).toHaveLength(1);
    const attempts = sink.requests().filter((r) => r.headers["idempotency-key"] === idempotencyKey);
    expect(attempts).toHaveLength(2);
    for (const attempt of attempts) {
      expect(attempt.method).toBe("POST");
      expect(attempt.path).toBe("/emails");
      expect(attempt.headers.authorization).toBe("Bearer re_test");
    }
  });

  test("429 and 5xx are unavailable (retryable), and a retry with the same key then delivers once", async () => {
    const idempotencyKey = key();
    sink.failNext(429);
    const limited = await failure(welcome(idempotencyKey));
    expect(limited.code).toBe(Code.Unavailable);
    expect(limited.rawMessage).toMatch(/rate_limit_exceeded/);
    expect(limited.metadata.get("retry-after")).toBe("1");
    sink.failNext(503, "upstream down");
    expect((await failure(welcome(idempotencyKey))).code).toBe(Code.Unavailable);
    const res = await email.client.sendEmail(welcome(idempotencyKey));
    expect(sink.delivered().filter((d) => d.idempotencyKey === idempotencyKey).map((d) => d.id)).toEqual([res.emailId]);
  });

  test("422 is invalid_argument and 401 failed_precondition: neither is worth a retry", async () => {
    sink.failNext(422);
    expect((await failure(welcome(key()))).code).toBe(Code.InvalidArgument);
    sink.failNext(401);
    expect((await failure(welcome(key()))).code).toBe(Code.FailedPrecondition);
  });

  test("a wrong API key is failed_precondition", async () => {
    const other = await startEmail({ RESEND_API_KEY: "re_wrong", RESEND_BASE_URL: sink.url });
    try {
      const error = await failure(welcome(key()), other.client);
      expect(error.code).toBe(Code.FailedPrecondition);
      expect(error.rawMessage).toMatch(/invalid_api_key/);
    } finally {
      await other.close();
    }
  });

  test("Resend unreachable is unavailable; Resend not answering in time is deadline_exceeded", async () => {
    const down = await startEmail({ RESEND_API_KEY: "re_test", RESEND_BASE_URL: `http://127.0.0.1:${await freePort()}` });
    const slow = await startEmail({ RESEND_API_KEY: "re_test", RESEND_BASE_URL: sink.url, RESEND_TIMEOUT_MS: "300" });
    try {
      expect((await failure(welcome(key()), down.client)).code).toBe(Code.Unavailable);
      sink.hangNext();
      expect((await failure(welcome(key()), slow.client)).code).toBe(Code.DeadlineExceeded);
    } finally {
      await Promise.all([down.close(), slow.close()]);
    }
  });

  test("Resend's error codes map to retryable or permanent Connect codes", () => {
    const map = (statusCode: number | null, name = "application_error") => resendError({ statusCode, name: name as never, message: "m" }).code;
    expect(map(null)).toBe(Code.Unavailable);
    expect(map(429, "daily_quota_exceeded")).toBe(Code.ResourceExhausted);
    expect(map(500)).toBe(Code.Unavailable);
    expect(map(400, "invalid_idempotency_key")).toBe(Code.InvalidArgument);
    expect(map(403, "invalid_from_address")).toBe(Code.FailedPrecondition);
    expect(map(409, "concurrent_idempotent_requests")).toBe(Code.Aborted);
    expect(map(409, "invalid_idempotent_request")).toBe(Code.FailedPrecondition);
  });

  test("readiness names the transport and does not call Resend; metrics count emails by type and outcome", async () => {
    const before = sink.requests().length;
    const ready = await fetch(`${email.service.url}/health/ready`);
    expect(ready.status).toBe(200);
    expect(((await ready.json()) as { checks: Record<string, string> }).checks).toEqual({ transport_resend: "ok" });
    expect(sink.requests().length).toBe(before);
    const metrics = await (await fetch(`${email.service.url}/metrics`)).text();
    expect(metrics).toMatch(/mcsv_emails_total\{[^}]*type="welcome"[^}]*outcome="sent"[^}]*\} [1-9]/);
    expect(metrics).toMatch(/mcsv_emails_total\{[^}]*type="welcome"[^}]*outcome="unavailable"[^}]*\} [1-9]/);
    expect(metrics).toMatch(/mcsv_emails_total\{[^}]*type="unspecified"[^}]*outcome="invalid_argument"[^}]*\} [1-9]/);
    expect(metrics).toMatch(/mcsv_email_delivery_seconds_count\{[^}]*type="welcome"[^}]*transport="resend"[^}]*\} [1-9]/);
  });
});
