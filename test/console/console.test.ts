/**
 * The web console at /console/ in real headless Chromium against the real system: signing in with an API key,
 * converting PNGs watched live through WatchConversion, their PDFs (checked by qpdf) and trace ids, the history
 * and its pages, the security headers, a wrong key refused, and use by keyboard. MCSV_CONSOLE_SCREENSHOT=docs/images/console.png
 * saves a picture of the console after the conversions.
 */
import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import type { Browser, Page } from "playwright-core";
import { UserService } from "@mcsv/sdk";
import { launchChromium } from "../support/browser.js";
import { TEST_API_KEY } from "../support/credentials.js";
import { photoLikePng, qpdfCheck } from "../support/pdf.js";
import { startTestSystem, type TestSystem } from "../support/system.js";

const GRAFANA_URL = "http://grafana.test:3000";
const WATCH_PATH = "/mcsv.v1.UserService/WatchConversion";

let system: TestSystem;
let browser: Browser;

beforeAll(async () => {
  [system, browser] = await Promise.all([startTestSystem({ GRAFANA_URL }), launchChromium()]);
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await system?.close();
});

/** What the page logged as errors, and its uncaught exceptions. */
function consoleErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on("console", (message) => {
    if (message.type() === "error") errors.push(message.text());
  });
  page.on("pageerror", (error) => errors.push(error.message));
  return errors;
}

async function signIn(page: Page, apiKey: string, email: string): Promise<void> {
  await page.getByLabel("API key").fill(apiKey);
  await page.getByLabel("E-mail address").fill(email);
  await page.getByRole("button", { name: "Sign in" }).click();
}

