/**
 * CreateUser and GetUser against real Postgres: validation, unique emails, idempotent repeats, the welcome email
 * through the outbox (also when the job service is down for a while), and the /docs pages.
 */
import { request } from "node:http";
import { Code } from "@connectrpc/connect";
import { jobKeys } from "../../services/shared/tasks.js";
import { badFields, eventually, failure, httpGet, metricValue, startGateway, startInfra, type Gateway, type Infra } from "./support.js";

let infra: Infra;
let gw: Gateway;

beforeAll(async () => {
  infra = await startInfra();
  gw = await startGateway(infra);
});

afterAll(async () => {
  await gw?.stop();
  await infra?.stop();
});

afterEach(() => {
  infra.jobs.failing = false;
  // Every job the gateway enqueued kept to the task contract.
  expect(infra.jobs.invalid).toEqual([]);
});

describe("CreateUser", () => {
  test("creates the user and enqueues one welcome email", async () => {
    const asked = Date.now();
    const { user } = await gw.client.createUser({ name: "Ada Lovelace", email: "Ada@Example.COM" });
    expect(user).toMatchObject({ name: "Ada Lovelace", email: "Ada@example.com" });
    expect(user!.id).toMatch(/^[0-9a-f-]{36}$/);
    // Created during the call (Postgres's clock and this process's are the same machine's).
    const createdAt = Number(user!.createdAt!.seconds) * 1000 + user!.createdAt!.nanos / 1e6;
    expect(createdAt).toBeGreaterThanOrEqual(asked - 1_000);
    expect(createdAt).toBeLessThanOrEqual(Date.now() + 1_000);

    // The RPC delivers its outbox row at once, unless the background relay claimed it first: wait for either.
    const welcome = await eventually(() => {
      const jobs = infra.jobs.jobs("send_email", jobKeys.welcomeEmail(user!.id));
      return jobs.length > 0 ? jobs : undefined;
    }, "the welcome job");
    expect(welcome).toHaveLength(1);
    expect(welcome[0]!.args).toEqual({
      request: {
        userId: user!.id,
        userName: "Ada Lovelace",
        userEmail: "Ada@example.com",
        emailType: "EMAIL_TYPE_WELCOME",
        idempotencyKey: `welcome:${user!.id}`,
      },
    });
    expect((await gw.client.getUser({ id: user!.id })).user).toEqual(user);
  });

  test("names every bad field", async () => {
    const error = await failure(gw.client.createUser({ name: "", email: "not-an-email", idempotencyKey: "k".repeat(201) }));
    expect(error.code).toBe(Code.InvalidArgument);
    expect(badFields(error).sort()).toEqual(["email", "idempotencyKey", "name"]);

    for (const name of ["line\nbreak", "carriage\rreturn", "bell\u0007", "x".repeat(201)]) {
      const bad = await failure(gw.client.createUser({ name, email: "fine@example.com" }));
      expect(bad.code).toBe(Code.InvalidArgument);
      expect(badFields(bad)).toEqual(["name"]);
    }
    const badKey = await failure(gw.client.createUser({ name: "Fine", email: "fine@example.com", idempotencyKey: "tab\there" }));
    expect(badFields(badKey)).toEqual(["idempotencyKey"]);
    // JSON clients get the same detail.
    const json = await failure(gw.jsonClient.createUser({ name: "Fine", email: "a@@b" }));
    expect(badFields(json)).toEqual(["email"]);
  });

  test("an email is taken whatever its case; only the same idempotency key gets the user back", async () => {
    const { user } = await gw.client.createUser({ name: "Grace", email: "grace@example.com", idempotencyKey: "grace-1" });
    for (const attempt of [
      { name: "Grace", email: "GRACE@example.com" },
      { name: "Grace", email: "grace@EXAMPLE.com", idempotencyKey: "another-key" },
    ]) {
      const error = await failure(gw.client.createUser(attempt));
      expect(error.code).toBe(Code.AlreadyExists);
    }
    // The repeat returns the stored user, even with another name.
    const repeat = await gw.client.createUser({ name: "Grace Hopper", email: "Grace@Example.com", idempotencyKey: "grace-1" });
    expect(repeat.user).toEqual(user);
    await eventually(() => (infra.jobs.jobs("send_email", jobKeys.welcomeEmail(user!.id)).length > 0 ? true : undefined), "the welcome job");
    expect(infra.jobs.jobs("send_email", jobKeys.welcomeEmail(user!.id))).toHaveLength(1);
    expect(infra.jobs.calls.filter((c) => c.jobKey === jobKeys.welcomeEmail(user!.id))).toHaveLength(1);
  });

  test("concurrent identical requests create one user and one welcome email", async () => {
    const results = await Promise.all(
      Array.from({ length: 6 }, () => gw.client.createUser({ name: "Linus", email: "linus@example.com", idempotencyKey: "linus-once" })),
    );
    const ids = new Set(results.map((r) => r.user!.id));
    expect(ids.size).toBe(1);
    const [id] = [...ids];
    await eventually(() => (infra.jobs.calls.some((c) => c.jobKey === jobKeys.welcomeEmail(id!)) ? true : undefined), "the welcome job");
    expect(infra.jobs.calls.filter((c) => c.jobKey === jobKeys.welcomeEmail(id!))).toHaveLength(1);
    const { rows } = await gw.db.query("select count(*)::int as n from mcsv_user.users where lower(email) = 'linus@example.com'");
    expect(rows[0].n).toBe(1);
  });

  test("while the job service is down the user is created and the outbox delivers the welcome email later", async () => {
    infra.jobs.failing = true;
    const { user } = await gw.client.createUser({ name: "Barbara", email: "barbara@example.com", idempotencyKey: "b-1" });
    const key = jobKeys.welcomeEmail(user!.id);
    expect(infra.jobs.calls.some((c) => c.jobKey === key)).toBe(true);
    expect(infra.jobs.jobs("send_email", key)).toHaveLength(0);
    await eventually(() => (infra.jobs.calls.filter((c) => c.jobKey === key).length >= 2 ? true : undefined), "a retry from the outbox");
    expect(await metricValue(gw.service.url, "mcsv_outbox_pending")).toBeGreaterThanOrEqual(1);

    // A repeat meanwhile still returns the user and adds no second job.
    expect((await gw.client.createUser({ name: "Barbara", email: "barbara@example.com", idempotencyKey: "b-1" })).user).toEqual(user);

    infra.jobs.failing = false;
    await eventually(() => (infra.jobs.jobs("send_email", key).length === 1 ? true : undefined), "the welcome email after the job service came back");
    // The job service has the job; the relay marks the row sent just after it hears so.
    const rows = await eventually(async () => {
      const { rows } = await gw.db.query("select sent_at, attempts from mcsv_user.outbox where job_key = $1", [key]);
      return rows[0]?.sent_at ? rows : undefined;
    }, "the outbox row marked sent");
    expect(rows).toHaveLength(1);
    expect(rows[0].attempts).toBeGreaterThanOrEqual(2);
    await eventually(async () => ((await metricValue(gw.service.url, "mcsv_outbox_pending")) === 0 ? true : undefined), "an empty outbox");
  });
});

