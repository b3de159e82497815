/**
 * Hostile input against the five real processes (embedded Postgres, s3rver, real ImageMagick, the Resend sink).
 *
 * One table: every row names the service, the RPC, the request (through the binary or the JSON client, or a raw HTTP
 * body for what no client would send) and the Connect code it must get, with the fields its ValidationError detail
 * names, and what must (not) have happened besides. All five services are targeted. Classes: field validation, size limits, malformed and
 * over-specified JSON, format sniffing (nothing that is not a raster image reaches ImageMagick), image headers that
 * claim too many pixels or cannot be read (refused by the gateway at once, nothing queued), decompression bombs and
 * damaged images past the header (refused by the image service, the conversion ends FAILED, nothing crashes), HTML escaping of
 * template values, SSRF through callback_url and through the image service's image_url.
 *
 * After the table every service is still ready and still converts; then the presigned URLs a conversion hands out
 * are checked for their lifetime and scope, as far as s3rver allows (see the comments there).
 */
import { createHash, createHmac } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { brotliCompressSync, gzipSync } from "node:zlib";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fromBinary, type DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import {
  ClientService,
  ConversionState,
  EmailService,
  EmailType,
  ImageService,
  JobService,
  JobState,
  Quality,
  UserService,
  ValidationErrorSchema,
  type Conversion,
} from "@mcsv/sdk";
import sharp from "sharp";
import { claimedSizePng, gifGarbage, noise } from "../support/hostile-images.js";
import { ROOT } from "../../scripts/lib/system.js";
import { SERVICE_KEYS, type ServiceKey } from "../../services/shared/topology.js";
import { TEST_API_KEY, TEST_INTERNAL_TOKEN } from "../support/credentials.js";
import { photoLikePng } from "../support/pdf.js";
import { eventually, startTestSystem, type TestSystem } from "../support/system.js";

const KiB = 1024;
const LIMITS = {
  GATEWAY_MAX_IMAGE_BYTES: 64 * KiB,
  UPLOAD_MAX_BYTES: 1024 * KiB,
  IMAGE_MAX_PIXELS: 4_000_000,
  PRESIGN_TTL_SECONDS: 300,
};
/** readMaxBytes of the gateway (services/user/service.ts: a base64 inline image plus 1 MiB) and of the email service. */
const GATEWAY_READ_MAX = Math.ceil((LIMITS.GATEWAY_MAX_IMAGE_BYTES * 4) / 3) + 1024 * KiB;
const EMAIL_READ_MAX = 256 * KiB;

let system: TestSystem;
/** Receives any request that an SSRF would send to "another host"; it must never hear one. */
let trap: { server: Server; url: string; hits: string[] };

