/**
 * The OpenAPI documents in openapi/ are valid OpenAPI 3.1 and describe every RPC of their service the way Connect
 * speaks JSON. The expectations come from the descriptors (and, for the descriptions, the proto comments), not from
 * lists in this file.
 */
import { execFile } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { promisify } from "node:util";
import { basename, join } from "node:path";
import { ScalarType, type DescEnum, type DescField, type DescMessage, type DescService, type FileRegistry } from "@bufbuild/protobuf";
import { getComments } from "@bufbuild/protoplugin";
import { compileErrors, validate } from "@readme/openapi-parser";
import { parse } from "yaml";
import { Code } from "@connectrpc/connect";
import { SERVICES } from "../../services/shared/topology.js";
import { connectCodeName } from "../../services/shared/errors.js";
import { USER_PUBLIC_METHODS } from "../../services/user/public-methods.js";
import { bufRegistry, ROOT, sdkFiles } from "./support.js";

type Json = Record<string, any>;

const execFileAsync = promisify(execFile);

/** Every Connect error code, as the protocol spells it, from connect-es's own enum (not from the generator). */
const CONNECT_CODES = Object.values(Code)
  .filter((code): code is Code => typeof code === "number")
  .map(connectCodeName);

const services = sdkFiles().flatMap((file) => file.services);
const documentPath = (service: DescService): string =>
  join(ROOT, "openapi", `${service.name.replace(/Service$/, "").toLowerCase()}.yaml`);
const load = (service: DescService): Json => parse(readFileSync(documentPath(service), "utf8")) as Json;
const ref = (typeName: string): string => `#/components/schemas/${typeName}`;

/** The leading comment of an element in the proto source, one space after `//` removed. */
function protoComment(desc: Parameters<typeof getComments>[0]): string {
  return (getComments(desc).leading ?? "")
    .split("\n")
    .map((line) => line.replace(/^ /, "").trimEnd())
    .join("\n")
    .trim();
}

/** The messages and enums a service reaches, well-known types excluded. */
function reachable(service: DescService): Map<string, DescMessage | DescEnum> {
  const found = new Map<string, DescMessage | DescEnum>();
  const visit = (desc: DescMessage | DescEnum): void => {
    if (found.has(desc.typeName) || desc.typeName.startsWith("google.protobuf.")) return;
    found.set(desc.typeName, desc);
    if (desc.kind === "message") {
      for (const field of desc.fields) {
        if (field.enum) visit(field.enum);
        if (field.message) visit(field.message);
      }
    }
  };
  for (const method of service.methods) {
    visit(method.input);
    visit(method.output);
  }
  return found;
}

let registry: FileRegistry;
beforeAll(async () => {
  registry = await bufRegistry();
});

test("there is one document per service, and no other", () => {
  const expected = services.map((service) => basename(documentPath(service))).sort();
  expect(expected).toEqual(["client.yaml", "email.yaml", "image.yaml", "job.yaml", "user.yaml"]);
  expect(readdirSync(join(ROOT, "openapi")).sort()).toEqual(expected);
});