test("signs in, converts PNGs watched live, links each PDF and trace, and signs out", async () => {
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  const errors = consoleErrors(page);
  const watches: string[] = [];
  page.on("request", (request) => {
    if (new URL(request.url()).pathname === WATCH_PATH) watches.push(request.url());
  });

  const response = await page.goto(`${system.urls.user}/console/`);
  expect(response?.status()).toBe(200);
  const headers = response!.headers();
  const csp = headers["content-security-policy"] ?? "";
  for (const directive of ["default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "form-action 'none'", "base-uri 'none'"]) {
    expect(csp).toContain(directive);
  }
  expect(headers["x-content-type-options"]).toBe("nosniff");
  expect(headers["referrer-policy"]).toBe("no-referrer");
  // The bundle too: every console answer carries the policy.
  const bundle = await fetch(`${system.urls.user}/console/console.js`);
  expect(bundle.headers.get("content-security-policy")).toBe(csp);

  await signIn(page, TEST_API_KEY, "console@example.com");
  await page.getByRole("button", { name: "Sign out" }).waitFor();
  expect(await page.evaluate("sessionStorage.getItem('mcsv.console.apiKey')")).toBe(TEST_API_KEY);
  expect(await page.evaluate("localStorage.length")).toBe(0);
  expect(await page.evaluate("document.cookie")).toBe("");

  await page.getByLabel("Quality").selectOption({ label: "Lossless" });
  await page.getByLabel("PDF engine").selectOption({ label: "ImageMagick" });
  const png = await photoLikePng(96, 64);
  await page.getByLabel("Images", { exact: true }).setInputFiles([
    { name: "gradient.png", mimeType: "image/png", buffer: png },
    { name: "second.png", mimeType: "image/png", buffer: await photoLikePng(48, 32) },
  ]);

  const card = page.locator("li[data-conversion]").filter({ hasText: "gradient.png" });
  await card.and(page.locator('[data-state="SUCCEEDED"]')).waitFor({ timeout: 30_000 });
  await page.locator('li[data-conversion][data-state="SUCCEEDED"]').nth(1).waitFor({ timeout: 30_000 });
  // Each state as it arrived: sent, accepted (queued), then succeeded, pushed through the stream.
  const states = await card.locator(".states li").allTextContents();
  expect(states[0]).toBe("Sending");
  expect(states.at(-1)).toBe("Succeeded");
  expect(watches.length).toBeGreaterThanOrEqual(2);
  expect(await page.locator("#announcer").textContent()).toMatch(/: succeeded$/);

  const traceId = (await card.locator("[data-trace-id]").textContent())?.trim();
  expect(traceId).toMatch(/^[0-9a-f]{32}$/);
  expect(traceId).not.toMatch(/^0+$/);
  const grafana = new URL((await card.locator("[data-grafana-link]").getAttribute("href"))!);
  expect(`${grafana.origin}${grafana.pathname}`).toBe(`${GRAFANA_URL}/explore`);
  expect(grafana.searchParams.get("panes")).toContain(traceId);

  const pdfUrl = await card.locator("[data-pdf-link]").getAttribute("href");
  expect(pdfUrl).toMatch(/^https?:\/\//);
  const pdf = await fetch(pdfUrl!);
  expect(pdf.status).toBe(200);
  const bytes = new Uint8Array(await pdf.arrayBuffer());
  expect(Buffer.from(bytes.subarray(0, 5)).toString("latin1")).toBe("%PDF-");
  expect(await qpdfCheck(bytes)).toMatch(/No syntax or stream encoding errors found/);

  // The history lists both (newest first), with the trace ids known to this page.
  const rows = page.locator("#history-rows tr");
  await page.locator('#history-rows tr[data-state="SUCCEEDED"]').nth(1).waitFor();
  expect(await rows.count()).toBe(2);
  const row = rows.filter({ hasText: "gradient.png" });
  expect((await row.locator("[data-trace-id]").textContent())?.trim()).toBe(traceId);
  expect(await row.locator("[data-pdf-link]").getAttribute("href")).toMatch(/^https?:\/\//);
  expect(await page.getByRole("button", { name: "Older" }).isDisabled()).toBe(true);

  const screenshot = process.env["MCSV_CONSOLE_SCREENSHOT"];
  if (screenshot) {
    const path = resolve(screenshot);
    mkdirSync(dirname(path), { recursive: true });
    await page.screenshot({ path, fullPage: true });
  }

  // Paging: nine more conversions of the address (sent by the SDK) make eleven, more than a page of ten.
  const users = system.client(UserService, "user");
  const tiny = await photoLikePng(8, 8);
  for (let i = 0; i < 9; i++) await users.convertImage({ userEmail: "console@example.com", filename: `more-${i}.png`, source: { case: "imageData", value: tiny } });
  await page.getByRole("button", { name: "Refresh" }).click();
  await page.locator("#older:not([disabled])").waitFor();
  expect(await rows.count()).toBe(10);
  await page.getByRole("button", { name: "Older" }).click();
  await page.locator("#page-position").filter({ hasText: "Page 2" }).waitFor();
  expect(await rows.count()).toBe(1);
  expect(await page.getByRole("button", { name: "Older" }).isDisabled()).toBe(true);
  await page.getByRole("button", { name: "Newer" }).click();
  await page.locator("#page-position").filter({ hasText: "Page 1" }).waitFor();
  expect(await rows.count()).toBe(10);

  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByLabel("API key").waitFor();
  expect(await page.evaluate("sessionStorage.length")).toBe(0);
  expect(await page.locator("li[data-conversion]").count()).toBe(0);
  expect(await page.locator("[data-pdf-link]").count()).toBe(0);
  expect(errors).toEqual([]);
}, 60_000);

test("a wrong API key is refused, and nothing is shown or kept", async () => {
  const page = await browser.newPage();
  const errors = consoleErrors(page);
  await page.goto(`${system.urls.user}/console/`);
  await signIn(page, "wrong-api-key-0123456789abcdef", "console@example.com");
  const alert = page.locator("#sign-in-error");
  await alert.filter({ hasText: "the API key was refused" }).waitFor();
  expect(await page.locator("#workspace").isHidden()).toBe(true);
  expect(await page.locator("#history-rows tr").count()).toBe(0);
  expect(await page.evaluate("sessionStorage.length")).toBe(0);
  // The refused call itself is the only thing the browser logs (a 401 answer).
  expect(errors.filter((e) => !/status of 401/.test(e))).toEqual([]);
}, 30_000);

test("works by keyboard: every control has a name, Tab reaches sign-in in order, focus is visible, Enter signs in", async () => {
  const page = await browser.newPage();
  await page.goto(`${system.urls.user}/console/`);
  // Every form control the page shows has an accessible name (a label, or its text for a button).
  // (Strings, evaluated in the page: the tests are type-checked without the DOM library.)
  const unnamed = await page.evaluate(`[...document.querySelectorAll("input, select, button, textarea")]
    .filter((el) => !el.hidden && !el.labels?.length && !el.getAttribute("aria-label") && !el.textContent?.trim())
    .map((el) => el.outerHTML)`);
  expect(unnamed).toEqual([]);

  // The sign-in form, by keyboard alone.
  await page.locator("body").focus();
  const focusedId = () => page.evaluate<string>(`document.activeElement?.id ?? ""`);
  const reached: string[] = [];
  for (let i = 0; i < 6 && !reached.includes("email"); i++) {
    await page.keyboard.press("Tab");
    reached.push(await focusedId());
  }
  expect(reached).toContain("api-key");
  expect(reached.indexOf("api-key")).toBeLessThan(reached.indexOf("email"));
  // The focused control shows it.
  const outline = await page.evaluate<string>(`getComputedStyle(document.activeElement).outlineStyle`);
  expect(outline).not.toBe("none");
  await page.keyboard.type("console@example.com");
  await page.locator("#api-key").focus();
  await page.keyboard.type(TEST_API_KEY);
  await page.keyboard.press("Enter");
  await page.getByRole("button", { name: "Sign out" }).waitFor();
  // The file picker is a real input, reachable by Tab.
  let onFiles = false;
  for (let i = 0; i < 10 && !onFiles; i++) {
    await page.keyboard.press("Tab");
    onFiles = (await focusedId()) === "files";
  }
  expect(onFiles).toBe(true);
  await page.close();
}, 60_000);
