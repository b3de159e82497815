/**
 * Webhook signing secrets on the gateway, against real Postgres: GetWebhookSecret (created on first use, the same
 * after, one per tenant even under concurrent first uses), RotateWebhookSecret (a new secret; the previous one keeps
 * signing until its grace period ends), the internal GetWebhookSigningSecrets that the job service signs callbacks
 * with, and who may call which. Signing and verifying callbacks: test/job/tasks.test.ts and test/job/callback.test.ts.
 */
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { UserService } from "@mcsv/sdk";
import { Webhook } from "standardwebhooks";
import { bearerInterceptor } from "../../services/shared/auth.js";
import { USER_PUBLIC_METHODS } from "../../services/user/public-methods.js";
import { TEST_API_KEY, TEST_INTERNAL_TOKEN, TEST_SERVICE_TOKENS, TEST_TENANT, testAuthEnv } from "../support/credentials.js";
import { badFields, failure, startGateway, startInfra, type Gateway, type Infra } from "./support.js";

const GLOBEX_KEY = "globex-api-key-0123456789abcdef";
const FRESH_KEY = "fresh-api-key-0123456789abcdef";
const GRACE_HOURS = 2;
const SECRET_FORM = /^whsec_[A-Za-z0-9+/]{43}=$/;

let infra: Infra;
let gw: Gateway;
let acme: Client<typeof UserService>;
let globex: Client<typeof UserService>;
/** The job service, with its own credential: the one caller of GetWebhookSigningSecrets besides the operator. */
let jobService: Client<typeof UserService>;
let operator: Client<typeof UserService>;

const clientOf = (credential: string) =>
  createClient(UserService, createConnectTransport({ baseUrl: gw.service.url, httpVersion: "1.1", interceptors: [bearerInterceptor(credential)] }));

beforeAll(async () => {
  infra = await startInfra();
  gw = await startGateway(infra, { MCSV_API_KEYS: `${testAuthEnv.MCSV_API_KEYS},globex=${GLOBEX_KEY},fresh=${FRESH_KEY}`, WEBHOOK_SECRET_GRACE_HOURS: String(GRACE_HOURS) });
  acme = gw.client;
  globex = clientOf(GLOBEX_KEY);
  jobService = clientOf(TEST_SERVICE_TOKENS.job);
  operator = clientOf(TEST_INTERNAL_TOKEN);
});

afterAll(async () => {
  await gw?.stop();
  await infra?.stop();
});

const signingSecrets = async (tenant: string) => (await jobService.getWebhookSigningSecrets({ tenant })).secrets;

test("GetWebhookSecret creates the tenant's secret on first use and returns the same one after; each tenant has its own", async () => {
  const first = await acme.getWebhookSecret({});
  expect(first.secret).toMatch(SECRET_FORM);
  expect(Math.abs(timestampDate(first.createdAt!).getTime() - Date.now())).toBeLessThan(60_000);
  expect(await acme.getWebhookSecret({})).toEqual(first);
  // The standardwebhooks library takes it as it is.
  expect(() => new Webhook(first.secret)).not.toThrow();

  const other = await globex.getWebhookSecret({});
  expect(other.secret).toMatch(SECRET_FORM);
  expect(other.secret).not.toBe(first.secret);
  expect((await signingSecrets(TEST_TENANT)).map((s) => s.secret)).toEqual([first.secret]);
  expect((await signingSecrets("globex")).map((s) => s.secret)).toEqual([other.secret]);
});

test("concurrent first uses agree on one secret", async () => {
  const racer = "racing-tenant";
  const answers = await Promise.all(Array.from({ length: 8 }, () => signingSecrets(racer)));
  const secrets = new Set(answers.map((a) => a.map((s) => s.secret).join(" ")));
  expect(secrets.size).toBe(1);
  const { rows } = await gw.db.query("select * from mcsv_user.webhook_secrets where tenant = $1", [racer]);
  expect(rows).toHaveLength(1);
});

