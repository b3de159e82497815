/**
 * The web console at /console/ in real headless Chromium against the real system: signing in with an API key,
 * converting PNGs watched live through WatchConversion, their PDFs (checked by qpdf) and trace ids, the history
 * and its pages, the security headers, a wrong key refused, dropped images made one PDF (checked by poppler), and
 * use by keyboard. MCSV_CONSOLE_SCREENSHOT=docs/images/console.png saves a picture of the console after the conversions.
 */
import { execFile } from "node:child_process";
import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { promisify } from "node:util";
import type { Browser, Page } from "playwright-core";
import { PageSize, UserService } from "@mcsv/sdk";
import { launchChromium } from "../support/browser.js";
import { TEST_API_KEY } from "../support/credentials.js";
import { photoLikePng, qpdfCheck } from "../support/pdf.js";
import { pageImages, pdfInfo, pdfText } from "../support/pdf.js";
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

/** Drops files on the element as a person would: a drop event whose DataTransfer holds them, in this order. */
async function dropFiles(page: Page, selector: string, files: Array<{ name: string; mimeType: string; buffer: Buffer }>): Promise<void> {
  const described = JSON.stringify(files.map((file) => ({ name: file.name, type: file.mimeType, base64: file.buffer.toString("base64") })));
  // (A string, evaluated in the page: the tests are type-checked without the DOM library.)
  const dataTransfer = await page.evaluateHandle(`(() => {
    const transfer = new DataTransfer();
    for (const file of ${described}) {
      const bytes = Uint8Array.from(atob(file.base64), (c) => c.charCodeAt(0));
      transfer.items.add(new File([bytes], file.name, { type: file.type }));
    }
    return transfer;
  })()`);
  await page.dispatchEvent(selector, "drop", { dataTransfer });
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

test("dropped images become one A4 PDF with a title and searchable text, its card following it page by page", async () => {
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  const errors = consoleErrors(page);
  await page.goto(`${system.urls.user}/console/`);
  await signIn(page, TEST_API_KEY, "documents.console@example.com");
  await page.getByRole("button", { name: "Sign out" }).waitFor();

  await page.getByLabel("One PDF of all the images").check();
  // The fit applies to a page size only.
  expect(await page.getByLabel("Fit").isDisabled()).toBe(true);
  await page.getByLabel("Page size").selectOption({ label: "A4" });
  expect(await page.getByLabel("Fit").isDisabled()).toBe(false);
  await page.getByLabel("Title").fill("Two scans");
  await page.getByLabel("Searchable text (OCR)").check();
  expect(await page.getByLabel("OCR languages").inputValue()).toBe("eng");

  // Taller than wide, so that their A4 pages stay upright (orientation auto); the first holds a line of text.
  const drawn = await promisify(execFile)(
    "convert",
    ["-size", "600x800", "xc:white", "-font", "DejaVu-Sans", "-pointsize", "40", "-fill", "black", "-annotate", "+40+160", "Invoice number 4711", "png:-"],
    { encoding: "buffer" },
  );
  await dropFiles(page, "#drop-zone", [
    { name: "invoice.png", mimeType: "image/png", buffer: drawn.stdout },
    { name: "tall.png", mimeType: "image/png", buffer: await photoLikePng(64, 96) },
  ]);

  const cards = page.locator("li[data-conversion]");
  const card = cards.filter({ hasText: "Two scans.pdf" });
  expect(await card.locator(".card-images").textContent()).toBe("2 images: invoice.png, tall.png");
  // OCR runs after the last page: "Page 2 of 2" stays up meanwhile.
  await card.locator("[data-pages]").filter({ hasText: /^Page [12] of 2$/ }).waitFor({ timeout: 60_000 });
  await card.and(page.locator('[data-state="SUCCEEDED"]')).waitFor({ timeout: 60_000 });
  expect(await cards.count()).toBe(1);
  expect(await card.locator("[data-pages]").textContent()).toBe("2 pages");
  const words = /^(\d+) words recognised \(eng\)$/.exec((await card.locator("[data-text]").textContent()) ?? "");
  expect(Number(words?.[1])).toBeGreaterThanOrEqual(3);

  const pdf = new Uint8Array(await (await fetch((await card.locator("[data-pdf-link]").getAttribute("href"))!)).arrayBuffer());
  const a4 = [expect.closeTo(595.28, 1), expect.closeTo(841.89, 1)];
  expect(await pdfInfo(pdf)).toMatchObject({ pages: 2, pageSizes: [a4, a4], title: "Two scans" });
  // The drop order.
  expect((await pageImages(pdf)).map(({ page, width, height }) => [page, width, height])).toEqual([
    [1, 600, 800],
    [2, 64, 96],
  ]);
  // The words in order (pdftotext may break the OCR layer's line between them).
  expect(await pdfText(pdf)).toMatch(/Invoice\s+number\s+4711/);
  const { conversions } = await system.client(UserService, "user").listConversions({ userEmail: "documents.console@example.com" });
  expect(conversions).toHaveLength(1);
  expect(conversions[0]).toMatchObject({ filename: "Two scans.pdf", pageCount: 2, options: { layout: { size: PageSize.A4 }, ocrLanguages: ["eng"] } });
  expect(errors).toEqual([]);
  await page.close();
}, 90_000);

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
  for (let i = 0; i < 30 && !onFiles; i++) {
    await page.keyboard.press("Tab");
    onFiles = (await focusedId()) === "files";
  }
  expect(onFiles).toBe(true);
  await page.close();
}, 60_000);
