/**
 * Nobody gets in where they don't belong: every RPC of every service, called without credentials or with a wrong
 * one, is refused with unauthenticated, and with a known credential of the other kind with permission_denied (an
 * internal service knows no API keys: unauthenticated); health, readiness and metrics stay open in development; no
 * credential ever appears in a log line.
 */
import type { DescService } from "@bufbuild/protobuf";
import { Code, type Interceptor } from "@connectrpc/connect";
import { JobService, UserService } from "@mcsv/sdk";
import { bearerInterceptor } from "../../services/shared/auth.js";
import type { ServiceKey } from "../../services/shared/topology.js";
import { USER_PUBLIC_METHODS } from "../../services/user/public-methods.js";
import { TEST_API_KEY, TEST_INTERNAL_TOKEN } from "../support/credentials.js";
import { callEmpty, SERVICE_CONTRACTS } from "../support/every-rpc.js";
import { startTestSystem, type TestSystem } from "../support/system.js";

let system: TestSystem;

beforeAll(async () => {
  system = await startTestSystem();
}, 120_000);

afterAll(async () => {
  await system?.close();
});

const SERVICES = SERVICE_CONTRACTS;

/** The credential a method does NOT take: the API key for internal RPCs, the operator's for public ones. */
function otherCredential(key: ServiceKey, method: string): string {
  return key === "user" && USER_PUBLIC_METHODS.includes(method as never) ? TEST_INTERNAL_TOKEN : TEST_API_KEY;
}

/** What the other kind of credential gets: the gateway knows both kinds (permission_denied), the others no keys. */
function otherCredentialRefusal(key: ServiceKey): string {
  return key === "user" ? "PermissionDenied" : "Unauthenticated";
}

const call = (key: ServiceKey, service: DescService, methodName: string, interceptors: Interceptor[]) => callEmpty(system.urls[key], service, methodName, interceptors);

test("every RPC of every service refuses a caller without the right credential", async () => {
  let calls = 0;
  for (const [key, service] of SERVICES) {
    for (const method of service.methods) {
      for (const [what, interceptors] of [
        ["none", []],
        ["wrong", [bearerInterceptor("not-the-right-key-0123456789")]],
        ["malformed", [(next) => (req) => (req.header.set("authorization", `Basic ${TEST_API_KEY}`), next(req))]],
        ["other kind", [bearerInterceptor(otherCredential(key, method.name))]],
      ] as [string, Interceptor[]][]) {
        const error = await call(key, service, method.name, interceptors);
        expect({ rpc: `${service.typeName}/${method.name}`, credential: what, code: error && Code[error.code] }).toEqual({
          rpc: `${service.typeName}/${method.name}`,
          credential: what,
          code: what === "other kind" ? otherCredentialRefusal(key) : "Unauthenticated",
        });
        calls++;
      }
    }
  }
  expect(calls).toBe(4 * SERVICES.reduce((n, [, s]) => n + s.methods.length, 0));
});

test("the right credential gets through (the refusals above are about credentials, not the requests)", async () => {
  const queue = await call("job", JobService, "GetQueueStats", [bearerInterceptor(TEST_INTERNAL_TOKEN)]);
  expect(queue).toBeUndefined();
  const user = await call("user", UserService, "GetUser", [bearerInterceptor(TEST_API_KEY)]);
  expect(user?.code).toBe(Code.InvalidArgument);
});

test("health, readiness and metrics stay open; credentials never reach the logs", async () => {
  for (const key of Object.keys(system.urls) as ServiceKey[]) {
    for (const path of ["/health", "/health/ready", "/metrics"]) {
      const res = await fetch(`${system.urls[key]}${path}`);
      expect({ key, path, status: res.status }).toEqual({ key, path, status: 200 });
      await res.body?.cancel();
    }
  }
  const leaked = system.logs.filter((line) => line.raw.includes(TEST_API_KEY) || line.raw.includes(TEST_INTERNAL_TOKEN) || line.raw.includes("not-the-right-key"));
  expect(leaked).toEqual([]);
  expect(system.logs.length).toBeGreaterThan(0);
});
