/**
 * Tenants on the gateway, against real Postgres and s3rver: every UserService RPC across two tenants (another
 * tenant's rows are not found, never hinted at; unique addresses, idempotency keys, uploads and page tokens are per
 * tenant), the outbox rows' tenant, the API keys kept in Postgres (store, lookup, `npm run keys`), the per-tenant
 * rate limit and the cap on conversions in flight.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { Code, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { ConversionState, UserService } from "@mcsv/sdk";
import pg from "pg";
import { bearerInterceptor } from "../../services/shared/auth.js";
import { createLogger } from "../../services/shared/logger.js";
import { jobKeys } from "../../services/shared/tasks.js";
import { ApiKeys, createTenantKeyLookup } from "../../services/user/api-keys.js";
import { addToOutbox, OutboxRelay, type ClaimedJob } from "../../services/user/outbox.js";
import { decodePageToken, encodePageToken } from "../../services/user/page-token.js";
import { TenantRateLimiter } from "../../services/user/rate-limit.js";
import { TEST_INTERNAL_TOKEN, testAuthEnv } from "../support/credentials.js";
import { badFields, eventually, failure, image, startGateway, startInfra, type Gateway, type Infra } from "./support.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const GLOBEX_KEY = "globex-api-key-0123456789abcdef";
const BUSY_KEY = "busy-api-key-0123456789abcdef";
const CALM_KEY = "calm-api-key-0123456789abcdef";
const UNKNOWN_ID = "6f1c2b1e-0000-4000-8000-000000000000";

let infra: Infra;
let gw: Gateway;
let pool: pg.Pool;
let png: Uint8Array;
/** Tenant "acme" (the test key of test/support/credentials.ts) and tenant "globex". */
let acme: Client<typeof UserService>;
let globex: Client<typeof UserService>;
/** The operator, for the internal NotifyImageConverted. */
let operator: Client<typeof UserService>;

function clientOf(target: Gateway, credential: string): Client<typeof UserService> {
  return createClient(UserService, createConnectTransport({ baseUrl: target.service.url, httpVersion: "1.1", interceptors: [bearerInterceptor(credential)] }));
}

beforeAll(async () => {
  infra = await startInfra();
  gw = await startGateway(infra, { MCSV_API_KEYS: `${testAuthEnv.MCSV_API_KEYS},globex=${GLOBEX_KEY}` });
  pool = new pg.Pool({ connectionString: infra.postgres.url, max: 3 });
  pool.on("error", () => undefined);
  png = await image("png");
  acme = gw.client;
  globex = clientOf(gw, GLOBEX_KEY);
  operator = clientOf(gw, TEST_INTERNAL_TOKEN);
});

afterAll(async () => {
  await pool?.end();
  await gw?.stop();
  await infra?.stop();
});

afterEach(() => {
  expect(infra.jobs.invalid).toEqual([]);
});

/** The error's message with `id` replaced, to compare "another tenant's" with "nobody's". */
function shape(error: { code: Code; rawMessage: string }, id: string) {
  return { code: error.code, message: error.rawMessage.replaceAll(id, "<id>") };
}

async function convert(client: Client<typeof UserService>, userEmail: string, extra: { idempotencyKey?: string } = {}) {
  const { conversion } = await client.convertImage({ userEmail, source: { case: "imageData", value: png }, filename: "cat.png", ...extra });
  return conversion!;
}

