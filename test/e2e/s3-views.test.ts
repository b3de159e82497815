/**
 * Two views of S3 (issue 15): the services reach it at S3_ENDPOINT, clients at S3_PUBLIC_ENDPOINT, on the five real
 * processes. The public endpoint here is a TCP relay in front of the same s3rver that records every request passing
 * through it: conversions succeed, every URL a client gets (upload, PDF, e-mail, the callback POST) names the public
 * endpoint, and the only requests that cross the relay are this test's own (no service fetches through it).
 */
import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import { ConversionState, Quality, UserService } from "@mcsv/sdk";
import { photoLikePng, qpdfCheck } from "../support/pdf.js";
import { eventually, startTestSystem, type TestSystem } from "../support/system.js";
import { freePort } from "../../scripts/lib/embedded.js";
import { startHttpRelay, type HttpRelay } from "../support/http-relay.js";

/** The text of an HTML attribute value (mustache escapes `/`, `=` and `&`). */
const decodeHtml = (text: string) => text.replace(/&#x([0-9a-f]+);/gi, (_, hex: string) => String.fromCodePoint(parseInt(hex, 16))).replaceAll("&amp;", "&");

let system: TestSystem;
let relay: HttpRelay;
/** A callback_url receiver: the JSON bodies POSTed to it. */
let hooks: HttpServer;
let hooksUrl: string;
const posted: Array<{ conversion?: { id?: string; pdfUrl?: string } }> = [];
let publicEndpoint: string;
/** The request lines (method and path) that crossed the relay, in order. */
const crossed = () => relay.requests.map((line) => line.split("?")[0]!);

beforeAll(async () => {
  relay = await startHttpRelay();
  publicEndpoint = relay.url;
  hooks = createHttpServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      posted.push(JSON.parse(Buffer.concat(chunks).toString("utf8")) as (typeof posted)[number]);
      res.writeHead(204).end();
    });
  });
  const hooksPort = await freePort();
  await new Promise<void>((resolve) => hooks.listen(hooksPort, "127.0.0.1", resolve));
  hooksUrl = `http://127.0.0.1:${hooksPort}/hooks`;
  system = await startTestSystem({ S3_PUBLIC_ENDPOINT: publicEndpoint, CALLBACK_ALLOWED_HOSTS: `127.0.0.1:${hooksPort}` });
  relay.target = Number(new URL(system.env["S3_ENDPOINT"]!).port);
}, 120_000);

afterAll(async () => {
  await system?.close();
  await relay?.close();
  await new Promise((resolve) => hooks?.close(resolve));
});

test("conversions succeed, clients get public URLs only, and no service goes through the public endpoint", async () => {
  const users = system.client(UserService, "user");
  const png = await photoLikePng(40, 30);
  const ours: string[] = [];

  // An upload: its URL names the public endpoint; the test PUTs through it.
  const ticket = await users.createUploadUrl({ userEmail: "views@example.com", filename: "uploaded.png", contentType: "image/png", size: BigInt(png.byteLength) });
  expect(ticket.uploadUrl.startsWith(`${publicEndpoint}/`)).toBe(true);
  const put = await fetch(ticket.uploadUrl, { method: "PUT", headers: ticket.headers, body: png });
  expect(put.status).toBe(200);
  ours.push(`PUT ${new URL(ticket.uploadUrl).pathname}`);
  const uploaded = (await users.convertImage({ userEmail: "views@example.com", options: { quality: Quality.LOSSLESS }, idempotencyKey: "views-upload", callbackUrl: hooksUrl, source: { case: "uploadId", value: ticket.uploadId } })).conversion!;
  // And an inline one.
  const inline = (await users.convertImage({ userEmail: "views@example.com", filename: "inline.png", options: { quality: Quality.LOSSLESS }, idempotencyKey: "views-inline", callbackUrl: hooksUrl, source: { case: "imageData", value: png } })).conversion!;

  for (const id of [uploaded.id, inline.id]) {
    const done = await eventually(async () => {
      const { conversion } = await users.getConversion({ conversionId: id });
      if (conversion?.state === ConversionState.FAILED) throw new Error(`conversion ${id} failed: ${conversion.error}`);
      return conversion?.state === ConversionState.SUCCEEDED ? conversion : undefined;
    }, `conversion ${id} to succeed`);
    // The PDF link, from the gateway: public, and it works from outside.
    expect(done.pdfUrl.startsWith(`${publicEndpoint}/`)).toBe(true);
    const pdf = Buffer.from(await (await fetch(done.pdfUrl)).arrayBuffer());
    ours.push(`GET ${new URL(done.pdfUrl).pathname}`);
    await qpdfCheck(pdf);

    // The e-mail's link and the client callback's, presigned by the job service: public too.
    const email = await eventually(
      () => system.sink.delivered().find((e) => e.body.html?.includes(id)),
      `the conversion e-mail of ${id}`,
    );
    const links = [...(email.body.html ?? "").matchAll(/href="(http[^"]+)"/g)].map((m) => decodeHtml(m[1]!));
    expect(links.length).toBeGreaterThan(0);
    for (const link of links) expect({ link, public: link.startsWith(`${publicEndpoint}/`) }).toEqual({ link, public: true });
    const callback = await eventually(() => posted.find((body) => body.conversion?.id === id), `the pdf_ready callback POST of ${id}`);
    const callbackLink = callback.conversion?.pdfUrl ?? "";
    expect({ callbackLink, public: callbackLink.startsWith(`${publicEndpoint}/`) }).toEqual({ callbackLink, public: true });
  }

  // What crossed the public endpoint is exactly what this test sent: the services used the internal one.
  expect(crossed().sort()).toEqual(ours.sort());
}, 120_000);