describe("GetUser", () => {
  test("not_found for an unknown id, invalid_argument for a malformed one", async () => {
    expect((await failure(gw.client.getUser({ id: "00000000-0000-4000-8000-000000000000" }))).code).toBe(Code.NotFound);
    const malformed = await failure(gw.client.getUser({ id: "1; drop table users" }));
    expect(malformed.code).toBe(Code.InvalidArgument);
    expect(badFields(malformed)).toEqual(["id"]);
    expect((await failure(gw.client.getUser({ id: "" }))).code).toBe(Code.InvalidArgument);
  });
});

describe("docs and health", () => {
  test("/docs serves Swagger UI listing the five OpenAPI documents", async () => {
    const redirect = await httpGet(`${gw.service.url}/docs`);
    expect(redirect.status).toBe(301);
    expect(redirect.headers.get("location")).toBe("/docs/");

    const page = await httpGet(`${gw.service.url}/docs/`);
    expect(page.status).toBe(200);
    expect(page.headers.get("content-type")).toContain("text/html");
    expect(page.body).toContain("swagger-ui-bundle.js");

    const bundle = await httpGet(`${gw.service.url}/docs/swagger-ui-bundle.js`);
    expect(bundle.status).toBe(200);
    expect(bundle.headers.get("content-type")).toContain("javascript");

    const init = await httpGet(`${gw.service.url}/docs/swagger-initializer.js`);
    for (const name of ["user", "job", "email", "image", "client"]) {
      expect(init.body).toContain(`./openapi/${name}.yaml`);
      const spec = await httpGet(`${gw.service.url}/docs/openapi/${name}.yaml`);
      expect(spec.status).toBe(200);
      expect(spec.headers.get("content-type")).toContain("yaml");
      expect(spec.body).toMatch(/^openapi: 3\./m);
    }
    expect((await httpGet(`${gw.service.url}/docs/openapi/secrets.yaml`)).status).toBe(404);
    expect((await httpGet(`${gw.service.url}/docs/package.json`)).status).toBe(404);
    // A raw path that climbs out of /docs (fetch would normalise it away).
    const climbing = await new Promise<number>((resolve, reject) => {
      request(`${gw.service.url}/docs/../../package.json`, { path: "/docs/../../package.json" }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      })
        .on("error", reject)
        .end();
    });
    expect(climbing).toBe(404);
  });

  test("stays ready and counts users", async () => {
    const ready = await httpGet(`${gw.service.url}/health/ready`);
    expect(ready.status).toBe(200);
    expect(JSON.parse(ready.body)).toMatchObject({ status: "ready", checks: { postgres: "ok", s3: "ok", conversion_listener: "ok" } });
    expect(await metricValue(gw.service.url, "mcsv_users_created_total")).toBeGreaterThanOrEqual(4);
  });
});