describe("CreateUser and GetUser", () => {
  test("two tenants both register an address; already_exists only within a tenant", async () => {
    const a = (await acme.createUser({ name: "Ada of Acme", email: "ada@example.com" })).user!;
    const g = (await globex.createUser({ name: "Ada of Globex", email: "ADA@example.com" })).user!;
    expect(g.id).not.toBe(a.id);
    expect((await failure(acme.createUser({ name: "Ada again", email: "Ada@Example.com" }))).code).toBe(Code.AlreadyExists);
    expect((await failure(globex.createUser({ name: "Ada again", email: "ada@example.com" }))).code).toBe(Code.AlreadyExists);

    expect((await acme.getUser({ id: a.id })).user).toEqual(a);
    expect((await globex.getUser({ id: g.id })).user).toEqual(g);
    // Across tenants: not_found, worded as for an id nobody has.
    const foreign = await failure(globex.getUser({ id: a.id }));
    const unknown = await failure(globex.getUser({ id: UNKNOWN_ID }));
    expect(shape(foreign, a.id)).toEqual(shape(unknown, UNKNOWN_ID));
    expect(foreign.code).toBe(Code.NotFound);
    expect((await failure(acme.getUser({ id: g.id }))).code).toBe(Code.NotFound);

    const { rows } = await pool.query("select tenant from mcsv_user.users where lower(email) = 'ada@example.com' order by tenant");
    expect(rows.map((r) => r.tenant)).toEqual(["acme", "globex"]);
  });

  test("idempotency keys are per tenant: the same key in another tenant creates that tenant's user", async () => {
    const first = (await acme.createUser({ name: "Grace", email: "grace@example.com", idempotencyKey: "grace-1" })).user!;
    const other = (await globex.createUser({ name: "Grace", email: "grace@example.com", idempotencyKey: "grace-1" })).user!;
    expect(other.id).not.toBe(first.id);
    expect((await acme.createUser({ name: "Grace", email: "grace@example.com", idempotencyKey: "grace-1" })).user).toEqual(first);
    expect((await globex.createUser({ name: "Grace", email: "grace@example.com", idempotencyKey: "grace-1" })).user).toEqual(other);
    // Each welcome email job was written with its tenant.
    for (const [user, tenant] of [
      [first, "acme"],
      [other, "globex"],
    ] as const) {
      const { rows } = await pool.query("select tenant from mcsv_user.outbox where job_key = $1", [jobKeys.welcomeEmail(user.id)]);
      expect(rows).toEqual([{ tenant }]);
    }
  });
});