beforeAll(async () => {
  const hits: string[] = [];
  const server = createServer((req, res) => {
    hits.push(`${req.method} ${req.url}`);
    res.writeHead(200, { "content-type": "image/png" }).end(readFileSync(join(ROOT, "deploy/imagemagick/policy.xml")));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  trap = { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, hits };
  system = await startTestSystem({
    ...Object.fromEntries(Object.entries(LIMITS).map(([k, v]) => [k, String(v)])),
    // There is no DNS here: that a name allowed by a wildcard but resolving to a private address is refused too is
    // shown by test/user/conversions.test.ts with an injected resolver.
    CALLBACK_ALLOWED_HOSTS: "hooks.example.com,*.hooks.example.org",
  });
}, 120_000);

afterAll(async () => {
  await system?.close();
  await new Promise((resolve) => trap?.server.close(resolve));
});

// ---- requests ----

/** What a row sends, how, and to which RPC. */
interface Request {
  service: ServiceKey;
  rpc: string;
  via: "binary client" | "JSON client" | "raw HTTP";
  send(): Promise<Answer>;
}

/** The answer, as the table compares it: the Connect code (snake_case), the ValidationError's fields, the message. */
interface Answer {
  code: string;
  fields: string[];
  message: string;
  /** The response message on success (client calls). */
  value?: unknown;
}

const snake = (code: Code) => Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();
const SERVICE_OF: Record<ServiceKey, DescService> = { user: UserService, job: JobService, email: EmailService, image: ImageService, client: ClientService };

type Method<S extends DescService> = keyof Client<S> & string;
type Init<S extends DescService, M extends Method<S>> = Client<S>[M] extends (request: infer R, ...rest: never[]) => unknown ? R : never;

/** A typed call through the SDK client (binary protobuf, or JSON with `json`), with the right credential. */
function call<S extends DescService, M extends Method<S>>(key: ServiceKey, service: S, method: M, message: Init<S, M>, json = false): Request {
  return {
    service: key,
    rpc: `${service.name}/${method.charAt(0).toUpperCase()}${method.slice(1)}`,
    via: json ? "JSON client" : "binary client",
    async send() {
      const client = system.client(service, key, { json }) as unknown as Record<string, (request: unknown) => Promise<unknown>>;
      try {
        return { code: "ok", fields: [], message: "", value: await client[method]!(message) };
      } catch (caught) {
        const error = ConnectError.from(caught);
        return { code: snake(error.code), fields: error.findDetails(ValidationErrorSchema).flatMap((d) => d.violations.map((v) => v.field)), message: error.rawMessage };
      }
    },
  };
}

const user = <M extends Method<typeof UserService>>(method: M, message: Init<typeof UserService, M>, json = false) => call("user", UserService, method, message, json);
const email = <M extends Method<typeof EmailService>>(method: M, message: Init<typeof EmailService, M>, json = false) => call("email", EmailService, method, message, json);
const job = <M extends Method<typeof JobService>>(method: M, message: Init<typeof JobService, M>, json = false) => call("job", JobService, method, message, json);
const image = <M extends Method<typeof ImageService>>(method: M, message: Init<typeof ImageService, M>) => call("image", ImageService, method, message);

/** A body no SDK client would send, POSTed as a Connect unary request with the right credential (or `headers`). */
function raw(key: ServiceKey, method: string, body: string | Uint8Array, contentType = "application/json", headers?: Record<string, string>): Request {
  const service = SERVICE_OF[key];
  return {
    service: key,
    rpc: `${service.name}/${method}`,
    via: "raw HTTP",
    async send() {
      const credential = key === "user" ? TEST_API_KEY : TEST_INTERNAL_TOKEN;
      const response = await fetch(`${system.urls[key]}/${service.typeName}/${method}`, {
        method: "POST",
        headers: { "content-type": contentType, "connect-protocol-version": "1", ...(headers ?? { authorization: `Bearer ${credential}` }) },
        body,
      });
      const text = await response.text();
      if (response.ok) return { code: "ok", fields: [], message: "" };
      const error = JSON.parse(text) as { code: string; message?: string; details?: { type: string; value: string }[] };
      const fields = (error.details ?? [])
        .filter((d) => d.type === ValidationErrorSchema.typeName)
        .flatMap((d) => fromBinary(ValidationErrorSchema, Buffer.from(d.value, "base64")).violations.map((v) => v.field));
      return { code: error.code, fields, message: error.message ?? "" };
    },
  };
}

// ---- hostile images and documents ----

/** A JPEG start (SOI, JFIF APP0) followed by garbage. */
function garbageJpeg(): Buffer {
  return Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46, 0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00]), noise(2048)]);
}

const DISGUISED: Record<string, string> = {
  SVG: '<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="64" height="64"><image xlink:href="file:///etc/passwd" width="64" height="64"/></svg>\n',
  PostScript: "%!PS-Adobe-3.0\n/Courier findfont 12 scalefont setfont 72 720 moveto (/etc/passwd) (r) file 100 string readstring pop show showpage\n",
  PDF: "%PDF-1.4\n1 0 obj << /Type /Catalog /OpenAction << /S /JavaScript /JS (app.alert(1)) >> >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n",
  MVG: "push graphic-context\nviewbox 0 0 640 480\nfill 'url(https://127.0.0.1/x.jpg\"|id; \")'\npop graphic-context\n",
  MSL: '<?xml version="1.0" encoding="UTF-8"?>\n<image>\n<read filename="/etc/passwd" />\n<write filename="/tmp/mcsv-msl-owned.png" />\n</image>\n',
  "plain text": "This is not an image, whatever its name says.\n",
  HTML: '<!DOCTYPE html>\n<html><body><img src="x" onerror="alert(1)"><script>fetch("http://169.254.169.254/")</script></body></html>\n',
};

// ---- what must not have happened ----

/** convert_image jobs in the ledger and ConvertImage calls the image service has served: sniffed-out input adds none. */
async function imageActivity(): Promise<{ convertImageJobs: number; imageServiceCalls: number }> {
  const { jobs } = await system.client(JobService, "job").listJobs({ task: "convert_image", pageSize: 100 });
  const metrics = await (await fetch(`${system.urls.image}/metrics`)).text();
  let calls = 0;
  for (const match of metrics.matchAll(/^mcsv_rpc_duration_seconds_count\{([^}]*)\} (\d+)/gm)) {
    if (match[1]!.includes('side="server"') && match[1]!.includes('rpc_method="ConvertImage"')) calls += Number(match[2]);
  }
  return { convertImageJobs: jobs.length, imageServiceCalls: calls };
}

