/**
 * Builds the OpenAPI 3.1 document of one Connect service from its descriptor (with source info, for the comments).
 *
 * The schemas follow protobuf's canonical JSON mapping, which is what Connect sends and expects with
 * `application/json`:
 * - field names are the lowerCamelCase json names; proto3 fields are never required (defaults are omitted);
 * - enums are strings holding the value names (parsers also accept the numbers; only the names are documented);
 * - 64-bit integers are `type: string` with `format: int64` or `uint64`: Connect always emits decimal strings (a JSON
 *   number cannot hold every 64-bit value). Parsers also accept numbers, but only the string form is documented, so
 *   that one schema validates what a client receives;
 * - 32-bit integers are integers; float and double are numbers (the strings "NaN", "Infinity" and "-Infinity" are
 *   also valid JSON for them, but are not documented);
 * - bytes are base64 strings, maps are objects keyed by the map key as a string, repeated fields are arrays;
 * - the members of a oneof are ordinary optional properties: each one's description names its oneof, the message
 *   lists its oneofs under `x-oneof`, and a `not` constraint rejects a body that sets two members of one oneof;
 * - well-known types are never expanded: Timestamp is an RFC 3339 `date-time` string, Duration a string such as
 *   "1.5s", Struct an object, Value any JSON value, and so on.
 */
import { ScalarType, type DescEnum, type DescField, type DescMessage, type DescMethod, type DescService } from "@bufbuild/protobuf";
import { getComments } from "@bufbuild/protoplugin";
import { Document } from "yaml";
// The services' default ports and version live in one place, shared with the services themselves.
import { SERVICES, SERVICE_VERSION } from "../../services/shared/topology.js";
import { USER_PUBLIC_METHODS } from "../../services/user/public-methods.js";

type Schema = Record<string, unknown>;

/** The Connect error codes, in the order of their numeric gRPC codes. */
export const CONNECT_ERROR_CODES = [
  "canceled",
  "unknown",
  "invalid_argument",
  "deadline_exceeded",
  "not_found",
  "already_exists",
  "permission_denied",
  "resource_exhausted",
  "failed_precondition",
  "aborted",
  "out_of_range",
  "unimplemented",
  "internal",
  "unavailable",
  "data_loss",
  "unauthenticated",
] as const;

/** The short name of a service, its key in SERVICES: UserService → user. */
function serviceKey(service: DescService): string {
  return service.name.replace(/Service$/, "").toLowerCase();
}

/** The name of the document of a service: UserService → user.yaml. */
export function openApiFileName(service: DescService): string {
  return `${serviceKey(service)}.yaml`;
}

/** The leading comment of an element, without the space that follows each `//`. */
export function comment(desc: DescService | DescMethod | DescMessage | DescField | DescEnum | DescEnum["values"][number]): string {
  const leading = getComments(desc).leading ?? "";
  return leading
    .split("\n")
    .map((line) => line.replace(/^ /, "").trimEnd())
    .join("\n")
    .trim();
}

/** The first sentence of a comment, on one line. */
function firstSentence(text: string): string {
  const flat = text.replace(/\s+/g, " ").trim();
  const match = /^(.*?[.!?])(?:\s|$)/.exec(flat);
  return match?.[1] ?? flat;
}

function schemaRef(typeName: string): Schema {
  return { $ref: `#/components/schemas/${typeName}` };
}

function scalarSchema(scalar: ScalarType): Schema {
  switch (scalar) {
    case ScalarType.DOUBLE:
      return { type: "number", format: "double" };
    case ScalarType.FLOAT:
      return { type: "number", format: "float" };
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return { type: "string", format: "int64" };
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return { type: "string", format: "uint64" };
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
      return { type: "integer", format: "int32" };
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return { type: "integer", format: "uint32", minimum: 0, maximum: 4294967295 };
    case ScalarType.BOOL:
      return { type: "boolean" };
    case ScalarType.STRING:
      return { type: "string" };
    case ScalarType.BYTES:
      return { type: "string", format: "byte", contentEncoding: "base64" };
  }
}