describe("conversions", () => {
  test("GetConversion and WatchConversion of another tenant's conversion are not_found", async () => {
    const mine = await convert(acme, "watch@example.com");
    expect((await acme.getConversion({ conversionId: mine.id })).conversion!.id).toBe(mine.id);

    const foreign = await failure(globex.getConversion({ conversionId: mine.id }));
    const unknown = await failure(globex.getConversion({ conversionId: UNKNOWN_ID }));
    expect(foreign.code).toBe(Code.NotFound);
    expect(shape(foreign, mine.id)).toEqual(shape(unknown, UNKNOWN_ID));

    const watch = async (client: Client<typeof UserService>, id: string) => {
      const states: ConversionState[] = [];
      for await (const { conversion } of client.watchConversion({ conversionId: id })) {
        states.push(conversion!.state);
        if (conversion!.state === ConversionState.QUEUED) await operator.notifyImageConverted({ conversionId: id, state: ConversionState.FAILED, error: "x" });
      }
      return states;
    };
    const foreignWatch = await failure(watch(globex, mine.id));
    const unknownWatch = await failure(watch(globex, UNKNOWN_ID));
    expect(foreignWatch.code).toBe(Code.NotFound);
    expect(shape(foreignWatch, mine.id)).toEqual(shape(unknownWatch, UNKNOWN_ID));
    // Its own tenant watches it to the end.
    expect(await watch(acme, mine.id)).toEqual([ConversionState.QUEUED, ConversionState.FAILED]);
  });

  test("ListConversions shows only the caller's tenant, and page tokens are bound to it", async () => {
    const email = "shared@example.com";
    const acmeIds = [];
    for (let i = 0; i < 3; i++) acmeIds.push((await convert(acme, email)).id);
    const globexIds = [(await convert(globex, email)).id, (await convert(globex, email)).id];

    const first = await acme.listConversions({ userEmail: email, pageSize: 2 });
    expect(first.conversions.map((c) => c.id)).toEqual([acmeIds[2], acmeIds[1]]);
    expect(first.nextPageToken).not.toBe("");
    // Another tenant's token, for the same address, is not a token of its listing.
    const stolen = await failure(globex.listConversions({ userEmail: email, pageSize: 2, pageToken: first.nextPageToken }));
    expect(stolen.code).toBe(Code.InvalidArgument);
    expect(badFields(stolen)).toEqual(["pageToken"]);
    expect(stolen.rawMessage).toContain("is not a token of this listing");

    const second = await acme.listConversions({ userEmail: email, pageSize: 2, pageToken: first.nextPageToken });
    expect(second.conversions.map((c) => c.id)).toEqual([acmeIds[0]]);
    expect(second.nextPageToken).toBe("");
    const theirs = await globex.listConversions({ userEmail: email, pageSize: 10 });
    expect(theirs.conversions.map((c) => c.id)).toEqual([globexIds[1], globexIds[0]]);
  });

  test("page tokens name their tenant and address", () => {
    const token = encodePageToken("42", { tenant: "acme", email: "a@example.com" });
    expect(decodePageToken(token, { tenant: "acme", email: "A@example.com" })).toBe("42");
    expect(decodePageToken(token, { tenant: "globex", email: "a@example.com" })).toBeUndefined();
    expect(decodePageToken(token, { tenant: "acme", email: "b@example.com" })).toBeUndefined();
  });

  test("idempotency keys are per tenant", async () => {
    const request = { userEmail: "idem@example.com", idempotencyKey: "same-key" };
    const a = await convert(acme, request.userEmail, request);
    const g = await convert(globex, request.userEmail, request);
    expect(g.id).not.toBe(a.id);
    expect((await convert(acme, request.userEmail, request)).id).toBe(a.id);
    expect((await convert(globex, request.userEmail, request)).id).toBe(g.id);
    expect(infra.jobs.calls.filter((c) => c.jobKey === jobKeys.convertImage(a.id) || c.jobKey === jobKeys.convertImage(g.id))).toHaveLength(2);
  });

  test("an upload of one tenant cannot be converted by another", async () => {
    const ticket = await acme.createUploadUrl({ userEmail: "up@example.com", contentType: "image/png", size: BigInt(png.byteLength) });
    const put = await fetch(ticket.uploadUrl, { method: "PUT", headers: ticket.headers, body: png });
    await put.arrayBuffer();
    expect(put.status).toBe(200);

    const foreign = await failure(globex.convertImage({ userEmail: "up@example.com", source: { case: "uploadId", value: ticket.uploadId } }));
    const unknown = await failure(globex.convertImage({ userEmail: "up@example.com", source: { case: "uploadId", value: UNKNOWN_ID } }));
    expect(foreign.code).toBe(Code.NotFound);
    expect(shape(foreign, ticket.uploadId)).toEqual(shape(unknown, UNKNOWN_ID));
    // The attempt left the upload to its owner.
    const { conversion } = await acme.convertImage({ userEmail: "up@example.com", source: { case: "uploadId", value: ticket.uploadId } });
    expect(conversion).toMatchObject({ state: ConversionState.QUEUED, inputFormat: "png" });
    const { rows } = await pool.query("select tenant from mcsv_user.uploads where id = $1", [ticket.uploadId]);
    expect(rows).toEqual([{ tenant: "acme" }]);
  });

  test("NotifyImageConverted is internal and finds any tenant's conversion by id; what it causes carries the tenant", async () => {
    await acme.createUser({ name: "Linus of Acme", email: "linus@example.com" });
    await globex.createUser({ name: "Linus of Globex", email: "linus@example.com" });
    const conversion = await convert(globex, "linus@example.com");
    const { conversion: failed } = await operator.notifyImageConverted({ conversionId: conversion.id, state: ConversionState.FAILED, error: "broken" });
    expect(failed!.state).toBe(ConversionState.FAILED);
    // A tenant's key may not call it.
    expect((await failure(globex.notifyImageConverted({ conversionId: conversion.id, state: ConversionState.FAILED }))).code).toBe(Code.PermissionDenied);

    const { rows } = await pool.query<{ tenant: string; task: string }>("select tenant, task from mcsv_user.outbox where job_key like $1 order by task", [`%${conversion.id}%`]);
    expect(rows.length).toBeGreaterThanOrEqual(2);
    expect(new Set(rows.map((r) => r.tenant))).toEqual(new Set(["globex"]));
    // The email greets the tenant's own user of that address.
    const [email] = await eventually(() => {
      const jobs = infra.jobs.jobs("send_email", jobKeys.conversionEmail(conversion.id));
      return jobs.length > 0 ? jobs : undefined;
    }, "the conversion email job");
    expect((email!.args["request"] as { userName: string }).userName).toBe("Linus of Globex");
  });

  test("the relay hands each claimed job with its tenant", async () => {
    // In one transaction that is rolled back, so that the gateway's own relay never sees the row.
    const client = await pool.connect();
    try {
      await client.query("begin");
      const ids = await addToOutbox(client, "globex", [{ task: "cleanup_storage", jobKey: "tenant-test:cleanup", args: { objectKey: "originals/x" } }]);
      const handed: ClaimedJob[] = [];
      const relay = new OutboxRelay(client, async (jobs) => void handed.push(...jobs), createLogger("test", { level: "error" }), { pollMs: 60_000 });
      await relay.deliverNow(ids);
      expect(handed).toEqual([expect.objectContaining({ tenant: "globex", jobKey: "tenant-test:cleanup", task: "cleanup_storage" })]);
    } finally {
      await client.query("rollback");
      client.release();
    }
  });
});