/** The conversion once it has ended. */
async function ended(id: string): Promise<Conversion> {
  const users = system.client(UserService, "user");
  return eventually(async () => {
    const { conversion } = await users.getConversion({ conversionId: id });
    return conversion && (conversion.state === ConversionState.SUCCEEDED || conversion.state === ConversionState.FAILED) ? conversion : undefined;
  }, `conversion ${id} to end`);
}

/** A row's extra check: the conversion ConvertImage queued ends FAILED with an error matching `error`. */
const failsWith = (error: RegExp) => async (answer: Answer) => {
  const { conversion } = answer.value as { conversion: Conversion };
  expect(conversion.state).toBe(ConversionState.QUEUED);
  const end = await ended(conversion.id);
  expect({ state: ConversionState[end.state], error: end.error }).toEqual({ state: "FAILED", error: expect.stringMatching(error) });
};

/** A row's extra check: the last email the sink accepted for `to` carries `escaped` in its HTML and never `rawText`. */
const deliveredEscaped = (to: string, rawText: string, escaped: string) => async () => {
  const html = await eventually(() => system.sink.delivered().findLast((e) => e.body.to.includes(to))?.body.html, `the email to ${to}`);
  expect(html).toContain(escaped);
  expect(html).not.toContain(rawText);
};

// ---- the table ----

interface Row {
  name: string;
  request: Request;
  code: string;
  /** The ValidationError's field names, in order (invalid_argument rows). */
  fields?: string[];
  message?: RegExp;
  /** Must be the same before and after the call (what the request must not have caused). */
  unchanged?: () => Promise<unknown>;
  /** Further checks once the answer is in. */
  then?: (answer: Answer) => Promise<void>;
}

const png = await photoLikePng(24, 16);
const wholePng = await photoLikePng(64, 48);
const halfPng = wholePng.subarray(0, Math.floor(wholePng.byteLength / 2));
const wholeJpeg = await sharp(wholePng).jpeg({ quality: 90 }).toBuffer();
const halfJpeg = wholeJpeg.subarray(0, Math.floor(wholeJpeg.byteLength / 2));
const realBomb = await sharp({ create: { width: 3_000, height: 3_000, channels: 3, background: "#000" } }).greyscale().png({ compressionLevel: 9 }).toBuffer();
const uuid = () => crypto.randomUUID();
const convert = (userEmail: string, bytes: Uint8Array, extra: { callbackUrl?: string } = {}) =>
  user("convertImage", { userEmail, filename: "x.png", source: { case: "imageData", value: bytes }, ...extra });

