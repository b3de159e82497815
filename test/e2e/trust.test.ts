/**
 * Trust on the real processes: the gateway refuses an unauthenticated compressed bomb before reading it, bounds what
 * an authenticated body inflates to by its method, each service's own credential opens only the methods it needs
 * (and no service holds the operator's), and a production start refuses placeholder secrets.
 */
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { brotliCompressSync, gzipSync } from "node:zlib";
import type { DescService } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { JobService, UserService } from "@mcsv/sdk";
import { bearerInterceptor, INTERNAL_CALLS } from "../../services/shared/auth.js";
import { SERVICE_KEYS, type ServiceKey } from "../../services/shared/topology.js";
import { USER_PUBLIC_METHODS } from "../../services/user/public-methods.js";
import { ROOT, serviceArguments } from "../../scripts/lib/system.js";
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

/** The largest resident set the process has had (VmHWM), in bytes. */
function peakRss(key: ServiceKey): number {
  const status = readFileSync(`/proc/${system.services.get(key)!.child.pid}/status`, "utf8");
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)![1]) * 1024;
}

/** ConvertImage's JSON with an inline "image" of `bytes` base64 characters: highly compressible. */
function convertImageJson(bytes: number): Buffer {
  return Buffer.from(JSON.stringify({ userEmail: "ada@example.com", imageData: "A".repeat(bytes) }));
}

test("an unauthenticated brotli bomb gets 401 at once, and the gateway never inflates it", async () => {
  // 30 MiB of JSON fits ConvertImage's read limit (inline images up to 25 MiB): parsed first, it would cost the
  // gateway about 30 MiB per request and seconds of CPU before the 401.
  const bomb = brotliCompressSync(convertImageJson(30 * 1024 * 1024));
  expect(bomb.byteLength).toBeLessThan(1_000);
  const before = peakRss("user");
  const started = Date.now();
  const answers = await Promise.all(
    Array.from({ length: 8 }, (_, i) =>
      fetch(`${system.urls.user}/mcsv.v1.UserService/ConvertImage`, {
        method: "POST",
        headers: { "content-type": "application/json", "content-encoding": "br", ...(i % 2 ? { authorization: "Bearer not-a-key-0123456789abcdefghij" } : {}) },
        body: bomb,
      }),
    ),
  );
  for (const res of answers) {
    expect(res.status).toBe(401);
    expect(((await res.json()) as { code: string }).code).toBe("unauthenticated");
  }
  expect(Date.now() - started).toBeLessThan(5_000);
  // Eight inflations would have raised the peak by 240 MiB or more.
  expect(peakRss("user") - before).toBeLessThan(24 * 1024 * 1024);
});

test("an authenticated body inflates at most to its method's limit: small for all but ConvertImage", async () => {
  const headers = { "content-type": "application/json", authorization: `Bearer ${system.credentials.apiKey}` };
  const bomb = gzipSync(Buffer.from(JSON.stringify({ id: "A".repeat(8 * 1024 * 1024) })));
  const before = peakRss("user");
  const res = await fetch(`${system.urls.user}/mcsv.v1.UserService/GetUser`, { method: "POST", headers: { ...headers, "content-encoding": "gzip" }, body: bomb });
  expect(await res.json()).toEqual({ code: "resource_exhausted", message: "message is larger than configured readMaxBytes 262144 after decompression" });
  expect(peakRss("user") - before).toBeLessThan(8 * 1024 * 1024);
  // ConvertImage takes the same bytes (it is parsed, and its tiny made-up image is then refused for what it is).
  const convert = await fetch(`${system.urls.user}/mcsv.v1.UserService/ConvertImage`, { method: "POST", headers: { ...headers, "content-encoding": "gzip" }, body: gzipSync(convertImageJson(1024 * 1024)) });
  expect(((await convert.json()) as { code: string }).code).toBe("invalid_argument");
});

async function call(key: ServiceKey, service: DescService, methodName: string, credential: string): Promise<Code | undefined> {
  return (await callEmpty(system.urls[key], service, methodName, [bearerInterceptor(credential)]))?.code;
}