describe("API keys kept in Postgres", () => {
  test("create shows the key once and keeps only its digest; list and revoke by prefix", async () => {
    const keys = new ApiKeys(pool);
    const created = await keys.create("initech");
    expect(created.key).toMatch(/^mcsv_[a-z2-7]{8}_[A-Za-z0-9_-]{43}$/);
    expect(created.key.startsWith(`mcsv_${created.prefix}_`)).toBe(true);
    const { rows } = await pool.query("select * from mcsv_user.api_keys where prefix = $1", [created.prefix]);
    expect(rows).toHaveLength(1);
    expect(JSON.stringify(rows[0])).not.toContain(created.key.slice(-43));
    expect(Buffer.from(rows[0].key_sha256).equals(createHash("sha256").update(created.key).digest())).toBe(true);

    const listed = await keys.list("initech");
    expect(listed).toEqual([expect.objectContaining({ prefix: created.prefix, tenant: "initech" })]);
    expect(listed[0]!.revokedAt).toBeUndefined();
    expect(JSON.stringify(listed)).not.toContain(created.key);
    expect((await keys.list()).map((k) => k.prefix)).toContain(created.prefix);

    const revoked = await keys.revoke(created.prefix);
    expect(revoked).toMatchObject({ prefix: created.prefix, tenant: "initech" });
    expect(revoked!.revokedAt).toBeInstanceOf(Date);
    // Revoking again keeps the first time.
    expect((await keys.revoke(created.prefix))!.revokedAt).toEqual(revoked!.revokedAt);
    expect(await keys.revoke("zzzzzzzz")).toBeUndefined();
    expect(await keys.revoke("not a prefix")).toBeUndefined();

    await expect(keys.create("Not A Tenant")).rejects.toThrow(RangeError);
    await expect(keys.create("")).rejects.toThrow(RangeError);
  });

  test("the lookup finds the tenant, refuses a wrong secret and malformed input without throwing, and forgets revoked keys within its cache time", async () => {
    const keys = new ApiKeys(pool);
    const { key, prefix } = await keys.create("hooli");
    let now = 1_000_000;
    const lookup = createTenantKeyLookup(pool, { now: () => now });
    expect(await lookup(key)).toBe("hooli");

    const secret = key.slice(-43);
    const wrongSecret = `mcsv_${prefix}_${secret[0] === "A" ? "B" : "A"}${secret.slice(1)}`;
    const malformed = [
      "",
      "mcsv_",
      `mcsv_${prefix}_`,
      `${key}x`,
      key.slice(0, -1),
      key.toUpperCase(),
      `mcsv_${prefix}_${"!".repeat(43)}`,
      `mcsv_ZZZZZZZZ_${secret}`,
      "x".repeat(100_000),
      "mcsv_\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9_\u{1F600}",
      "\u0000",
    ];
    for (const candidate of [wrongSecret, `mcsv_zzzzzzzz_${secret}`, ...malformed]) await expect(lookup(candidate)).resolves.toBeUndefined();
    await expect(lookup(undefined as unknown as string)).resolves.toBeUndefined();

    await keys.revoke(prefix);
    // Remembered for up to 10 s, then the revocation holds; a fresh lookup knows at once.
    now += 9_000;
    expect(await lookup(key)).toBe("hooli");
    now += 1_001;
    expect(await lookup(key)).toBeUndefined();
    expect(await createTenantKeyLookup(pool)(key)).toBeUndefined();

    const { rows } = await pool.query("select last_used_at from mcsv_user.api_keys where prefix = $1", [prefix]);
    expect(rows[0].last_used_at).toBeInstanceOf(Date);
  });

  test("the gateway accepts a stored key as its tenant, and refuses a revoked one", async () => {
    const keys = new ApiKeys(pool);
    const { key } = await keys.create("initrode");
    const initrode = clientOf(gw, key);
    const user = (await initrode.createUser({ name: "Ada of Initrode", email: "ada@example.com" })).user!;
    expect((await initrode.getUser({ id: user.id })).user).toEqual(user);
    expect((await failure(acme.getUser({ id: user.id }))).code).toBe(Code.NotFound);
    const { rows } = await pool.query("select tenant from mcsv_user.users where id = $1", [user.id]);
    expect(rows).toEqual([{ tenant: "initrode" }]);

    const revoked = await keys.create("initrode");
    await keys.revoke(revoked.prefix);
    expect((await failure(clientOf(gw, revoked.key).getUser({ id: user.id }))).code).toBe(Code.Unauthenticated);
  });

  test("npm run keys creates, lists and revokes", async () => {
    const run = async (...args: string[]) => {
      try {
        const { stdout, stderr } = await promisify(execFile)("npm", ["run", "--silent", "keys", "--", ...args], {
          cwd: ROOT,
          env: { ...process.env, NODE_OPTIONS: "", DATABASE_URL: infra.postgres.url },
        });
        return { code: 0, stdout, stderr };
      } catch (error) {
        const failed = error as { code: number; stdout: string; stderr: string };
        return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
      }
    };
    const created = await run("create", "umbrella");
    expect(created.code).toBe(0);
    const key = created.stdout.trim();
    expect(key).toMatch(/^mcsv_[a-z2-7]{8}_[A-Za-z0-9_-]{43}$/);
    expect(created.stderr).toContain("shown only this once");
    const prefix = key.slice(5, 13);
    expect(await createTenantKeyLookup(pool)(key)).toBe("umbrella");

    const listed = await run("list", "umbrella");
    expect(listed.code).toBe(0);
    expect(listed.stdout).toContain(prefix);
    expect(listed.stdout).toContain("active");
    expect(listed.stdout).not.toContain(key.slice(-43));

    const revoked = await run("revoke", prefix);
    expect(revoked.code).toBe(0);
    expect(revoked.stdout).toContain("revoked");
    expect(await createTenantKeyLookup(pool)(key)).toBeUndefined();
    expect((await run("revoke", "zzzzzzzz")).code).toBe(1);
    expect((await run("frobnicate")).code).toBe(2);
  });
});

