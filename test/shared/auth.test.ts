/** The credential model (auth.ts): which credential opens which method, and what each refusal says. */
import { Code, ConnectError } from "@connectrpc/connect";
import { apiKeysEnv, authPolicy, hexDigestOf, INTERNAL_CALLS, SecretSet, tenantOfBareKey, type AuthPolicy } from "../../services/shared/auth.js";
import { loadConfig } from "../../services/shared/config.js";
import { SERVICE_KEYS, type ServiceKey } from "../../services/shared/topology.js";

const KEY_A = "key-a-0123456789abcdefghijklmn";
const KEY_B = "key-b-0123456789abcdefghijklmn";
const OPERATOR = "operator-0123456789abcdefghij";
const token = (key: ServiceKey) => `${key}-service-credential-0123456789`;
const internal = {
  MCSV_OPERATOR_TOKEN_SHA256: hexDigestOf(OPERATOR),
  MCSV_SERVICE_TOKEN_SHA256S: Object.fromEntries(SERVICE_KEYS.map((key) => [key, hexDigestOf(token(key))])),
};
const gateway = authPolicy({ internal, publicMethods: ["CreateUser"], apiKeys: [{ tenant: "acme", key: KEY_A }], lookupTenantKey: async (key) => (key === KEY_B ? "globex" : undefined) });

async function outcome(policy: AuthPolicy, credential: string | undefined, service: string, method: string): Promise<string> {
  try {
    const principal = await policy.authenticate(credential, service, method);
    return principal.kind === "tenant" ? `tenant:${principal.tenant}` : principal.kind === "service" ? `service:${principal.service}` : "operator";
  } catch (error) {
    return Code[ConnectError.from(error).code];
  }
}

test("a presented secret matches only when it equals one of the accepted ones exactly", () => {
  const set = new SecretSet([KEY_A, KEY_B]);
  expect(set.matches(KEY_A)).toBe(true);
  expect(set.matches(KEY_B)).toBe(true);
  for (const wrong of ["", KEY_A.slice(0, -1), `${KEY_A}x`, KEY_A.toUpperCase(), ` ${KEY_A}`, OPERATOR]) expect(set.matches(wrong)).toBe(false);
  expect(new SecretSet([]).matches(KEY_A)).toBe(false);
});

test("public methods take API keys, from the environment or the key store, and name the tenant", async () => {
  expect(await outcome(gateway, KEY_A, "mcsv.v1.UserService", "CreateUser")).toBe("tenant:acme");
  expect(await outcome(gateway, KEY_B, "mcsv.v1.UserService", "CreateUser")).toBe("tenant:globex");
  expect(await outcome(gateway, undefined, "mcsv.v1.UserService", "CreateUser")).toBe("Unauthenticated");
  expect(await outcome(gateway, "unknown-key-0123456789abcdefgh", "mcsv.v1.UserService", "CreateUser")).toBe("Unauthenticated");
  // Known credentials that are not API keys open no tenant's data.
  expect(await outcome(gateway, OPERATOR, "mcsv.v1.UserService", "CreateUser")).toBe("PermissionDenied");
  expect(await outcome(gateway, token("job"), "mcsv.v1.UserService", "CreateUser")).toBe("PermissionDenied");
});

test("each service's credential opens exactly the methods INTERNAL_CALLS grants it; the operator's opens all", async () => {
  const internalMethods: [string, string][] = [
    ["mcsv.v1.JobService", "EnqueueJob"],
    ["mcsv.v1.JobService", "EnqueueJobs"],
    ["mcsv.v1.JobService", "ListJobs"],
    ["mcsv.v1.EmailService", "SendEmail"],
    ["mcsv.v1.ImageService", "ConvertImage"],
    ["mcsv.v1.UserService", "NotifyImageConverted"],
    ["mcsv.v1.ClientService", "NotifyPdfReady"],
    ["mcsv.v1.ClientService", "ListEvents"],
  ];
  for (const [service, method] of internalMethods) {
    expect(await outcome(gateway, OPERATOR, service, method)).toBe("operator");
    expect(await outcome(gateway, KEY_A, service, method)).toBe("PermissionDenied");
    for (const caller of SERVICE_KEYS) {
      const granted = (INTERNAL_CALLS[caller][service] ?? []).includes(method);
      expect({ caller, service, method, outcome: await outcome(gateway, token(caller), service, method) }).toEqual({
        caller,
        service,
        method,
        outcome: granted ? `service:${caller}` : "PermissionDenied",
      });
    }
  }
  // The image service, the email service and the client service call nobody.
  expect(INTERNAL_CALLS.image).toEqual({});
  expect(INTERNAL_CALLS.user).toEqual({ "mcsv.v1.JobService": ["EnqueueJob", "EnqueueJobs"] });
});

test("without the operator's digest nobody is the operator; isOperator tells only the operator's credential", async () => {
  const bare = authPolicy({ internal: { MCSV_SERVICE_TOKEN_SHA256S: {} } });
  expect(await outcome(bare, OPERATOR, "mcsv.v1.JobService", "ListJobs")).toBe("Unauthenticated");
  expect(bare.isOperator(OPERATOR)).toBe(false);
  expect(gateway.isOperator(OPERATOR)).toBe(true);
  expect(gateway.isOperator(token("job"))).toBe(false);
  expect(gateway.isOperator(undefined)).toBe(false);
});

test("MCSV_API_KEYS takes tenant=key entries; a bare key is a tenant of its own; every problem is listed", () => {
  const load = (value: string) => loadConfig("test", apiKeysEnv, { MCSV_API_KEYS: value }).MCSV_API_KEYS;
  expect(load(`Acme=${KEY_A}, ${KEY_B}`)).toEqual([
    { tenant: "acme", key: KEY_A },
    { tenant: tenantOfBareKey(KEY_B), key: KEY_B },
  ]);
  expect(tenantOfBareKey(KEY_B)).toMatch(/^key-[0-9a-f]{12}$/);
  expect(tenantOfBareKey(KEY_B)).not.toContain(KEY_B.slice(0, 6));
  expect(() => load("acme=short, bad tenant!=" + KEY_A)).toThrow(/at least 24 characters[\s\S]*tenant "bad tenant!"/);
});