const rows: Row[] = [
  // -- field validation: every bad field named in the ValidationError detail --
  { name: "email syntax and name length", request: user("createUser", { name: "x".repeat(201), email: "ada@@example.com" }), code: "invalid_argument", fields: ["name", "email"] },
  { name: "CR LF in a name that becomes an email header (JSON)", request: user("createUser", { name: "Eve\r\nBcc: everyone@example.com", email: "eve@example.com" }, true), code: "invalid_argument", fields: ["name"] },
  { name: "LF inside the name, CR LF in the address", request: user("createUser", { name: "Mal\nlory", email: "m@example.com\r\nBcc: x@example.com" }), code: "invalid_argument", fields: ["name", "email"] },
  {
    name: "CR LF in every value that reaches a header: user_name, user_email, the subject variable",
    request: email("sendEmail", {
      userName: "Eve\r\nBcc: attacker@example.com",
      userEmail: "victim@example.com\r\nBcc: attacker@example.com",
      emailType: EmailType.NOTIFICATION,
      variables: { subject: "Hello\r\nBcc: attacker@example.com", message: "multi-line bodies\nare fine" },
      idempotencyKey: "hostile-crlf",
    }),
    code: "invalid_argument",
    fields: ["userName", "userEmail", "variables.subject"],
  },
  { name: "an unspecified EmailType and no idempotency key (JSON)", request: email("sendEmail", { userName: "Ada", userEmail: "ada@example.com" }, true), code: "invalid_argument", fields: ["emailType", "idempotencyKey"] },
  { name: "an EmailType number this build does not know", request: email("sendEmail", { userName: "Ada", userEmail: "ada@example.com", emailType: 99 as EmailType, idempotencyKey: "hostile-type" }), code: "invalid_argument", fields: ["emailType"] },
  {
    name: "a Quality number this build does not know, and an absurd max width",
    request: user("convertImage", { userEmail: "q@example.com", source: { case: "imageData", value: png }, options: { quality: 99 as Quality, maxWidth: 50_000 } }),
    code: "invalid_argument",
    fields: ["options.quality", "options.maxWidth"],
  },
  { name: "an unknown Quality name in JSON", request: raw("user", "ConvertImage", JSON.stringify({ userEmail: "q@example.com", imageData: png.toString("base64"), options: { quality: "QUALITY_ULTRA" } })), code: "invalid_argument", message: /QUALITY_ULTRA/ },
  { name: "ListConversions page size over 100", request: user("listConversions", { userEmail: "ada@example.com", pageSize: 101 }), code: "invalid_argument", fields: ["pageSize"] },
  { name: "ListConversions negative page size (JSON) and a forged page token", request: user("listConversions", { userEmail: "ada@example.com", pageSize: -1, pageToken: "Zm9yZ2Vk" }, true), code: "invalid_argument", fields: ["pageSize", "pageToken"] },
  { name: "ListJobs page size 1000 and an unknown state", request: job("listJobs", { pageSize: 1_000, states: [99 as JobState] }), code: "invalid_argument", fields: ["states[0]", "pageSize"] },
  {
    name: "a callback event with a javascript: link, a CR LF file name and a non-terminal state",
    request: call("client", ClientService, "notifyPdfReady", { conversion: { id: "1; DROP TABLE", state: ConversionState.QUEUED, pdfUrl: "javascript:alert(1)", filename: "a.png\r\nX-Injected: 1" } }),
    code: "invalid_argument",
    fields: ["conversion.id", "conversion.state", "conversion.pdfUrl", "conversion.filename"],
  },
  { name: "ListEvents over its limit", request: call("client", ClientService, "listEvents", { limit: 1_000_000 }, true), code: "invalid_argument", fields: ["limit"] },
  { name: "the image service's own checks", request: image("convertImage", { conversionId: "../../etc", imageUrl: "", inputFormat: "svg" }), code: "invalid_argument", fields: ["conversionId", "imageUrl", "inputFormat"] },

  // -- limits --
  { name: "a gateway message over its readMaxBytes", request: raw("user", "CreateUser", JSON.stringify({ name: "A", email: "a@example.com", idempotencyKey: "x".repeat(GATEWAY_READ_MAX) })), code: "resource_exhausted", message: /larger than configured readMaxBytes/ },
  { name: "an internal service's message over its readMaxBytes", request: email("sendEmail", { userName: "A", userEmail: "a@example.com", emailType: EmailType.WELCOME, idempotencyKey: "big", userId: "x".repeat(EMAIL_READ_MAX + 1) }), code: "resource_exhausted", message: /larger than configured readMaxBytes 262144/ },
  { name: "an upload larger than UPLOAD_MAX_BYTES", request: user("createUploadUrl", { userEmail: "big@example.com", filename: "big.png", contentType: "image/png", size: BigInt(LIMITS.UPLOAD_MAX_BYTES + 1) }), code: "resource_exhausted", message: /uploads are limited/ },
  { name: "an inline image over GATEWAY_MAX_IMAGE_BYTES", request: convert("big@example.com", Buffer.concat([png, Buffer.alloc(LIMITS.GATEWAY_MAX_IMAGE_BYTES)])), code: "resource_exhausted", message: /use CreateUploadUrl/ },
  { name: "an unknown JSON field (at the gateway)", request: raw("user", "CreateUser", JSON.stringify({ name: "Ada", email: "ada-admin@example.com", isAdmin: true })), code: "invalid_argument", message: /key "isAdmin" is unknown/ },
  { name: "an unknown JSON field (at an internal service)", request: raw("job", "EnqueueJob", JSON.stringify({ task: "cleanup_storage", args: { sweep: true }, runAsRoot: true })), code: "invalid_argument", message: /key "runAsRoot" is unknown/ },
  { name: "malformed JSON", request: raw("user", "CreateUser", '{"name": "Ada", "email": '), code: "invalid_argument", message: /cannot decode message mcsv.v1.CreateUserRequest from JSON/ },
  // connect-es 2.1.2 alone would answer internal; services/shared/parse-errors.ts corrects it (test/shared/parse-errors.test.ts).
  { name: "malformed binary protobuf", request: raw("email", "SendEmail", Uint8Array.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x41]), "application/proto"), code: "invalid_argument", message: /^parse binary: / },

  // -- format sniffing: nothing but a raster image is stored, queued, or shown to ImageMagick --
  ...Object.entries(DISGUISED).map(
    ([what, text]): Row => ({
      name: `${what} named x.png`,
      request: convert(`sniff-${what.replace(/\W/g, "")}@example.com`, Buffer.from(text)),
      code: "invalid_argument",
      fields: ["imageData"],
      message: /is not a (recognised|supported) image format/,
      unchanged: imageActivity,
      then: async () => {
        const { conversions } = await system.client(UserService, "user").listConversions({ userEmail: `sniff-${what.replace(/\W/g, "")}@example.com` });
        expect(conversions).toEqual([]);
      },
    }),
  ),
  {
    name: "an SVG uploaded as image/png through CreateUploadUrl",
    request: {
      service: "user",
      rpc: "UserService/CreateUploadUrl, PUT, UserService/ConvertImage",
      via: "binary client",
      async send() {
        const users = system.client(UserService, "user");
        const body = Buffer.from(DISGUISED["SVG"]!);
        const ticket = await users.createUploadUrl({ userEmail: "sniff-upload@example.com", filename: "x.png", contentType: "image/png", size: BigInt(body.byteLength) });
        const put = await fetch(ticket.uploadUrl, { method: "PUT", headers: ticket.headers, body });
        expect(put.status).toBe(200);
        return user("convertImage", { userEmail: "sniff-upload@example.com", source: { case: "uploadId", value: ticket.uploadId } }).send();
      },
    },
    code: "invalid_argument",
    fields: ["uploadId"],
    unchanged: imageActivity,
  },

  // -- what the header shows is refused by the gateway at once (sharp reads it, no pixel decoded): nothing queued --
  {
    name: "a hand-made PNG whose IHDR claims 100,000 × 100,000 pixels",
    request: convert("bomb@example.com", claimedSizePng(100_000, 100_000)),
    code: "resource_exhausted",
    message: /header claims more pixels than the limit of 100,000,000/,
    unchanged: imageActivity,
  },
  {
    name: "the same PNG uploaded through CreateUploadUrl",
    request: {
      service: "user",
      rpc: "UserService/CreateUploadUrl, PUT, UserService/ConvertImage",
      via: "binary client",
      async send() {
        const body = claimedSizePng(100_000, 100_000);
        const ticket = await system.client(UserService, "user").createUploadUrl({ userEmail: "bomb-upload@example.com", contentType: "image/png", size: BigInt(body.byteLength) });
        expect((await fetch(ticket.uploadUrl, { method: "PUT", headers: ticket.headers, body })).status).toBe(200);
        return user("convertImage", { userEmail: "bomb-upload@example.com", source: { case: "uploadId", value: ticket.uploadId } }).send();
      },
    },
    code: "resource_exhausted",
    message: /header claims more pixels than the limit/,
    unchanged: imageActivity,
  },
  { name: "GIF89a followed by garbage", request: convert("damaged@example.com", gifGarbage()), code: "invalid_argument", fields: ["imageData"], message: /has a gif header that cannot be read/, unchanged: imageActivity },
  { name: "a JPEG start followed by garbage", request: convert("damaged@example.com", garbageJpeg()), code: "invalid_argument", fields: ["imageData"], message: /has a jpeg header that cannot be read/, unchanged: imageActivity },

  // -- decompression bombs, damaged images past the header: the gateway accepts the header, the image service refuses the pixels --
  {
    name: `a real, highly compressed 3,000 × 3,000 PNG (${Math.round(realBomb.byteLength / KiB)} KiB) under the gateway's GATEWAY_MAX_IMAGE_PIXELS, over the image service's IMAGE_MAX_PIXELS`,
    request: convert("bomb@example.com", realBomb),
    code: "ok",
    then: failsWith(/more pixels than the limit of 4,000,000/),
  },
  { name: "a PNG cut in half", request: convert("damaged@example.com", halfPng), code: "ok", then: failsWith(/cannot be decoded \(damaged or truncated\): .*png/) },
  { name: "a JPEG cut in half, after its header", request: convert("damaged@example.com", halfJpeg), code: "ok", then: failsWith(/cannot be decoded \(damaged or truncated\): .*JPEG/) },

  // -- template values are HTML-escaped --
  {
    name: "<script> in SendEmail's user_name",
    request: email("sendEmail", { userName: '<script>alert("x")</script>', userEmail: "xss-1@example.com", emailType: EmailType.WELCOME, idempotencyKey: "hostile-xss-1" }),
    code: "ok",
    then: deliveredEscaped("xss-1@example.com", '<script>alert("x")</script>', "&lt;script&gt;alert(&quot;x&quot;)&lt;&#x2F;script&gt;"),
  },
  {
    name: "HTML in a notification's message",
    request: email("sendEmail", { userEmail: "xss-2@example.com", emailType: EmailType.NOTIFICATION, variables: { subject: "Hi", message: '<img src=x onerror="alert(1)">' }, idempotencyKey: "hostile-xss-2" }),
    code: "ok",
    then: deliveredEscaped("xss-2@example.com", "<img src=x", "&lt;img src&#x3D;x onerror&#x3D;&quot;alert(1)&quot;&gt;"),
  },
  {
    name: "<script> in a callback's message, shown on the client's page",
    request: call("client", ClientService, "notifyEmailSent", { userEmail: "xss-4@example.com", emailType: EmailType.WELCOME, emailId: "hostile-xss-4", success: true, message: "<script>alert(4)</script>" }),
    code: "ok",
    then: async () => {
      const page = await (await fetch(`${system.urls.client}/`, { headers: { authorization: `Bearer ${TEST_INTERNAL_TOKEN}` } })).text();
      expect(page).toContain("&lt;script&gt;alert(4)&lt;&#x2F;script&gt;");
      expect(page).not.toContain("<script>alert(4)");
    },
  },
  {
    name: "HTML in a user's name, through the gateway to the welcome email",
    request: user("createUser", { name: "<b onmouseover=alert(1)>Bob</b>", email: "xss-3@example.com" }),
    code: "ok",
    then: deliveredEscaped("xss-3@example.com", "<b onmouseover", "&lt;b onmouseover&#x3D;alert(1)&gt;Bob&lt;&#x2F;b&gt;"),
  },

  // -- Compressed bombs: the credential is checked before the body is read, and each method bounds inflation --
  {
    name: "an unauthenticated brotli bomb (30 MiB inflated) to ConvertImage",
    request: raw("user", "ConvertImage", brotliCompressSync(Buffer.from(JSON.stringify({ userEmail: "a@example.com", imageData: "A".repeat(30 << 20) }))), "application/json", { "content-encoding": "br" }),
    code: "unauthenticated",
  },
  {
    name: "a gzip bomb (8 MiB inflated) to GetUser with a valid key",
    request: raw("user", "GetUser", gzipSync(Buffer.from(JSON.stringify({ id: "A".repeat(8 << 20) }))), "application/json", { "content-encoding": "gzip", authorization: `Bearer ${TEST_API_KEY}` }),
    code: "resource_exhausted",
    message: /larger than configured readMaxBytes 262144 after decompression/,
  },
  {
    name: "a brotli bomb to an internal service with a tenant's API key",
    request: raw("job", "EnqueueJob", brotliCompressSync(Buffer.alloc(64 << 20)), "application/proto", { "content-encoding": "br", authorization: `Bearer ${TEST_API_KEY}` }),
    code: "unauthenticated",
  },

  // -- SSRF through callback_url (allowed: hooks.example.com and *.hooks.example.org) --
  ...[
    ["loopback", "http://127.0.0.1:8085/events", /host 127.0.0.1 is not allowed/],
    ["the cloud metadata address", "http://169.254.169.254/latest/meta-data/iam/", /host 169.254.169.254 is not allowed/],
    ["IPv6 loopback", "http://[::1]:8085/", /host ::1 is not allowed/],
    ["a private network address", "https://10.0.0.7/hook", /host 10.0.0.7 is not allowed/],
    ["loopback written as one decimal number", "http://2130706433/", /host 127.0.0.1 is not allowed/],
    ["localhost by name", "http://localhost:8085/events", /host localhost is not allowed/],
    ["a name under an allowed wildcard's parent, not under the wildcard", "https://hooks.example.org/", /host hooks.example.org is not allowed/],
    ["an allowed name as a prefix of another host", "https://hooks.example.com.attacker.net/", /is not allowed/],
    ["credentials in the URL", "https://user:secret@hooks.example.com/", /must not carry credentials/],
    ["a file: URL", "file:///etc/passwd", /must be an https or http URL/],
    ["an allowed host on a port its allowlist entry does not name", "https://hooks.example.com:8443/", /port 8443 is not allowed for host hooks.example.com/],
    ["an allowed host's other services, on http's port", "http://hooks.example.com:22/", /port 22 is not allowed/],
    ["a NAT64 address of loopback", "https://[64:ff9b::7f00:1]/", /host 64:ff9b::7f00:1 is not allowed/],
  ].map(
    ([what, url, message]): Row => ({
      name: `callback_url to ${what as string}`,
      request: convert("ssrf@example.com", png, { callbackUrl: url as string }),
      code: "invalid_argument",
      fields: ["callbackUrl"],
      message: message as RegExp,
    }),
  ),

  // -- SSRF through the image service's image_url: only presigned URLs of its own bucket are fetched --
  ...[
    ["another host", () => `${trap.url}/mcsv/originals/x.png`],
    ["another bucket on the same endpoint", () => `${system.env["S3_ENDPOINT"]}/other/x.png`],
    ["dot segments out of the bucket", () => `${system.env["S3_ENDPOINT"]}/mcsv/../other/x.png`],
    ["the endpoint as user info in front of another host", () => `http://${new URL(system.env["S3_ENDPOINT"]!).host}@${new URL(trap.url).host}/mcsv/x.png`],
    ["a file: URL", () => "file:///etc/passwd"],
  ].map(
    ([what, url]): Row => ({
      name: `image_url to ${what as string}`,
      request: {
        service: "image",
        rpc: "ImageService/ConvertImage",
        via: "binary client",
        send: () => image("convertImage", { conversionId: uuid(), imageUrl: (url as () => string)(), inputFormat: "png" }).send(),
      },
      code: "invalid_argument",
      fields: ["imageUrl"],
      // The image service was called (that is the point), but it fetched nothing and queued nothing.
      unchanged: async () => ({ trapHits: trap.hits.length, convertImageJobs: (await imageActivity()).convertImageJobs }),
    }),
  ),
];