describe.each(services.map((s) => [s.name, s] as const))("%s", (_name, service) => {
  const doc = load(service);
  const operations = (): [DescService["methods"][number], Json][] =>
    service.methods.map((method) => [method, doc.paths[`/${service.typeName}/${method.name}`]?.post as Json]);

  test("is valid OpenAPI 3.1", async () => {
    const result = await validate(documentPath(service));
    if (!result.valid) throw new Error(compileErrors(result));
    expect(doc.openapi).toMatch(/^3\.1\./);
    expect(doc.info.title).toBe(`mcsv.v1 ${service.name}`);
    expect(doc.servers).toEqual([expect.objectContaining({ url: `http://localhost:${(SERVICES as Record<string, { port: number }>)[basename(documentPath(service), ".yaml")]!.port}` })]);
  });

  test("has a POST path for every RPC, and no other", () => {
    expect(Object.keys(doc.paths).sort()).toEqual(service.methods.map((m) => `/${service.typeName}/${m.name}`).sort());
    for (const [method, op] of operations()) {
      expect(op).toBeDefined();
      expect(Object.keys(doc.paths[`/${service.typeName}/${method.name}`])).toEqual(["post"]);
      expect(op.operationId).toBe(method.name);
      expect(op.tags).toEqual([service.name]);
    }
  });

  test("unary RPCs take and return application/json; streaming RPCs use application/connect+json", () => {
    for (const [method, op] of operations()) {
      const type = method.methodKind === "unary" ? "application/json" : "application/connect+json";
      expect(method.methodKind === "unary" || method.methodKind === "server_streaming").toBe(true);
      expect(op.requestBody.content).toEqual({ [type]: { schema: { $ref: ref(method.input.typeName) } } });
      expect(op.responses["200"].content).toEqual({ [type]: { schema: { $ref: ref(method.output.typeName) } } });
      if (method.methodKind === "server_streaming") {
        expect(op.description).toMatch(/5-byte prefix/);
        expect(op.description).toMatch(/end of stream/);
      }
    }
  });

  test("every operation has the Connect error response and the Connect-Protocol-Version header", () => {
    const error = doc.components.schemas["connect.error"];
    expect(error.properties.code.enum).toEqual(CONNECT_CODES);
    expect(error.properties.message.type).toBe("string");
    expect(error.properties.details.items.properties.value).toMatchObject({ type: "string", contentEncoding: "base64" });
    expect(doc.components.responses["connect.error"].content["application/json"].schema).toEqual({ $ref: ref("connect.error") });
    const header = doc.components.parameters["Connect-Protocol-Version"];
    expect(header).toMatchObject({ in: "header", required: false, schema: { enum: ["1"] } });
    for (const [, op] of operations()) {
      expect(op.responses.default).toEqual({ $ref: "#/components/responses/connect.error" });
      expect(op.parameters).toContainEqual({ $ref: "#/components/parameters/Connect-Protocol-Version" });
    }
  });

  test("has a schema for every message and enum the service reaches, and for no other", () => {
    const names = Object.keys(doc.components.schemas).filter((name) => !name.startsWith("connect."));
    expect(names.sort()).toEqual([...reachable(service).keys()].sort());
  });

  test("the schemas follow the canonical JSON mapping", () => {
    for (const desc of reachable(service).values()) {
      const schema = doc.components.schemas[desc.typeName];
      if (desc.kind === "enum") {
        expect(schema).toMatchObject({ type: "string", enum: desc.values.map((v) => v.name) });
        continue;
      }
      expect(schema.type).toBe("object");
      expect(Object.keys(schema.properties ?? {})).toEqual(desc.fields.map((f) => f.jsonName));
      for (const field of desc.fields) expectFieldSchema(field, schema.properties[field.jsonName]);
    }
  });

  test("the descriptions are the proto comments", () => {
    const source = registry.getService(service.typeName);
    if (!source) throw new Error(`${service.typeName} is not in the buf build`);
    expect(doc.info.description).toBe(protoComment(source));
    for (const method of source.methods) {
      const op = doc.paths[`/${service.typeName}/${method.name}`].post;
      expect(op.description.startsWith(protoComment(method))).toBe(true);
      expect(protoComment(method).replace(/\s+/g, " ").startsWith(op.summary)).toBe(true);
    }
    for (const name of reachable(service).keys()) {
      const desc = registry.get(name);
      const schema = doc.components.schemas[name];
      if (desc?.kind === "enum") {
        expect(schema.description.startsWith(protoComment(desc))).toBe(true);
        for (const value of desc.values) expect(schema.description).toContain(`\`${value.name}\`: ${protoComment(value).replace(/\s+/g, " ")}`);
      } else if (desc?.kind === "message") {
        expect(schema.description).toBe(protoComment(desc));
        for (const field of desc.fields) {
          const description = schema.properties[field.jsonName].description as string;
          expect(description.startsWith(protoComment(field))).toBe(true);
          if (field.oneof) expect(description).toContain(`oneof \`${field.oneof.name}\``);
        }
      } else {
        throw new Error(`${name} is not in the buf build`);
      }
    }
  });
});

