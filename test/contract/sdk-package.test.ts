/**
 * @mcsv/sdk works as a published package: `npm pack` builds it, a scratch project outside the repository installs
 * the tarball, type-checks a client against its declarations (and fails on a deliberate type error), and the compiled
 * client calls a Connect server. Also: the package's root re-exports every service, message and enum.
 */
import { createServer, type Server } from "node:http";
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { dirname, join } from "node:path";
import type { DescFile } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { nestedTypes } from "@bufbuild/protobuf/reflect";
import { Code, ConnectError } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import * as sdk from "@mcsv/sdk";
import { bufRegistry, mcsvFiles, ROOT, run, runOk, sdkFiles, tempDir } from "./support.js";

const exported = sdk as unknown as Record<string, { typeName?: string } | undefined>;

/** The name protoc-gen-es gives a file's descriptor: mcsv/v1/user → file_mcsv_v1_user. */
const fileExport = (file: DescFile): string => `file_${file.name.replace(/[/.]/g, "_")}`;
/** The TypeScript name of a type: its name below the package, with nested names joined by "_". */
const localName = (desc: { typeName: string; file: DescFile }): string =>
  desc.typeName.slice(desc.file.proto.package.length + 1).replace(/\./g, "_");

describe("gen/index.ts", () => {
  test("re-exports every file, service, message and enum of the protos", async () => {
    const files = mcsvFiles(await bufRegistry());
    expect(files.length).toBeGreaterThan(0);
    expect(sdkFiles().map((f) => f.name)).toEqual(files.map((f) => f.name));
    const missing: string[] = [];
    const expectExport = (name: string, typeName: string | undefined): void => {
      if (exported[name]?.typeName !== typeName) missing.push(`${name} (${typeName ?? "file"})`);
    };
    for (const file of files) {
      if (!(fileExport(file) in exported)) missing.push(fileExport(file));
      for (const type of nestedTypes(file)) {
        switch (type.kind) {
          case "service":
            expectExport(localName(type), type.typeName);
            break;
          case "message":
            expectExport(`${localName(type)}Schema`, type.typeName);
            break;
          case "enum":
            expectExport(`${localName(type)}Schema`, type.typeName);
            if (typeof exported[localName(type)] !== "object") missing.push(`enum ${localName(type)}`);
            break;
          case "extension":
            break;
        }
      }
    }
    expect(missing).toEqual([]);
    const index = readFileSync(join(ROOT, "gen/index.ts"), "utf8");
    for (const file of files) expect(index).toContain(`export * from "./${file.name}_pb.js";`);
  });
});

const CLIENT_TS = `import { createClient, ConnectError, Code } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { UserService, type GetUserResponse } from "@mcsv/sdk";

const [baseUrl, id] = process.argv.slice(2);
if (baseUrl === undefined || id === undefined) throw new Error("usage: node client.js <baseUrl> <id>");
const client = createClient(UserService, createConnectTransport({ baseUrl, httpVersion: "1.1" }));
try {
  const response: GetUserResponse = await client.getUser({ id });
  const user = response.user;
  if (user?.createdAt === undefined) throw new Error("the response has no user");
  console.log(JSON.stringify({ id: user.id, name: user.name, email: user.email, createdAt: timestampDate(user.createdAt).toISOString() }));
} catch (error) {
  const connectError = ConnectError.from(error);
  console.log(JSON.stringify({ code: Code[connectError.code], message: connectError.rawMessage }));
}
`;

/** Each line must fail to type-check: the SDK's types are real, not any. */
const BAD_TS = `import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { UserService } from "@mcsv/sdk";

const client = createClient(UserService, createConnectTransport({ baseUrl: "http://localhost", httpVersion: "1.1" }));
const response = await client.getUser({ id: 42 });
console.log(response.user?.nmae);
await client.getUsr({ id: "x" });
`;