test("the table has at least 25 hostile inputs and covers every class", () => {
  expect(rows.length).toBeGreaterThanOrEqual(35);
  const vias = new Set(rows.map((r) => r.request.via));
  expect([...vias].sort()).toEqual(["JSON client", "binary client", "raw HTTP"]);
  expect(new Set(rows.map((r) => r.request.service))).toEqual(new Set(SERVICE_KEYS));
});

test.each(rows.map((row) => [`${row.request.service} ${row.request.rpc} (${row.request.via}): ${row.name} → ${row.code}`, row] as const))("%s", async (_title, row) => {
  const before = await row.unchanged?.();
  const answer = await row.request.send();
  expect({ code: answer.code, ...(row.fields ? { fields: answer.fields } : {}) }).toEqual({ code: row.code, ...(row.fields ? { fields: row.fields } : {}) });
  if (row.message) expect(answer.message).toMatch(row.message);
  if (row.unchanged) expect(await row.unchanged()).toEqual(before);
  await row.then?.(answer);
});

// ---- afterwards ----

let survivor: Conversion;

test("after the whole table every service is still ready, and a conversion still works end to end", async () => {
  for (const key of SERVICE_KEYS) {
    const response = await fetch(`${system.urls[key]}/health/ready`);
    expect({ service: key, status: response.status }).toEqual({ service: key, status: 200 });
  }
  for (const [key, child] of system.services) expect({ service: key, exitCode: child.child.exitCode }).toEqual({ service: key, exitCode: null });
  const users = system.client(UserService, "user");
  const { user: created } = await users.createUser({ name: "Survivor", email: "survivor@example.com" });
  expect(created?.id).toMatch(/^[0-9a-f-]{36}$/);
  const { conversion } = await users.convertImage({ userEmail: "survivor@example.com", filename: "ok.png", source: { case: "imageData", value: png }, options: { quality: Quality.LOSSLESS } });
  survivor = await ended(conversion!.id);
  expect(ConversionState[survivor.state]).toBe("SUCCEEDED");
  const pdf = await fetch(survivor.pdfUrl);
  expect(Buffer.from(await pdf.arrayBuffer()).subarray(0, 5).toString("latin1")).toBe("%PDF-");
  // No SSRF row reached the trap, whatever it tried.
  expect(trap.hits).toEqual([]);
});