/** The JSON forms of the well-known types that have a special mapping. */
function wellKnownSchema(typeName: string): Schema | undefined {
  switch (typeName) {
    case "google.protobuf.Timestamp":
      return { type: "string", format: "date-time" };
    case "google.protobuf.Duration":
      return { type: "string", pattern: "^-?[0-9]+(\\.[0-9]{1,9})?s$" };
    case "google.protobuf.Struct":
      return { type: "object", additionalProperties: true };
    case "google.protobuf.Value":
      return {};
    case "google.protobuf.ListValue":
      return { type: "array", items: {} };
    case "google.protobuf.FieldMask":
      return { type: "string" };
    case "google.protobuf.Empty":
      return { type: "object" };
    case "google.protobuf.Any":
      return { type: "object", properties: { "@type": { type: "string" } }, required: ["@type"], additionalProperties: true };
    case "google.protobuf.DoubleValue":
      return scalarSchema(ScalarType.DOUBLE);
    case "google.protobuf.FloatValue":
      return scalarSchema(ScalarType.FLOAT);
    case "google.protobuf.Int64Value":
      return scalarSchema(ScalarType.INT64);
    case "google.protobuf.UInt64Value":
      return scalarSchema(ScalarType.UINT64);
    case "google.protobuf.Int32Value":
      return scalarSchema(ScalarType.INT32);
    case "google.protobuf.UInt32Value":
      return scalarSchema(ScalarType.UINT32);
    case "google.protobuf.BoolValue":
      return scalarSchema(ScalarType.BOOL);
    case "google.protobuf.StringValue":
      return scalarSchema(ScalarType.STRING);
    case "google.protobuf.BytesValue":
      return scalarSchema(ScalarType.BYTES);
  }
  if (typeName.startsWith("google.protobuf.")) {
    throw new Error(`protoc-gen-openapi: no JSON mapping for well-known type ${typeName}`);
  }
  return undefined;
}

function messageSchemaRef(message: DescMessage): Schema {
  return wellKnownSchema(message.typeName) ?? schemaRef(message.typeName);
}

function mapKeySchema(key: ScalarType): Schema | undefined {
  switch (key) {
    case ScalarType.STRING:
      return undefined;
    case ScalarType.BOOL:
      return { enum: ["true", "false"] };
    default:
      return { pattern: "^-?[0-9]+$" };
  }
}

function fieldSchema(field: DescField): Schema {
  switch (field.fieldKind) {
    case "scalar":
      return scalarSchema(field.scalar);
    case "enum":
      return schemaRef(field.enum.typeName);
    case "message":
      return messageSchemaRef(field.message);
    case "list": {
      const items =
        field.listKind === "scalar"
          ? scalarSchema(field.scalar)
          : field.listKind === "enum"
            ? schemaRef(field.enum.typeName)
            : messageSchemaRef(field.message);
      return { type: "array", items };
    }
    case "map": {
      const value =
        field.mapKind === "scalar"
          ? scalarSchema(field.scalar)
          : field.mapKind === "enum"
            ? schemaRef(field.enum.typeName)
            : messageSchemaRef(field.message);
      const propertyNames = mapKeySchema(field.mapKey);
      return { type: "object", ...(propertyNames ? { propertyNames } : {}), additionalProperties: value };
    }
  }
}

function messageSchema(message: DescMessage): Schema {
  const properties: Record<string, Schema> = {};
  for (const field of message.fields) {
    let description = comment(field);
    if (field.oneof) {
      const members = field.oneof.fields.map((member) => `\`${member.jsonName}\``).join(", ");
      description += `\n\nMember of oneof \`${field.oneof.name}\`: at most one of ${members} is set.`;
    }
    properties[field.jsonName] = { ...fieldSchema(field), description };
  }
  const schema: Schema = { type: "object", description: comment(message) };
  if (message.fields.length > 0) schema.properties = properties;
  if (message.oneofs.length > 0) {
    schema["x-oneof"] = Object.fromEntries(message.oneofs.map((o) => [o.name, o.fields.map((f) => f.jsonName)]));
    // At most one member of each oneof: no body may hold two of them.
    const pairs = message.oneofs.flatMap((o) =>
      o.fields.flatMap((a, i) => o.fields.slice(i + 1).map((b) => ({ required: [a.jsonName, b.jsonName] }))),
    );
    if (pairs.length > 0) schema.not = pairs.length === 1 ? pairs[0] : { anyOf: pairs };
  }
  return schema;
}