test("RotateWebhookSecret: a new secret is current; the previous one keeps signing until its grace period ends, only for that tenant", async () => {
  const before = (await acme.getWebhookSecret({})).secret;
  const globexBefore = (await globex.getWebhookSecret({})).secret;
  const rotated = await acme.rotateWebhookSecret({});
  expect(rotated.secret).toMatch(SECRET_FORM);
  expect(rotated.secret).not.toBe(before);
  const graceEnds = timestampDate(rotated.previousExpiresAt!).getTime();
  expect(Math.abs(graceEnds - (Date.now() + GRACE_HOURS * 3_600_000))).toBeLessThan(60_000);
  expect((await acme.getWebhookSecret({})).secret).toBe(rotated.secret);

  // Both sign now, the new one first; the previous one says when it stops.
  const now = await signingSecrets(TEST_TENANT);
  expect(now.map((s) => s.secret)).toEqual([rotated.secret, before]);
  expect(now[0]!.expiresAt).toBeUndefined();
  expect(timestampDate(now[1]!.expiresAt!).getTime()).toBe(graceEnds);
  // The other tenant is untouched.
  expect((await signingSecrets("globex")).map((s) => s.secret)).toEqual([globexBefore]);

  // Once the grace period is over, only the new secret signs.
  await gw.db.query("update mcsv_user.webhook_secrets set expires_at = now() - interval '1 second' where secret = $1", [before]);
  expect((await signingSecrets(TEST_TENANT)).map((s) => s.secret)).toEqual([rotated.secret]);

  // Rotating twice within the grace period: every secret still in its grace signs, newest first.
  const second = await acme.rotateWebhookSecret({});
  const third = await acme.rotateWebhookSecret({});
  expect((await signingSecrets(TEST_TENANT)).map((s) => s.secret)).toEqual([third.secret, second.secret, rotated.secret]);
  // Ended ones are deleted by the next rotation, not kept for ever.
  const { rows } = await gw.db.query("select 1 from mcsv_user.webhook_secrets where secret = $1", [before]);
  expect(rows).toHaveLength(0);
});

test("the first rotation of a tenant without a secret has no previous one", async () => {
  const rotated = await clientOf(FRESH_KEY).rotateWebhookSecret({});
  expect(rotated.secret).toMatch(SECRET_FORM);
  expect(rotated.previousExpiresAt).toBeUndefined();
  expect((await signingSecrets("fresh")).map((s) => s.secret)).toEqual([rotated.secret]);
});

test("concurrent rotations all succeed and leave exactly one current secret", async () => {
  const results = await Promise.all(Array.from({ length: 5 }, () => globex.rotateWebhookSecret({})));
  expect(new Set(results.map((r) => r.secret)).size).toBe(5);
  const { rows } = await gw.db.query("select secret from mcsv_user.webhook_secrets where tenant = 'globex' and expires_at is null");
  expect(rows).toHaveLength(1);
  expect((await globex.getWebhookSecret({})).secret).toBe(rows[0]!.secret);
});

test("who may call what: tenants their own secret, the job service and the operator the signing secrets of any tenant", async () => {
  expect(USER_PUBLIC_METHODS).toEqual(expect.arrayContaining(["GetWebhookSecret", "RotateWebhookSecret"]));
  expect(USER_PUBLIC_METHODS).not.toContain("GetWebhookSigningSecrets");
  // A tenant cannot read another tenant's signing secrets through the internal RPC.
  expect((await failure(clientOf(TEST_API_KEY).getWebhookSigningSecrets({ tenant: "globex" }))).code).toBe(Code.PermissionDenied);
  expect((await failure(globex.getWebhookSigningSecrets({ tenant: "globex" }))).code).toBe(Code.PermissionDenied);
  // The public RPCs act for an API key's tenant: a service or the operator has none.
  expect((await failure(operator.getWebhookSecret({}))).code).toBe(Code.PermissionDenied);
  expect((await failure(jobService.rotateWebhookSecret({}))).code).toBe(Code.PermissionDenied);
  // The image service's credential opens none of it.
  expect((await failure(clientOf(TEST_SERVICE_TOKENS.image).getWebhookSigningSecrets({ tenant: "globex" }))).code).toBe(Code.PermissionDenied);
  expect((await operator.getWebhookSigningSecrets({ tenant: "globex" })).secrets).not.toHaveLength(0);
  for (const tenant of ["", "Not A Tenant", "x".repeat(64), "../etc"]) {
    const error = await failure(jobService.getWebhookSigningSecrets({ tenant }));
    expect({ tenant, code: error.code, fields: badFields(error) }).toEqual({ tenant, code: Code.InvalidArgument, fields: ["tenant"] });
  }
});
