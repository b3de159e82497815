/**
 * What keeps the email service from being a relay for spam: subjects are fixed texts whatever the request says, and
 * each recipient gets at most so many emails per hour (repeats of one email counted once).
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { RecipientLimit, recipientOf } from "../../services/email/recipient-limit.js";
import { EmailTemplates, TEMPLATE_NAMES, TEMPLATES, type TemplateName } from "../../services/email/templates.js";

describe("subjects", () => {
  const hostile = "Claim your prize at https://evil.example <b>now</b>";
  /** Every variable of every template set to attacker text, except what must have a fixed form. */
  const variablesOf = (name: TemplateName, state?: string): Record<string, string> => ({
    ...Object.fromEntries(Object.keys(TEMPLATES[name].variables).map((key) => [key, hostile])),
    ...(state ? { state, pdf_url: "https://s3.example.com/p.pdf", pdf_url_expires_at: "2030-01-01T00:00:00Z" } : {}),
  });

  test("are fixed texts: no name, file name or variable of the request reaches one", async () => {
    const templates = await EmailTemplates.load();
    const subjects = new Set<string>();
    for (const name of TEMPLATE_NAMES) {
      for (const state of name === "conversion_complete" ? ["succeeded", "failed"] : [undefined]) {
        const rendered = templates.render(name, { userName: hostile, userEmail: "ada@example.com", variables: variablesOf(name, state) });
        expect(rendered.subject).not.toMatch(/prize|evil|<b>/);
        // The body still carries the user's text, escaped in HTML.
        expect(rendered.text).toContain(hostile);
        expect(rendered.html).toContain("&lt;b&gt;now&lt;&#x2F;b&gt;");
        subjects.add(rendered.subject);
      }
    }
    expect([...subjects].sort()).toEqual(["A message from mcsv", "Welcome to mcsv", "Your PDF is ready", "Your conversion failed"]);
  });
});

describe("per-recipient limit", () => {
  function limited(call: () => void): ConnectError {
    let error: unknown;
    try {
      call();
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConnectError);
    return error as ConnectError;
  }

  test("at most `limit` emails per recipient per window, with the seconds until one is free", () => {
    let now = 1_000_000;
    const limit = new RecipientLimit(2, 3_600_000, () => now);
    limit.admit("ada@example.com", "k1");
    now += 600_000;
    limit.admit("ada@example.com", "k2");
    const error = limited(() => limit.admit("ada@example.com", "k3"));
    expect(error.code).toBe(Code.ResourceExhausted);
    // The first email leaves the window 50 minutes from now.
    expect(error.metadata.get("retry-after")).toBe("3000");
    expect(error.rawMessage).toContain("retry in 3000 s");
    expect(error.rawMessage).not.toContain("ada@");
    // Another recipient is not affected.
    limit.admit("bob@example.com", "k3");
    // Once the first email is an hour old, one more goes.
    now += 2_999_999;
    expect(limited(() => limit.admit("ada@example.com", "k3")).metadata.get("retry-after")).toBe("1");
    now += 1;
    limit.admit("ada@example.com", "k3");
    expect(limited(() => limit.admit("ada@example.com", "k4")).code).toBe(Code.ResourceExhausted);
  });

  test("a repeat of an email already counted (same idempotency key) passes and counts nothing", () => {
    const limit = new RecipientLimit(2, 3_600_000, () => 0);
    limit.admit("ada@example.com", "k1");
    for (let i = 0; i < 5; i++) limit.admit("ada@example.com", "k1");
    limit.admit("ada@example.com", "k2");
    limit.admit("ada@example.com", "k2");
    expect(limited(() => limit.admit("ada@example.com", "k3")).code).toBe(Code.ResourceExhausted);
    // A refused email is not counted: its retry is refused too, not waved through as a repeat.
    expect(limited(() => limit.admit("ada@example.com", "k3")).code).toBe(Code.ResourceExhausted);
  });

  test("case and +tags do not make another recipient", () => {
    expect(recipientOf("Ada+promo1@Example.COM")).toBe("ada@example.com");
    expect(recipientOf("+x@example.com")).toBe("+x@example.com");
    const limit = new RecipientLimit(1, 3_600_000, () => 0);
    limit.admit("ada@example.com", "k1");
    expect(limited(() => limit.admit("ADA+2@example.com", "k2")).code).toBe(Code.ResourceExhausted);
  });

  test("recipients idle for a window are forgotten", () => {
    let now = 0;
    const limit = new RecipientLimit(1, 1_000, () => now);
    for (let i = 0; i < 100; i++) limit.admit(`user${i}@example.com`, "k");
    expect(limit.size).toBe(100);
    now += 500;
    limit.admit("late@example.com", "k");
    expect(limit.size).toBe(101);
    now += 600;
    limit.admit("last@example.com", "k");
    expect(limit.size).toBe(2);
  });
});