// ---- presigned URLs and private buckets ----

/**
 * Checks a SigV4 query-string presigned S3 URL the way S3 does (independently of the SDK that made it): the
 * signature over method, path, query and host. Returns whether the signature in the URL matches.
 */
function sigV4Valid(url: URL, secretAccessKey: string, method = "GET"): boolean {
  const params = [...url.searchParams.entries()].filter(([k]) => k !== "X-Amz-Signature");
  const encode = (s: string) => encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  const query = params
    .map(([k, v]) => [encode(k), encode(v)] as const)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join("&");
  const signedHeaders = url.searchParams.get("X-Amz-SignedHeaders")!;
  const headers = signedHeaders.split(";").map((h) => `${h}:${h === "host" ? url.host : ""}\n`).join("");
  const canonical = [method, url.pathname, query, headers, signedHeaders, "UNSIGNED-PAYLOAD"].join("\n");
  const date = url.searchParams.get("X-Amz-Date")!;
  const [, day, region, service] = url.searchParams.get("X-Amz-Credential")!.split("/") as [string, string, string, string];
  const scope = `${day}/${region}/${service}/aws4_request`;
  const toSign = ["AWS4-HMAC-SHA256", date, scope, createHash("sha256").update(canonical).digest("hex")].join("\n");
  const hmac = (key: string | Buffer, data: string) => createHmac("sha256", key).update(data).digest();
  const key = hmac(hmac(hmac(hmac(`AWS4${secretAccessKey}`, day), region), service), "aws4_request");
  return createHmac("sha256", key).update(toSign).digest("hex") === url.searchParams.get("X-Amz-Signature");
}