describe("per-tenant limits", () => {
  test("the token bucket refills at its rate and tells when the next request fits", () => {
    let now = 0;
    const limiter = new TenantRateLimiter({ perSecond: 2, burst: 3, now: () => now });
    for (let i = 0; i < 3; i++) limiter.take("a");
    let refused: unknown;
    try {
      limiter.take("a");
    } catch (error) {
      refused = error;
    }
    expect(refused).toMatchObject({ code: Code.ResourceExhausted });
    expect((refused as { metadata: Headers }).metadata.get("retry-after")).toBe("1");
    limiter.take("b");
    now += 500;
    limiter.take("a");
    expect(() => limiter.take("a")).toThrow(/retry in 1 s/);
    now += 10_000;
    for (let i = 0; i < 3; i++) limiter.take("a");
    expect(() => limiter.take("a")).toThrow();
    // 0 turns it off.
    const off = new TenantRateLimiter({ perSecond: 0, burst: 1 });
    for (let i = 0; i < 100; i++) off.take("a");
  });

  test("a tenant over its rate gets resource_exhausted with retry-after; another tenant is not slowed", async () => {
    const limited = await startGateway(infra, { MCSV_API_KEYS: `busy=${BUSY_KEY},calm=${CALM_KEY}`, TENANT_RATE_PER_SECOND: "1", TENANT_RATE_BURST: "3" });
    try {
      const busy = clientOf(limited, BUSY_KEY);
      for (let i = 0; i < 3; i++) expect((await failure(busy.getUser({ id: UNKNOWN_ID }))).code).toBe(Code.NotFound);
      const refused = await failure(busy.getUser({ id: UNKNOWN_ID }));
      expect(refused.code).toBe(Code.ResourceExhausted);
      expect(refused.metadata.get("retry-after")).toBe("1");
      expect(refused.rawMessage).toContain("retry in 1 s");
      // Every RPC counts, streams included.
      expect((await failure(busy.listConversions({ userEmail: "a@example.com" }))).code).toBe(Code.ResourceExhausted);
      expect((await failure(busy.createUser({ name: "x", email: "x@example.com" }))).code).toBe(Code.ResourceExhausted);
      const calm = clientOf(limited, CALM_KEY);
      expect((await failure(calm.getUser({ id: UNKNOWN_ID }))).code).toBe(Code.NotFound);
      await new Promise((resolve) => setTimeout(resolve, 1_100));
      expect((await failure(busy.getUser({ id: UNKNOWN_ID }))).code).toBe(Code.NotFound);
    } finally {
      await limited.stop();
    }
  });

  test("conversions in flight are capped per tenant, exactly under concurrency, with a retry hint", async () => {
    const capped = await startGateway(infra, { MCSV_API_KEYS: `busy=${BUSY_KEY},calm=${CALM_KEY}`, TENANT_MAX_CONVERSIONS_IN_FLIGHT: "2" });
    try {
      const busy = clientOf(capped, BUSY_KEY);
      const calm = clientOf(capped, CALM_KEY);
      const internal = clientOf(capped, TEST_INTERNAL_TOKEN);
      // Concurrent requests: exactly the cap gets through.
      const attempts = await Promise.allSettled(Array.from({ length: 6 }, (_, i) => convert(busy, `rush-${i}@example.com`)));
      const accepted = attempts.filter((a) => a.status === "fulfilled").map((a) => (a as PromiseFulfilledResult<{ id: string }>).value);
      expect(accepted).toHaveLength(2);
      const refused = await failure(convert(busy, "one-more@example.com"));
      expect(refused.code).toBe(Code.ResourceExhausted);
      expect(refused.metadata.get("retry-after")).toBe("5");
      expect(refused.rawMessage).toContain("retry in 5 s");
      const { rows } = await pool.query("select count(*)::int as n from mcsv_user.conversions where tenant = 'busy'");
      expect(rows[0].n).toBe(2);

      // Another tenant is not held back, and a repeat of an accepted request is not a new conversion.
      const first = await convert(calm, "calm@example.com", { idempotencyKey: "calm-1" });
      await convert(calm, "calm@example.com");
      expect((await failure(convert(calm, "calm@example.com"))).code).toBe(Code.ResourceExhausted);
      expect((await convert(calm, "calm@example.com", { idempotencyKey: "calm-1" })).id).toBe(first.id);

      // Processing still counts; a finished conversion frees its place.
      await internal.notifyImageConverted({ conversionId: accepted[0]!.id, state: ConversionState.PROCESSING });
      expect((await failure(convert(busy, "one-more@example.com"))).code).toBe(Code.ResourceExhausted);
      await internal.notifyImageConverted({ conversionId: accepted[0]!.id, state: ConversionState.FAILED, error: "x" });
      expect((await convert(busy, "one-more@example.com")).state).toBe(ConversionState.QUEUED);
    } finally {
      await capped.stop();
    }
  });
});