test("each service's own credential opens exactly the methods it calls, and nothing else anywhere", async () => {
  const { serviceTokens } = system.credentials;
  const opened: string[] = [];
  for (const [key, service] of SERVICES) {
    for (const method of service.methods) {
      for (const caller of SERVICE_KEYS) {
        const code = await call(key, service, method.name, serviceTokens[caller]);
        const granted = (INTERNAL_CALLS[caller][service.typeName] ?? []).includes(method.name);
        if (granted) {
          // Let through: the empty request is then refused for its content, never for the credential.
          expect({ caller, rpc: method.name, code: code === undefined ? "ok" : Code[code] }).toEqual({ caller, rpc: method.name, code: expect.not.stringMatching(/^(Unauthenticated|PermissionDenied)$/) });
          opened.push(`${caller} → ${service.typeName}/${method.name}`);
        } else {
          expect({ caller, rpc: `${service.typeName}/${method.name}`, code: code === undefined ? "ok" : Code[code] }).toEqual({ caller, rpc: `${service.typeName}/${method.name}`, code: "PermissionDenied" });
        }
      }
    }
  }
  expect(opened.sort()).toEqual(
    Object.entries(INTERNAL_CALLS)
      .flatMap(([caller, services]) => Object.entries(services).flatMap(([service, methods]) => methods.map((m) => `${caller} → ${service}/${m}`)))
      .filter((line) => SERVICES.some(([, s]) => s.methods.some((m) => line.endsWith(`${s.typeName}/${m.name}`))))
      .sort(),
  );
  expect(opened).toContain("user → mcsv.v1.JobService/EnqueueJob");
  expect(opened.filter((line) => line.startsWith("image "))).toEqual([]);
});

test("the operator's credential opens every internal method and no tenant's data; no service holds it", async () => {
  const operator = system.credentials.operatorToken;
  expect(await call("job", JobService, "GetQueueStats", operator)).toBeUndefined();
  expect(await call("user", UserService, "NotifyImageConverted", operator)).toBe(Code.InvalidArgument);
  for (const method of USER_PUBLIC_METHODS) expect({ method, code: await call("user", UserService, method, operator) }).toEqual({ method, code: Code.PermissionDenied });
  // The services got its digest, never the credential itself.
  expect(JSON.stringify(system.env)).not.toContain(operator);
  for (const proc of system.services.values()) {
    const environ = readFileSync(`/proc/${proc.child.pid}/environ`, "utf8").split("\0");
    expect(environ.filter((line) => line.includes(operator))).toEqual([]);
    expect(environ.filter((line) => line.startsWith("MCSV_SERVICE_TOKEN="))).toEqual([`MCSV_SERVICE_TOKEN=${system.credentials.serviceTokens[proc.key]}`]);
  }
});

/** Runs one service process with `env`; resolves with its exit code and output once it exits (or 20 s pass). */
function runService(key: ServiceKey, env: Record<string, string>): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, serviceArguments(key), { cwd: ROOT, env: { PATH: process.env["PATH"]!, HOME: process.env["HOME"]!, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    for (const stream of [child.stdout, child.stderr]) stream.on("data", (chunk: Buffer) => (output += chunk.toString()));
    const killer = setTimeout(() => child.kill("SIGKILL"), 20_000);
    child.once("exit", (code) => {
      clearTimeout(killer);
      resolve({ code, output });
    });
  });
}

test("in production the gateway refuses to start on the repository's placeholder secrets, listing each", async () => {
  const { code, output } = await runService("user", {
    NODE_ENV: "production",
    LOG_FORMAT: "json",
    USER_PORT: "0",
    DATABASE_URL: "postgres://mcsv:REPLACE_ME@127.0.0.1:9/mcsv",
    S3_SECRET_ACCESS_KEY: "REPLACE_ME",
    MCSV_API_KEYS: "REPLACE_ME-with-a-random-api-key-of-32-characters",
    MCSV_SERVICE_TOKEN: "local-only-internal-token-change-me",
  });
  expect(code).toBe(1);
  for (const problem of [
    "MCSV_OPERATOR_TOKEN_SHA256: is required in production",
    "MCSV_SERVICE_TOKEN: is a placeholder",
    "MCSV_API_KEYS: is a placeholder",
    "S3_SECRET_ACCESS_KEY: is a placeholder",
    "DATABASE_URL (its password): is a placeholder",
  ]) {
    expect(output).toContain(problem);
  }
  for (const secret of ["REPLACE_ME-with", "local-only-internal"]) expect(output).not.toContain(secret);
}, 30_000);