test("the PDF link is short-lived and names one object: its signature covers the path and the expiry", () => {
  const url = new URL(survivor.pdfUrl);
  const q = url.searchParams;
  expect(url.pathname).toBe(`/mcsv/pdfs/${survivor.id}.pdf`);
  expect(q.get("X-Amz-Algorithm")).toBe("AWS4-HMAC-SHA256");
  expect(Number(q.get("X-Amz-Expires"))).toBeLessThanOrEqual(LIMITS.PRESIGN_TTL_SECONDS);
  expect(q.get("X-Amz-SignedHeaders")).toBe("host");
  const expiresAt = Number(survivor.pdfUrlExpiresAt!.seconds) * 1000;
  expect(expiresAt - Date.now()).toBeLessThanOrEqual(LIMITS.PRESIGN_TTL_SECONDS * 1000);

  // s3rver checks no signature at all: a rewritten URL would be served by it. So the scope is shown the way S3 and
  // MinIO enforce it, by verifying the SigV4 signature with the storage secret: valid for this exact URL, invalid for
  // any other object, bucket or lifetime (S3 answers those with 403 SignatureDoesNotMatch).
  const secret = system.env["S3_SECRET_ACCESS_KEY"]!;
  expect(sigV4Valid(url, secret)).toBe(true);
  const rewritten = (change: (u: URL) => void) => {
    const copy = new URL(url);
    change(copy);
    return sigV4Valid(copy, secret);
  };
  expect(rewritten((u) => (u.pathname = `/mcsv/originals/${survivor.id}`))).toBe(false);
  expect(rewritten((u) => (u.pathname = `/other/pdfs/${survivor.id}.pdf`))).toBe(false);
  expect(rewritten((u) => u.searchParams.set("X-Amz-Expires", "604800"))).toBe(false);
  expect(rewritten((u) => u.searchParams.delete("response-content-disposition"))).toBe(false);
});