describe("the packed @mcsv/sdk", () => {
  const scratch = tempDir("sdk-package");
  let server: Server;
  let baseUrl: string;

  beforeAll(async () => {
    const routes = connectNodeAdapter({
      routes: (router) =>
        router.service(sdk.UserService, {
          getUser(request) {
            if (request.id !== "user-1") throw new ConnectError(`no user ${request.id}`, Code.NotFound);
            return {
              user: { id: request.id, name: "Ada", email: "ada@example.com", createdAt: timestampFromDate(new Date("2026-01-02T03:04:05Z")) },
            };
          },
        }),
    });
    server = createServer(routes);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
    scratch.remove();
  });

  const project = join(scratch.dir, "project");
  const tsc = join(ROOT, "node_modules/.bin/tsc");
  // npm and node in the scratch project must not see jest's NODE_OPTIONS.
  const env = { ...process.env, NODE_OPTIONS: "" };

  test("npm pack builds dist/ with JavaScript and declarations for every file", async () => {
    const packed = await runOk("npm", ["pack", "--json", "--pack-destination", scratch.dir], { cwd: join(ROOT, "gen"), env });
    const [info] = JSON.parse(packed.stdout.slice(packed.stdout.indexOf("["))) as { filename: string; files: { path: string }[] }[];
    const paths = info!.files.map((f) => f.path);
    const expected = ["dist/index.js", "dist/index.d.ts", "package.json"];
    for (const file of sdkFiles()) expected.push(`dist/${file.name}_pb.js`, `dist/${file.name}_pb.d.ts`);
    expect(paths).toEqual(expect.arrayContaining(expected));
    expect(paths.filter((p) => p.endsWith(".ts") && !p.endsWith(".d.ts"))).toEqual([]); // no sources

    mkdirSync(project);
    writeFileSync(join(project, "package.json"), JSON.stringify({ name: "scratch", private: true, type: "module" }));
    // Installing a local tarball needs no registry as long as npm does not resolve the peer dependency (even
    // --omit=peer asks the registry for its metadata); the peer dependency comes from the repository below.
    await runOk("npm", ["install", "--offline", "--no-audit", "--no-fund", "--legacy-peer-deps", "--ignore-scripts", join(scratch.dir, info!.filename)], {
      cwd: project,
      env,
    });
    for (const dependency of ["@bufbuild/protobuf", "@connectrpc/connect", "@connectrpc/connect-node", "@types/node"]) {
      mkdirSync(dirname(join(project, "node_modules", dependency)), { recursive: true });
      symlinkSync(join(ROOT, "node_modules", dependency), join(project, "node_modules", dependency), "dir");
    }
    expect(JSON.parse(readFileSync(join(project, "node_modules/@mcsv/sdk/package.json"), "utf8")).name).toBe("@mcsv/sdk");
  });

  test("a client type-checks against the declarations (strict, NodeNext), and a type error fails", async () => {
    const compilerOptions = {
      target: "ES2022",
      module: "NodeNext",
      moduleResolution: "NodeNext",
      strict: true,
      noUncheckedIndexedAccess: true,
      skipLibCheck: false,
      types: ["node"],
      outDir: "dist",
    };
    writeFileSync(join(project, "client.ts"), CLIENT_TS);
    writeFileSync(join(project, "bad.ts"), BAD_TS);
    writeFileSync(join(project, "tsconfig.json"), JSON.stringify({ compilerOptions, files: ["client.ts"] }));
    writeFileSync(join(project, "tsconfig.bad.json"), JSON.stringify({ compilerOptions: { ...compilerOptions, noEmit: true, skipLibCheck: true }, files: ["bad.ts"] }));

    await runOk(tsc, ["-p", "tsconfig.json"], { cwd: project, env });

    const bad = await run(tsc, ["-p", "tsconfig.bad.json"], { cwd: project, env });
    expect(bad.code).not.toBe(0);
    const errors = bad.stdout.split("\n").filter((line) => line.includes("error TS"));
    expect(errors).toEqual([
      expect.stringMatching(/^bad\.ts\(6,\d+\): error TS2322: Type 'number' is not assignable to type 'string'/),
      expect.stringMatching(/^bad\.ts\(7,\d+\): error TS(2339|2551): Property 'nmae' does not exist on type 'User'/),
      expect.stringMatching(/^bad\.ts\(8,\d+\): error TS(2339|2551): Property 'getUsr' does not exist/),
    ]);
  });

  test("the compiled client calls a Connect server", async () => {
    const ok = await runOk(process.execPath, ["dist/client.js", baseUrl, "user-1"], { cwd: project, env });
    expect(JSON.parse(ok.stdout)).toEqual({ id: "user-1", name: "Ada", email: "ada@example.com", createdAt: "2026-01-02T03:04:05.000Z" });
    const notFound = await runOk(process.execPath, ["dist/client.js", baseUrl, "nobody"], { cwd: project, env });
    expect(JSON.parse(notFound.stdout)).toEqual({ code: "NotFound", message: "no user nobody" });
  });
});
