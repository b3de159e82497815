/**
 * A request body that is not valid protobuf is the caller's mistake, and connect-go answers it with
 * invalid_argument, as connect-es does for JSON it cannot parse. connect-es 2.1.2 answers binary it cannot parse with
 * `internal` ("parse binary: …", from createBinarySerialization), which tells a client to look for the fault on the
 * server and makes it count towards server-error alerts. The parse happens before any interceptor runs, so the
 * answer is corrected on its way out instead: a Connect unary error (HTTP 500, JSON body), a Connect stream's end
 * message, a gRPC-web trailer, or a gRPC trailer (HTTP/2). A test (test/shared/parse-errors.test.ts) fails once
 * connect-es answers invalid_argument by itself, so that this module can go.
 */
import type { UniversalServerResponse } from "@connectrpc/connect/protocol";

const PARSE_BINARY = "parse binary:";
const encoder = new TextEncoder();
const decoder = new TextDecoder();
/** Connect's end-of-stream flag and gRPC-web's trailer flag in an envelope's first byte; 0x01 means compressed. */
const CONNECT_END_STREAM = 0b10;
const GRPC_WEB_TRAILER = 0x80;
const COMPRESSED = 0x01;
const GRPC_INTERNAL = "13";
const GRPC_INVALID_ARGUMENT = "3";

interface ConnectErrorJson {
  code?: unknown;
  message?: unknown;
}

function isBinaryParseError(error: ConnectErrorJson | undefined): boolean {
  return error?.code === "internal" && typeof error.message === "string" && error.message.startsWith(PARSE_BINARY);
}

export function correctParseErrors(response: UniversalServerResponse): UniversalServerResponse | Promise<UniversalServerResponse> {
  const contentType = response.header?.get("content-type") ?? "";
  const compressed = (response.header?.get("content-encoding") ?? "identity") !== "identity";
  if (!response.body || compressed) return response;
  if (response.status === 500 && contentType.startsWith("application/json")) return correctUnary(response, response.body);
  if (response.status !== 200) return response;
  if (contentType.startsWith("application/connect+")) return { ...response, body: mapEnvelopes(response.body, CONNECT_END_STREAM, correctEndStream) };
  if (contentType.startsWith("application/grpc-web")) return { ...response, body: mapEnvelopes(response.body, GRPC_WEB_TRAILER, correctTrailer) };
  if (contentType.startsWith("application/grpc") && response.trailer) return { ...response, body: correctingTrailer(response.body, response.trailer) };
  return response;
}

async function correctUnary(response: UniversalServerResponse, body: AsyncIterable<Uint8Array>): Promise<UniversalServerResponse> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of body) chunks.push(chunk);
  const bytes = Buffer.concat(chunks);
  const error = parseJson(bytes) as ConnectErrorJson | undefined;
  if (!isBinaryParseError(error)) return { ...response, body: once(bytes) };
  const corrected = encoder.encode(JSON.stringify({ ...error, code: "invalid_argument" }));
  const header = new Headers(response.header);
  header.set("content-length", String(corrected.byteLength));
  return { ...response, status: 400, header, body: once(corrected) };
}

/** The end message of a Connect stream: `{"error": {...}, "metadata": {...}}`. */
function correctEndStream(payload: Uint8Array): Uint8Array {
  const end = parseJson(payload) as { error?: ConnectErrorJson } | undefined;
  if (!end || !isBinaryParseError(end.error)) return payload;
  return encoder.encode(JSON.stringify({ ...end, error: { ...end.error, code: "invalid_argument" } }));
}

/** gRPC-web trailers are HTTP header lines; grpc-message is percent-encoded. */
function correctTrailer(payload: Uint8Array): Uint8Array {
  const text = decoder.decode(payload);
  const status = /^grpc-status:\s*(\d+)\s*$/im.exec(text)?.[1];
  const message = /^grpc-message:\s*(.*?)\s*$/im.exec(text)?.[1];
  if (status !== GRPC_INTERNAL || !message || !decodeURIComponent(message).startsWith(PARSE_BINARY)) return payload;
  return encoder.encode(text.replace(/^grpc-status:\s*\d+/im, `grpc-status: ${GRPC_INVALID_ARGUMENT}`));
}

/** gRPC's status travels in HTTP/2 trailers, complete once the body is: corrected as the body ends. */
async function* correctingTrailer(body: AsyncIterable<Uint8Array>, trailer: Headers): AsyncIterable<Uint8Array> {
  yield* body;
  const message = trailer.get("grpc-message");
  if (trailer.get("grpc-status") === GRPC_INTERNAL && message && decodeURIComponent(message).startsWith(PARSE_BINARY)) trailer.set("grpc-status", GRPC_INVALID_ARGUMENT);
}

/**
 * Rewrites the payload of envelopes whose flags include `flag`. connect-es writes every envelope as one chunk; a
 * chunk that is not exactly one envelope passes unchanged.
 */
async function* mapEnvelopes(body: AsyncIterable<Uint8Array>, flag: number, map: (payload: Uint8Array) => Uint8Array): AsyncIterable<Uint8Array> {
  for await (const chunk of body) {
    const flags = chunk[0] ?? 0;
    const whole = chunk.byteLength >= 5 && new DataView(chunk.buffer, chunk.byteOffset, 5).getUint32(1) === chunk.byteLength - 5;
    if (!whole || (flags & flag) !== flag || (flags & COMPRESSED) !== 0) {
      yield chunk;
      continue;
    }
    const original = chunk.subarray(5);
    const payload = map(original);
    if (payload === original) {
      yield chunk;
      continue;
    }
    const envelope = new Uint8Array(5 + payload.byteLength);
    envelope[0] = flags;
    new DataView(envelope.buffer).setUint32(1, payload.byteLength);
    envelope.set(payload, 5);
    yield envelope;
  }
}

function parseJson(bytes: Uint8Array): unknown {
  try {
    return JSON.parse(decoder.decode(bytes));
  } catch {
    return undefined;
  }
}

async function* once(bytes: Uint8Array): AsyncIterable<Uint8Array> {
  yield bytes;
}
