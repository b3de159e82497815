/**
 * What a user does from a terminal, outside any checkout: plain `buf curl URL` finds every service and method through
 * server reflection (no local schema), creates a user, converts a PNG, watches the conversion finish and downloads a
 * valid PDF, over Connect and over gRPC; plain curl-style JSON over HTTP/1.1 works too.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { Code } from "@connectrpc/connect";
import { ClientService, EmailService, ImageService, JobService, UserService } from "@mcsv/sdk";
import { photoLikePng, qpdfCheck } from "../support/pdf.js";
import { ROOT } from "../../scripts/lib/system.js";
import { TEST_API_KEY, TEST_INTERNAL_TOKEN } from "../support/credentials.js";
import { USER_PUBLIC_METHODS } from "../../services/user/public-methods.js";
import { startTestSystem, type TestSystem } from "../support/system.js";

const run = promisify(execFile);
const BUF = join(ROOT, "node_modules", ".bin", "buf");
let system: TestSystem;
/** A directory with no protos in it: what buf curl knows comes from the server. */
let elsewhere: string;

beforeAll(async () => {
  elsewhere = mkdtempSync(join(tmpdir(), "mcsv-buf-curl-"));
  system = await startTestSystem();
}, 120_000);

afterAll(async () => {
  await system?.close();
  rmSync(elsewhere, { recursive: true, force: true });
});

async function bufCurl(url: string, data: unknown, secret = TEST_API_KEY, extra: string[] = []): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(BUF, ["curl", ...extra, "-H", `Authorization: Bearer ${secret}`, "--data", JSON.stringify(data), url], { cwd: elsewhere, maxBuffer: 64 * 1024 * 1024 });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

test("buf curl lists every service and its methods through reflection, on all five ports", async () => {
  for (const [key, service] of [
    ["user", UserService],
    ["job", JobService],
    ["email", EmailService],
    ["image", ImageService],
    ["client", ClientService],
  ] as const) {
    const { stdout: services } = await run(BUF, ["curl", "--list-services", system.urls[key]], { cwd: elsewhere });
    expect(services.trim().split("\n").sort()).toEqual([service.typeName, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"].sort());
    const { stdout: methods } = await run(BUF, ["curl", "--list-methods", system.urls[key]], { cwd: elsewhere });
    for (const method of service.methods) expect(methods).toContain(`${service.typeName}/${method.name}`);
  }
});

test("buf curl resolves and reaches every service and method, over Connect and gRPC", async () => {
  const services = [
    ["user", UserService],
    ["job", JobService],
    ["email", EmailService],
    ["image", ImageService],
    ["client", ClientService],
  ] as const;
  for (const [key, service] of services) {
    for (const method of service.methods) {
      // An empty request reaches the handler: it answers, or refuses the request; never unimplemented or unresolved.
      const secret = key === "user" && USER_PUBLIC_METHODS.includes(method.name as never) ? TEST_API_KEY : TEST_INTERNAL_TOKEN;
      for (const protocol of ["connect", "grpc"]) {
        const result = await bufCurl(`${system.urls[key]}/${service.typeName}/${method.name}`, {}, secret, ["--protocol", protocol]);
        // Success, or the empty request refused for its content: never a credential, a missing method or a fault.
        const outcome = result.code === 0 ? "ok" : result.code % 8 === 0 ? Code[result.code >> 3] : `exit ${result.code}`;
        expect({ rpc: `${service.typeName}/${method.name}`, protocol, outcome }).toEqual({ rpc: `${service.typeName}/${method.name}`, protocol, outcome: expect.stringMatching(/^(ok|InvalidArgument|NotFound)$/) });
        expect(result.stderr).not.toMatch(/unimplemented|not found in schema|failed to resolve/i);
      }
    }
  }
});

test("a user with buf curl creates a user, converts a PNG, watches it finish and downloads a valid PDF", async () => {
  const user = system.urls.user;
  const created = await bufCurl(`${user}/mcsv.v1.UserService/CreateUser`, { name: "Linus", email: "linus@example.com", idempotencyKey: "linus-1" });
  expect(created.code).toBe(0);
  expect(JSON.parse(created.stdout).user.email).toBe("linus@example.com");

  const png = await photoLikePng(40, 30);
  const converted = await bufCurl(`${user}/mcsv.v1.UserService/ConvertImage`, {
    userEmail: "linus@example.com",
    filename: "small.png",
    imageData: png.toString("base64"),
    options: { quality: "QUALITY_LOSSLESS" },
  });
  expect(converted.code).toBe(0);
  const conversionId = JSON.parse(converted.stdout).conversion.id as string;

  // buf curl prints one JSON object per streamed message.
  const watched = await bufCurl(`${user}/mcsv.v1.UserService/WatchConversion`, { conversionId });
  expect(watched.code).toBe(0);
  const snapshots = watched.stdout.trim().split(/\n(?=\{)/).map((text) => JSON.parse(text) as { conversion: { state: string; pdfUrl?: string } });
  expect(snapshots.at(-1)!.conversion.state).toBe("CONVERSION_STATE_SUCCEEDED");

  const got = await bufCurl(`${user}/mcsv.v1.UserService/GetConversion`, { conversionId });
  const pdfUrl = JSON.parse(got.stdout).conversion.pdfUrl as string;
  const pdf = new Uint8Array(await (await fetch(pdfUrl)).arrayBuffer());
  expect(await qpdfCheck(pdf)).toMatch(/No syntax or stream encoding errors/);

  // The same over gRPC, which needs HTTP/2: buf curl speaks it to the same port.
  const overGrpc = await bufCurl(`${user}/mcsv.v1.UserService/GetConversion`, { conversionId }, TEST_API_KEY, ["--protocol", "grpc"]);
  expect(JSON.parse(overGrpc.stdout).conversion.state).toBe("CONVERSION_STATE_SUCCEEDED");

  // An RPC error: buf curl exits with the Connect code shifted left three bits (not_found = 5 → 40).
  const missing = await bufCurl(`${user}/mcsv.v1.UserService/GetConversion`, { conversionId: "00000000-0000-4000-8000-000000000000" });
  expect(missing.code).toBe(5 << 3);
  expect(missing.stderr).toMatch(/not_found/);
});

test("plain JSON over HTTP, as curl sends it, and clear errors for bad JSON", async () => {
  const post = (body: string) =>
    fetch(`${system.urls.user}/mcsv.v1.UserService/CreateUser`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${TEST_API_KEY}` },
      body,
    });
  const ok = await post(JSON.stringify({ name: "Curl", email: "curl@example.com" }));
  expect(ok.status).toBe(200);
  expect(((await ok.json()) as { user: { name: string } }).user.name).toBe("Curl");

  const unknownField = await post(JSON.stringify({ name: "X", email: "x@example.com", admin: true }));
  expect(unknownField.status).toBe(400);
  expect(((await unknownField.json()) as { code: string }).code).toBe("invalid_argument");

  const invalid = await post(JSON.stringify({ name: "", email: "not an email" }));
  expect(invalid.status).toBe(400);
  const body = (await invalid.json()) as { code: string; message: string };
  expect(body.code).toBe("invalid_argument");
  expect(body.message).toMatch(/email/);
});