function enumSchema(desc: DescEnum): Schema {
  const values = desc.values.map((v) => `- \`${v.name}\`: ${comment(v).replace(/\s+/g, " ")}`).join("\n");
  return {
    type: "string",
    description: `${comment(desc)}\n\n${values}`,
    enum: desc.values.map((v) => v.name),
    "x-enum-descriptions": desc.values.map((v) => comment(v)),
  };
}

/** Every message and enum that the methods of a service reach, well-known types excluded, sorted by name. */
function reachableSchemas(service: DescService): [string, Schema][] {
  const schemas = new Map<string, Schema>();
  const visitEnum = (desc: DescEnum): void => {
    if (!schemas.has(desc.typeName)) schemas.set(desc.typeName, enumSchema(desc));
  };
  const visitMessage = (message: DescMessage): void => {
    if (schemas.has(message.typeName) || wellKnownSchema(message.typeName)) return;
    schemas.set(message.typeName, messageSchema(message));
    for (const field of message.fields) {
      if (field.enum) visitEnum(field.enum);
      if (field.message) visitMessage(field.message);
    }
  };
  for (const method of service.methods) {
    visitMessage(method.input);
    visitMessage(method.output);
  }
  return [...schemas.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

const connectError: Schema = {
  type: "object",
  description:
    "The body of a Connect error. For a unary RPC it comes with an HTTP error status that follows from the code " +
    "(for example invalid_argument 400, unauthenticated 401, permission_denied 403, not_found 404, already_exists " +
    "and aborted 409, resource_exhausted 429, canceled 499, unimplemented 501, unavailable 503, deadline_exceeded " +
    "504, the others 500).",
  properties: {
    code: { type: "string", enum: [...CONNECT_ERROR_CODES], description: "The Connect error code." },
    message: { type: "string", description: "A developer-facing description of the error." },
    details: {
      type: "array",
      description: "Error details, each a protobuf message.",
      items: {
        type: "object",
        properties: {
          type: { type: "string", description: "Fully-qualified name of the detail's message type." },
          value: {
            type: "string",
            contentEncoding: "base64",
            description: "The binary protobuf encoding of the detail, base64 without padding.",
          },
          debug: { type: "object", description: "The detail as JSON, for debugging only." },
        },
        required: ["type", "value"],
      },
    },
  },
  required: ["code"],
};

const connectEndStream: Schema = {
  type: "object",
  description: "The JSON body of the last envelope (flags 0x02) of a Connect streaming response.",
  properties: {
    error: { $ref: "#/components/schemas/connect.error", description: "Set when the RPC failed." },
    metadata: {
      type: "object",
      description: "Trailers: each name maps to its values.",
      additionalProperties: { type: "array", items: { type: "string" } },
    },
  },
};

const parameters: Schema = {
  "Connect-Protocol-Version": {
    name: "Connect-Protocol-Version",
    in: "header",
    required: false,
    description: "Version of the Connect protocol; clients should send 1.",
    schema: { type: "string", enum: ["1"] },
  },
  "Connect-Timeout-Ms": {
    name: "Connect-Timeout-Ms",
    in: "header",
    required: false,
    description: "Deadline of the call in milliseconds; when it passes, the call fails with deadline_exceeded.",
    schema: { type: "string", pattern: "^[0-9]{1,10}$" },
  },
};

function streamingDescription(method: DescMethod): string {
  return [
    `Server-streaming RPC over the Connect streaming protocol, with content type application/connect+json in both directions.`,
    `Both bodies are sequences of envelopes: each envelope is a 5-byte prefix (1 byte of flags, then the length of the`,
    `payload as a 4-byte big-endian unsigned integer) followed by that many bytes of JSON. The request body is one`,
    `envelope (flags 0x00) holding a ${method.input.typeName}. Each response envelope with flags 0x00 holds one`,
    `${method.output.typeName}; the stream ends with one envelope with flags 0x02 (end of stream) whose JSON is a`,
    `connect.endStream object, carrying the error (a connect.error) if the RPC failed: errors arrive there, with HTTP`,
    `status 200. The schemas below describe the JSON of one message envelope. Use a Connect client (such as @mcsv/sdk`,
    `with @connectrpc/connect) or buf curl to call it.`,
  ].join("\n");
}

/**
 * Who may call what (docs/security.md), as bearer schemes, so that Swagger UI offers Authorize and a linter finds
 * every operation secured: the gateway's public methods take a tenant's API key; every other method, the operator's
 * credential or a calling service's own.
 */
const securitySchemes: Schema = {
  apiKey: {
    type: "http",
    scheme: "bearer",
    description: "A tenant's API key (`Authorization: Bearer <key>`): one of MCSV_API_KEYS; `npm start` prints the dev key.",
  },
  internalCredential: {
    type: "http",
    scheme: "bearer",
    description:
      "The operator's credential (MCSV_INTERNAL_TOKEN; `npm start` keeps the dev one in .data/credentials.json as internalToken), or a calling service's own, which opens only the methods that service calls.",
  },
};

function securityOf(service: DescService, method: DescMethod): Schema[] {
  const isPublic = service.typeName === "mcsv.v1.UserService" && (USER_PUBLIC_METHODS as readonly string[]).includes(method.name);
  return [{ [isPublic ? "apiKey" : "internalCredential"]: [] }];
}

function operation(service: DescService, method: DescMethod): Schema {
  const text = comment(method);
  const streaming = method.methodKind === "server_streaming";
  const contentType = streaming ? "application/connect+json" : "application/json";
  return {
    tags: [service.name],
    operationId: method.name,
    summary: firstSentence(text),
    description: streaming ? `${text}\n\n${streamingDescription(method)}` : text,
    security: securityOf(service, method),
    parameters: [
      { $ref: "#/components/parameters/Connect-Protocol-Version" },
      { $ref: "#/components/parameters/Connect-Timeout-Ms" },
    ],
    requestBody: {
      required: true,
      content: { [contentType]: { schema: schemaRef(method.input.typeName) } },
    },
    responses: {
      "200": {
        description: streaming
          ? `A stream of ${method.output.name} messages, ended by a connect.endStream message.`
          : `The ${method.output.name}.`,
        content: { [contentType]: { schema: schemaRef(method.output.typeName) } },
      },
      default: { $ref: "#/components/responses/connect.error" },
    },
  };
}

/** The OpenAPI 3.1 document of a service, as a plain object. */
export function buildOpenApi(service: DescService): Schema {
  const port = (SERVICES as Record<string, { port: number } | undefined>)[serviceKey(service)]?.port;
  if (port === undefined) throw new Error(`protoc-gen-openapi: no default port for ${service.typeName} in services/shared/topology.ts`);
  const unsupported = service.methods.find((m) => m.methodKind !== "unary" && m.methodKind !== "server_streaming");
  if (unsupported) throw new Error(`protoc-gen-openapi: ${unsupported.methodKind} is not supported (${unsupported.name})`);
  const streaming = service.methods.some((m) => m.methodKind === "server_streaming");

  const paths: Schema = {};
  for (const method of service.methods) {
    paths[`/${service.typeName}/${method.name}`] = { post: operation(service, method) };
  }
  const schemes = new Set(service.methods.flatMap((m) => securityOf(service, m).flatMap((requirement) => Object.keys(requirement))));
  const schemas: Schema = {
    "connect.error": connectError,
    ...(streaming ? { "connect.endStream": connectEndStream } : {}),
    ...Object.fromEntries(reachableSchemas(service)),
  };
  return {
    openapi: "3.1.0",
    info: {
      title: `${service.typeName.replace(/\.[^.]+$/, "")} ${service.name}`,
      version: SERVICE_VERSION,
      description: comment(service),
      license: { name: "MIT", identifier: "MIT" },
    },
    servers: [{ url: `http://localhost:${port}`, description: "Local default" }],
    tags: [{ name: service.name, description: comment(service) }],
    paths,
    components: {
      schemas,
      parameters,
      securitySchemes: Object.fromEntries(Object.entries(securitySchemes).filter(([name]) => schemes.has(name))),
      responses: {
        "connect.error": {
          description: "A Connect error.",
          content: { "application/json": { schema: schemaRef("connect.error") } },
        },
      },
    },
  };
}

/** The YAML text of a service's document: deterministic, without anchors or folded lines. */
export function renderOpenApi(service: DescService): string {
  const doc = new Document(buildOpenApi(service), { aliasDuplicateObjects: false });
  doc.commentBefore = ` Generated by protoc-gen-openapi from ${service.file.name}.proto (${service.typeName}). Do not edit.`;
  return doc.toString({ lineWidth: 0 });
}
