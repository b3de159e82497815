/**
 * gRPC server reflection (services/shared/grpc/reflection.ts) on a real Connect server over h2c, mounted with health
 * by grpcServiceRoutes (index.ts) as a service mounts them: the Connect gRPC client, a @grpc/grpc-js client and
 * `buf curl` (from a directory with no protos) read the schema from the server.
 */
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, createFileRegistry, fromBinary, type MessageInitShape } from "@bufbuild/protobuf";
import {
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  FileDescriptorProtoSchema,
  FileDescriptorSetSchema,
  timestampFromDate, type FileDescriptorProto } from "@bufbuild/protobuf/wkt";
import { Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { GetUserResponseSchema, JobService, UserService } from "@mcsv/sdk";
import { ROOT } from "../../scripts/lib/system.js";
import { descriptorIndex } from "../../services/shared/grpc/descriptors.js";
import { grpcServiceRoutes } from "../../services/shared/grpc/index.js";
import { answer } from "../../services/shared/grpc/reflection.js";
import {
  ServerReflection,
  ServerReflectionRequestSchema,
  ServerReflectionResponseSchema,
  type ServerReflectionRequest,
  type ServerReflectionResponse,
} from "../../services/shared/grpc/gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../../services/shared/grpc/gen/grpc/reflection/v1alpha/reflection_pb.js";
import { startH2cServer, type H2cServer } from "../support/h2c.js";
import { codec, grpc, grpcJsClient } from "../support/grpc-js.js";
import { run } from "../support/run.js";

const BUF = join(ROOT, "node_modules/.bin/buf");
const EXPECTED_SERVICES = ["mcsv.v1.UserService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"];

let server: H2cServer;

beforeAll(async () => {
  server = await startH2cServer((router) => {
    router.service(UserService, {
      getUser: ({ id }) =>
        create(GetUserResponseSchema, { user: { id, name: "Ada", email: "ada@example.com", createdAt: timestampFromDate(new Date("2026-01-02T03:04:05Z")) } }),
    });
    grpcServiceRoutes({ services: [UserService], health: async () => "serving" })(router);
  });
});

afterAll(async () => {
  await server?.close();
});

/** A request stream the test writes to while it reads the answers, one at a time. */
function requestStream<T>() {
  const queue: T[] = [];
  let wake: (() => void) | undefined;
  let ended = false;
  return {
    push(value: T) {
      queue.push(value);
      wake?.();
    },
    end() {
      ended = true;
      wake?.();
    },
    async *[Symbol.asyncIterator](): AsyncGenerator<T> {
      for (;;) {
        const next = queue.shift();
        if (next !== undefined) yield next;
        else if (ended) return;
        else await new Promise<void>((resolve) => (wake = resolve));
      }
    },
  };
}

/** One v1 reflection stream over real gRPC (h2c): ask() sends a request and waits for its answer. */
function reflectionStream() {
  const client = createClient(ServerReflection, createGrpcTransport({ baseUrl: server.baseUrl }));
  const requests = requestStream<MessageInitShape<typeof ServerReflectionRequestSchema>>();
  const responses = client.serverReflectionInfo(requests)[Symbol.asyncIterator]();
  return {
    async ask(request: MessageInitShape<typeof ServerReflectionRequestSchema>): Promise<ServerReflectionResponse> {
      requests.push(request);
      const next = await responses.next();
      if (next.done) throw new Error("the reflection stream ended early");
      return next.value;
    },
    async close(): Promise<void> {
      requests.end();
      expect((await responses.next()).done).toBe(true);
    },
  };
}

function files(response: ServerReflectionResponse): FileDescriptorProto[] {
  if (response.messageResponse.case !== "fileDescriptorResponse") throw new Error(`expected files, got ${response.messageResponse.case}: ${JSON.stringify(response.messageResponse.value)}`);
  return response.messageResponse.value.fileDescriptorProto.map((bytes) => fromBinary(FileDescriptorProtoSchema, bytes));
}

/** The files ordered so that each comes after the files it imports, as createFileRegistry wants them. */
function importsFirst(files: FileDescriptorProto[]): FileDescriptorProto[] {
  const ordered: FileDescriptorProto[] = [];
  const visit = (file: FileDescriptorProto | undefined) => {
    if (!file || ordered.includes(file)) return;
    for (const name of file.dependency) visit(files.find((f) => f.name === name));
    ordered.push(file);
  };
  files.forEach(visit);
  return ordered;
}

function errorOf(response: ServerReflectionResponse): { code: number; message: string } {
  if (response.messageResponse.case !== "errorResponse") throw new Error(`expected an error, got ${response.messageResponse.case}`);
  return { code: response.messageResponse.value.errorCode, message: response.messageResponse.value.errorMessage };
}

test("list_services names the mounted service, health and both reflection services; the request is echoed", async () => {
  const stream = reflectionStream();
  const response = await stream.ask({ host: "localhost:8081", messageRequest: { case: "listServices", value: "*" } });
  expect(response.validHost).toBe("localhost:8081");
  expect(response.originalRequest?.messageRequest).toEqual({ case: "listServices", value: "*" });
  expect(response.messageResponse.case).toBe("listServicesResponse");
  const names = response.messageResponse.case === "listServicesResponse" ? response.messageResponse.value.service.map((s) => s.name) : [];
  expect(names.sort()).toEqual([...EXPECTED_SERVICES].sort());
  await stream.close();
});

test("file_containing_symbol answers with the file and every file it imports, enough to rebuild the service", async () => {
  const stream = reflectionStream();
  const answered = files(await stream.ask({ messageRequest: { case: "fileContainingSymbol", value: "mcsv.v1.UserService" } }));
  expect(answered[0]?.name).toBe("mcsv/v1/user.proto");
  expect(answered.map((f) => f.name).sort()).toEqual(["google/protobuf/timestamp.proto", "mcsv/v1/common.proto", "mcsv/v1/user.proto"]);
  // The answer is a complete set: a registry builds from it (it throws on a missing import) and has every method.
  const registry = createFileRegistry(create(FileDescriptorSetSchema, { file: importsFirst(answered) }));
  expect(registry.getService("mcsv.v1.UserService")?.methods.map((m) => m.name)).toEqual(UserService.methods.map((m) => m.name));
  expect(registry.getMessage("mcsv.v1.User")?.field.createdAt?.message?.typeName).toBe("google.protobuf.Timestamp");
  await stream.close();
});

test("every kind of symbol is found in its file, on one stream, one answer per request in order", async () => {
  const stream = reflectionStream();
  const cases: [symbol: string, file: string][] = [
    ["mcsv.v1.UserService.GetUser", "mcsv/v1/user.proto"], // method
    ["mcsv.v1.GetUserRequest", "mcsv/v1/user.proto"], // message
    ["mcsv.v1.User.created_at", "mcsv/v1/user.proto"], // field
    ["mcsv.v1.ConvertImageRequest.source", "mcsv/v1/user.proto"], // oneof
    ["mcsv.v1.Quality", "mcsv/v1/common.proto"], // enum, in an imported file
    ["mcsv.v1.QUALITY_HIGH", "mcsv/v1/common.proto"], // enum value
    ["google.protobuf.Timestamp", "google/protobuf/timestamp.proto"], // a field's type from a well-known file
    [".mcsv.v1.User", "mcsv/v1/user.proto"], // a leading dot, as in descriptors
    ["grpc.health.v1.Health.Watch", "grpc/health/v1/health.proto"],
    ["grpc.health.v1.HealthCheckResponse.ServingStatus", "grpc/health/v1/health.proto"], // nested enum
    ["grpc.health.v1.HealthCheckResponse.SERVICE_UNKNOWN", "grpc/health/v1/health.proto"], // its value
    ["grpc.health.v1.HealthListResponse.StatusesEntry", "grpc/health/v1/health.proto"], // nested (map entry) message
    ["grpc.reflection.v1.ServerReflection", "grpc/reflection/v1/reflection.proto"],
    ["grpc.reflection.v1alpha.ServerReflectionRequest", "grpc/reflection/v1alpha/reflection.proto"],
  ];
  for (const [symbol, file] of cases) {
    const response = await stream.ask({ messageRequest: { case: "fileContainingSymbol", value: symbol } });
    expect(response.originalRequest?.messageRequest).toEqual({ case: "fileContainingSymbol", value: symbol });
    expect([symbol, files(response)[0]?.name]).toEqual([symbol, file]);
  }
  const byName = files(await stream.ask({ messageRequest: { case: "fileByFilename", value: "mcsv/v1/common.proto" } }));
  expect(byName.map((f) => f.name)).toEqual(["mcsv/v1/common.proto", "google/protobuf/timestamp.proto"]);
  expect(byName[0]?.enumType.map((e) => e.name)).toEqual(expect.arrayContaining(["Quality", "ConversionState"]));
  await stream.close();
});

test("unknown symbols, files and extensions get error_response NOT_FOUND, and the stream goes on", async () => {
  const stream = reflectionStream();
  expect(errorOf(await stream.ask({ messageRequest: { case: "fileContainingSymbol", value: "mcsv.v1.NoSuchThing" } }))).toEqual({
    code: Code.NotFound,
    message: expect.stringContaining("mcsv.v1.NoSuchThing"),
  });
  expect(errorOf(await stream.ask({ messageRequest: { case: "fileByFilename", value: "mcsv/v1/nope.proto" } })).code).toBe(5);
  const extension = await stream.ask({ messageRequest: { case: "fileContainingExtension", value: { containingType: "mcsv.v1.User", extensionNumber: 100 } } });
  expect(errorOf(extension).code).toBe(5);
  expect(extension.originalRequest?.messageRequest.case).toBe("fileContainingExtension");
  expect(errorOf(await stream.ask({ messageRequest: { case: "allExtensionNumbersOfType", value: "mcsv.v1.NoSuchMessage" } })).code).toBe(5);
  // A known message without extensions: an empty list, as grpc-go answers.
  const numbers = await stream.ask({ messageRequest: { case: "allExtensionNumbersOfType", value: "mcsv.v1.User" } });
  expect(numbers.messageResponse).toEqual({ case: "allExtensionNumbersResponse", value: expect.objectContaining({ baseTypeName: "mcsv.v1.User", extensionNumber: [] }) });
  expect(errorOf(await stream.ask({})).code).toBe(Code.InvalidArgument);
  // Still answering after the errors.
  expect((await stream.ask({ messageRequest: { case: "listServices", value: "" } })).messageResponse.case).toBe("listServicesResponse");
  await stream.close();
});

test("a service with google.protobuf.Struct fields brings struct.proto along", () => {
  const index = descriptorIndex([JobService]);
  const response = answer(index, create(ServerReflectionRequestSchema, { messageRequest: { case: "fileContainingSymbol", value: "mcsv.v1.JobService" } }));
  expect(files(response).map((f) => f.name).sort()).toEqual([
    "google/protobuf/struct.proto",
    "google/protobuf/timestamp.proto",
    // job.proto types its task payloads with the other services' messages, which bring common.proto.
    "mcsv/v1/client.proto",
    "mcsv/v1/common.proto",
    "mcsv/v1/email.proto",
    "mcsv/v1/image.proto",
    "mcsv/v1/job.proto",
  ]);
});

test("extensions are found by their message and number", () => {
  // A proto2 file with an extension, as none of ours has one.
  const proto = create(FileDescriptorProtoSchema, {
    name: "ext/v1/ext.proto",
    package: "ext.v1",
    syntax: "proto2",
    messageType: [{ name: "Base", extensionRange: [{ start: 100, end: 200 }] }],
    extension: [
      { name: "note", number: 101, label: FieldDescriptorProto_Label.OPTIONAL, type: FieldDescriptorProto_Type.STRING, extendee: ".ext.v1.Base" },
      { name: "rank", number: 100, label: FieldDescriptorProto_Label.OPTIONAL, type: FieldDescriptorProto_Type.INT32, extendee: ".ext.v1.Base" },
    ],
    service: [{ name: "ExtService", method: [{ name: "Echo", inputType: ".ext.v1.Base", outputType: ".ext.v1.Base" }] }],
  });
  const service = createFileRegistry(create(FileDescriptorSetSchema, { file: [proto] })).getService("ext.v1.ExtService")!;
  const index = descriptorIndex([service]);
  const ask = (messageRequest: MessageInitShape<typeof ServerReflectionRequestSchema>["messageRequest"]) => answer(index, create(ServerReflectionRequestSchema, { messageRequest }));
  expect(files(ask({ case: "fileContainingExtension", value: { containingType: "ext.v1.Base", extensionNumber: 101 } }))[0]?.name).toBe("ext/v1/ext.proto");
  expect(errorOf(ask({ case: "fileContainingExtension", value: { containingType: "ext.v1.Base", extensionNumber: 102 } })).code).toBe(5);
  expect(ask({ case: "allExtensionNumbersOfType", value: "ext.v1.Base" }).messageResponse).toEqual({
    case: "allExtensionNumbersResponse",
    value: expect.objectContaining({ baseTypeName: "ext.v1.Base", extensionNumber: [100, 101] }),
  });
  expect(files(ask({ case: "fileContainingSymbol", value: "ext.v1.note" }))[0]?.name).toBe("ext/v1/ext.proto");
});

test("v1alpha answers the same questions", async () => {
  const client = createClient(v1alpha.ServerReflection, createGrpcTransport({ baseUrl: server.baseUrl }));
  async function* requests() {
    yield { host: "h", messageRequest: { case: "listServices" as const, value: "" } };
    yield { messageRequest: { case: "fileContainingSymbol" as const, value: "grpc.health.v1.Health" } };
    yield { messageRequest: { case: "fileContainingSymbol" as const, value: "nope.Nope" } };
  }
  const responses: v1alpha.ServerReflectionResponse[] = [];
  for await (const response of client.serverReflectionInfo(requests())) responses.push(response);
  expect(responses.map((r) => r.messageResponse.case)).toEqual(["listServicesResponse", "fileDescriptorResponse", "errorResponse"]);
  expect(responses[0]?.validHost).toBe("h");
  const listed = responses[0]?.messageResponse.case === "listServicesResponse" ? responses[0].messageResponse.value.service.map((s) => s.name) : [];
  expect(listed.sort()).toEqual([...EXPECTED_SERVICES].sort());
  const health = responses[1]?.messageResponse.case === "fileDescriptorResponse" ? responses[1].messageResponse.value.fileDescriptorProto : [];
  expect(health.map((bytes) => fromBinary(FileDescriptorProtoSchema, bytes).name)).toEqual(["grpc/health/v1/health.proto"]);
  expect(responses[2]?.messageResponse.case === "errorResponse" && responses[2].messageResponse.value.errorCode).toBe(5);
});

test("a @grpc/grpc-js client reads the schema over a bidi stream", async () => {
  const client = grpcJsClient(server.port);
  try {
    const request = codec(ServerReflectionRequestSchema);
    const response = codec(ServerReflectionResponseSchema);
    const call = client.makeBidiStreamRequest("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", request.serialize, response.deserialize);
    const received: ServerReflectionResponse[] = [];
    const done = new Promise<grpc.StatusObject>((resolve, reject) => {
      call.on("data", (message: ServerReflectionResponse) => received.push(message));
      call.on("status", resolve);
      call.on("error", reject);
    });
    const ask = (init: MessageInitShape<typeof ServerReflectionRequestSchema>): ServerReflectionRequest => create(ServerReflectionRequestSchema, init);
    call.write(ask({ messageRequest: { case: "listServices", value: "" } }));
    call.write(ask({ messageRequest: { case: "fileContainingSymbol", value: "mcsv.v1.UserService.GetUser" } }));
    call.end();
    expect((await done).code).toBe(grpc.status.OK);
    expect(received).toHaveLength(2);
    const listed = received[0]?.messageResponse.case === "listServicesResponse" ? received[0].messageResponse.value.service.map((s) => s.name) : [];
    expect(listed.sort()).toEqual([...EXPECTED_SERVICES].sort());
    expect(files(received[1]!)[0]?.name).toBe("mcsv/v1/user.proto");
  } finally {
    client.close();
  }
});

describe("buf curl, from a directory without protos, reads the schema by reflection", () => {
  const bufCurl = (...args: string[]) => run(BUF, ["curl", "--http2-prior-knowledge", ...args], { cwd: tmpdir() });

  test("--list-services and --list-methods", async () => {
    const services = await bufCurl("--list-services", server.baseUrl);
    expect(services.stderr).toBe("");
    expect(services.stdout.trim().split("\n").sort()).toEqual([...EXPECTED_SERVICES].sort());
    const methods = await bufCurl("--list-methods", server.baseUrl);
    expect(methods.code).toBe(0);
    const listed = methods.stdout.trim().split("\n");
    expect(listed).toEqual(expect.arrayContaining(["mcsv.v1.UserService/GetUser", "mcsv.v1.UserService/WatchConversion", "grpc.health.v1.Health/Check", "grpc.health.v1.Health/Watch"]));
    expect(listed.filter((m) => m.startsWith("mcsv.v1.UserService/"))).toHaveLength(UserService.methods.length);
  });

  test("--list-services over the older v1alpha protocol", async () => {
    const services = await bufCurl("--reflect-protocol", "grpc-v1alpha", "--list-services", server.baseUrl);
    expect(services.code).toBe(0);
    expect(services.stdout.trim().split("\n").sort()).toEqual([...EXPECTED_SERVICES].sort());
  });

  test("calls the mounted service and health with gRPC and Connect", async () => {
    for (const protocol of ["grpc", "connect"]) {
      const user = await bufCurl("--protocol", protocol, "--data", '{"id":"u-1"}', `${server.baseUrl}/mcsv.v1.UserService/GetUser`);
      expect([protocol, user.code, user.stderr]).toEqual([protocol, 0, ""]);
      expect(JSON.parse(user.stdout)).toEqual({ user: { id: "u-1", name: "Ada", email: "ada@example.com", createdAt: "2026-01-02T03:04:05Z" } });
    }
    const health = await bufCurl("--protocol", "grpc", "--data", '{"service":""}', `${server.baseUrl}/grpc.health.v1.Health/Check`);
    expect(JSON.parse(health.stdout)).toEqual({ status: "SERVING" });
  });
});