test("every storage URL handed out is presigned, the upload URL bound to one key, type and length", async () => {
  const users = system.client(UserService, "user");
  const ticket = await users.createUploadUrl({ userEmail: "survivor@example.com", filename: "a.png", contentType: "image/png", size: BigInt(png.byteLength) });
  const url = new URL(ticket.uploadUrl);
  expect(url.pathname).toBe(`/mcsv/uploads/${ticket.uploadId}`);
  expect(Number(url.searchParams.get("X-Amz-Expires"))).toBeLessThanOrEqual(LIMITS.PRESIGN_TTL_SECONDS);
  expect(url.searchParams.get("X-Amz-SignedHeaders")!.split(";")).toEqual(expect.arrayContaining(["content-length", "content-type", "host"]));
  expect(ticket.headers).toEqual(expect.objectContaining({ "Content-Type": "image/png" }));
  for (const conversion of (await users.listConversions({ userEmail: "survivor@example.com" })).conversions) {
    expect(conversion.pdfUrl === "" || new URL(conversion.pdfUrl).searchParams.has("X-Amz-Signature")).toBe(true);
  }
});

test("the bucket is private where it is deployed (s3rver cannot show it)", () => {
  // s3rver serves any object to an unsigned GET: it implements neither signature checks nor ACLs (its GetObjectAcl is
  // a stub) nor bucket policies, so "an unsigned GET is refused" cannot be observed here; it needs MinIO or S3. What
  // mcsv controls is checked instead: no service or start-up script ever sets an ACL or a bucket policy (objects stay
  // as private as their bucket), the compose stack makes the MinIO bucket private (`mc anonymous set none`), and the
  // application's MinIO policy names no principal (it is attached to the application's user only).
  const sources = [...readdirSync(join(ROOT, "services"), { recursive: true, encoding: "utf8" }).map((f) => join("services", f)), "scripts/lib/embedded.ts", "scripts/lib/system.ts"].filter((f) => f.endsWith(".ts"));
  expect(sources.length).toBeGreaterThan(50);
  const granting = sources.filter((f) => /\bACL\b|GrantRead|PutBucketPolicy|PutBucketAcl|x-amz-acl|public-read/.test(readFileSync(join(ROOT, f), "utf8")));
  expect(granting).toEqual([]);
  const compose = readFileSync(join(ROOT, "deploy/docker-compose.yml"), "utf8");
  expect(compose).toMatch(/mc anonymous set none local\/mcsv/);
  const policy = JSON.parse(readFileSync(join(ROOT, "deploy/minio/mcsv-app-policy.json"), "utf8")) as { Statement: { Principal?: unknown }[] };
  expect(policy.Statement.every((s) => s.Principal === undefined)).toBe(true);
});