/** The schema of a field's value (an item for a list, a value for a map). */
function expectValueSchema(field: DescField, kind: "scalar" | "enum" | "message", schema: Json): void {
  if (kind === "enum") {
    expect(schema.$ref).toBe(ref(field.enum!.typeName));
    return;
  }
  if (kind === "message") {
    const typeName = field.message!.typeName;
    if (typeName === "google.protobuf.Timestamp") expect(schema).toMatchObject({ type: "string", format: "date-time" });
    else if (typeName === "google.protobuf.Struct") expect(schema).toMatchObject({ type: "object", additionalProperties: true });
    else if (typeName.startsWith("google.protobuf.")) expect(schema.$ref).toBeUndefined();
    else expect(schema.$ref).toBe(ref(typeName));
    return;
  }
  switch (field.scalar) {
    case ScalarType.INT64:
    case ScalarType.SFIXED64:
    case ScalarType.SINT64:
      expect(schema).toMatchObject({ type: "string", format: "int64" });
      break;
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      expect(schema).toMatchObject({ type: "string", format: "uint64" });
      break;
    case ScalarType.BYTES:
      expect(schema).toMatchObject({ type: "string", contentEncoding: "base64" });
      break;
    case ScalarType.STRING:
      expect(schema.type).toBe("string");
      break;
    case ScalarType.BOOL:
      expect(schema.type).toBe("boolean");
      break;
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      expect(schema.type).toBe("number");
      break;
    default: // 32-bit integers
      expect(schema.type).toBe("integer");
  }
}

function expectFieldSchema(field: DescField, schema: Json): void {
  switch (field.fieldKind) {
    case "list":
      expect(schema.type).toBe("array");
      expectValueSchema(field, field.listKind, schema.items);
      break;
    case "map":
      expect(schema.type).toBe("object");
      expectValueSchema(field, field.mapKind, schema.additionalProperties);
      break;
    default:
      expectValueSchema(field, field.fieldKind, schema);
  }
}

test("spot checks: int64, Timestamp, bytes, enum, oneof, streaming", () => {
  const user = load(services.find((s) => s.typeName === "mcsv.v1.UserService")!);
  const schemas = user.components.schemas;
  expect(schemas["mcsv.v1.Conversion"].properties.inputSize).toMatchObject({ type: "string", format: "int64" });
  expect(schemas["mcsv.v1.Conversion"].properties.createdAt).toMatchObject({ type: "string", format: "date-time" });
  expect(schemas["mcsv.v1.ConvertImageRequest"].properties.imageData).toMatchObject({ type: "string", contentEncoding: "base64" });
  expect(schemas["mcsv.v1.ConvertImageRequest"]["x-oneof"]).toEqual({ source: ["imageData", "uploadId"] });
  expect(schemas["mcsv.v1.Quality"].enum).toContain("QUALITY_LOSSLESS");
  expect(schemas["mcsv.v1.Quality"].description).toContain("`QUALITY_LOSSLESS`: Pixel-identical output");
  expect(user.paths["/mcsv.v1.UserService/GetUser"].post.description).toBe("GetUser returns one user by id.");
  const watch = user.paths["/mcsv.v1.UserService/WatchConversion"].post;
  expect(Object.keys(watch.responses["200"].content)).toEqual(["application/connect+json"]);
  const job = load(services.find((s) => s.typeName === "mcsv.v1.JobService")!);
  expect(job.components.schemas["mcsv.v1.Job"].properties.args).toMatchObject({ type: "object" });
  expect(job.components.schemas["mcsv.v1.QueueStats"].properties.available).toMatchObject({ type: "string", format: "int64" });
});

test("redocly lint with its recommended rules finds no error: every operation declares who may call it", async () => {
  for (const service of services) {
    // --format json prints the report even when it finds errors; the exit code alone would say less.
    const { stdout } = await execFileAsync(join(ROOT, "node_modules/.bin/redocly"), ["lint", "--extends", "recommended", "--format", "json", documentPath(service)], { cwd: ROOT }).catch(
      (error: { stdout?: string }) => ({ stdout: error.stdout ?? "" }),
    );
    const report = JSON.parse(stdout) as { totals: { errors: number }; problems: { ruleId: string; severity: string; message: string }[] };
    const errors = report.problems.filter((p) => p.severity === "error").map((p) => `${p.ruleId}: ${p.message}`);
    expect({ service: service.name, errors }).toEqual({ service: service.name, errors: [] });
    expect(report.totals.errors).toBe(0);
  }
}, 60_000);

test("the gateway's public methods take a tenant's API key, every other method the internal credential", () => {
  for (const service of services) {
    const doc = load(service);
    for (const [path, item] of Object.entries(doc.paths as Json)) {
      const method = path.split("/").pop()!;
      const isPublic = service.typeName === "mcsv.v1.UserService" && (USER_PUBLIC_METHODS as readonly string[]).includes(method);
      const scheme = isPublic ? "apiKey" : "internalCredential";
      expect({ path, security: item.post.security }).toEqual({ path, security: [{ [scheme]: [] }] });
      expect(doc.components.securitySchemes[scheme]).toMatchObject({ type: "http", scheme: "bearer" });
    }
  }
});
