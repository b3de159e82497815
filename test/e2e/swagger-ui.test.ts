/**
 * Swagger UI at /docs in real Chromium: the documents declare who may call what, so the page offers Authorize, and
 * "Try it out" with a tenant's API key creates a user on the gateway that served the page.
 */
import type { Browser } from "playwright-core";
import { UserService } from "@mcsv/sdk";
import { launchChromium } from "../support/browser.js";
import { TEST_API_KEY } from "../support/credentials.js";
import { startTestSystem, type TestSystem } from "../support/system.js";

let system: TestSystem;
let browser: Browser;

beforeAll(async () => {
  [system, browser] = await Promise.all([startTestSystem(), launchChromium()]);
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await system?.close();
});

test("Authorize with an API key, then Try it out on CreateUser: 200, and the user exists", async () => {
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on("pageerror", (error) => errors.push(error.message));
  await page.goto(`${system.urls.user}/docs/`);
  await page.getByRole("button", { name: "Authorize" }).first().click();
  // One form per scheme declared in the document: the tenant API key's, and the internal methods' credential.
  const dialog = page.locator(".modal-ux");
  await dialog.locator(".auth-container").filter({ hasText: "apiKey" }).locator("input").fill(TEST_API_KEY);
  await dialog.locator(".auth-container").filter({ hasText: "apiKey" }).getByRole("button", { name: "Apply credentials" }).click();
  await dialog.getByRole("button", { name: "Close" }).first().click();

  const operation = page.locator("#operations-UserService-CreateUser");
  await operation.locator(".opblock-summary").click();
  await operation.getByRole("button", { name: "Try it out" }).click();
  await operation.locator("textarea.body-param__text").fill(JSON.stringify({ name: "Swagger Ada", email: "swagger-ada@example.com", idempotencyKey: "swagger-ui" }));
  await operation.getByRole("button", { name: "Execute" }).click();

  const live = operation.locator(".live-responses-table .response");
  await live.first().waitFor();
  const status = (await live.locator(".response-col_status").first().innerText()).trim();
  const body = JSON.parse(await live.locator(".microlight").first().innerText()) as { user?: { id?: string; email?: string } };
  expect(status).toBe("200");
  expect(body.user?.email).toBe("swagger-ada@example.com");
  const { user } = await system.client(UserService, "user").getUser({ id: body.user!.id! });
  expect(user?.name).toBe("Swagger Ada");
  expect(errors).toEqual([]);
}, 60_000);
