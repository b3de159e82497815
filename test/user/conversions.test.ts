/**
 * ConvertImage (inline and through a presigned upload), CreateUploadUrl, GetConversion and ListConversions against
 * real Postgres and s3rver: format sniffing, size limits, idempotency under concurrency, the callback allowlist.
 */
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { ConversionOptionsSchema, ConversionState, Quality } from "@mcsv/sdk";
import { jobKeys } from "../../services/shared/tasks.js";
import { objectKeys } from "../../services/shared/storage.js";
import { badFields, failure, httpGet, image, metricValue, startGateway, startInfra, type Gateway, type Infra } from "./support.js";

const LIMIT = 64 * 1024;
const UPLOAD_LIMIT = 1024 * 1024;

/** Public DNS does not exist in the sandbox: callback hosts resolve through this table. */
const DNS: Record<string, string[]> = {
  "api.example.com": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"],
  "sneaky.example.com": ["93.184.216.34", "10.0.0.7"],
  "metadata.example.com": ["169.254.169.254"],
  "mapped.example.com": ["::ffff:127.0.0.1"],
  "hooks.internal.test": ["10.1.2.3"],
  "nat64.example.com": ["64:ff9b::a9fe:a9fe"],
  "sixtofour.example.com": ["2002:a00:7::1"],
  "teredo.example.com": ["2001:0:4136:e378:8000:63bf:3fff:fdd2"],
};

let infra: Infra;
let gw: Gateway;
let png: Uint8Array;

beforeAll(async () => {
  infra = await startInfra();
  gw = await startGateway(
    infra,
    { GATEWAY_MAX_IMAGE_BYTES: String(LIMIT), UPLOAD_MAX_BYTES: String(UPLOAD_LIMIT), CALLBACK_ALLOWED_HOSTS: "*.example.com, *.example.com:8080, hooks.internal.test, 127.0.0.1:9" },
    {
      resolveHost: async (host) => {
        const addresses = DNS[host];
        if (!addresses) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: "ENOTFOUND" });
        return addresses;
      },
    },
  );
  png = await image("png");
});

afterAll(async () => {
  await gw?.stop();
  await infra?.stop();
});

afterEach(() => {
  expect(infra.jobs.invalid).toEqual([]);
});

async function objectBytes(key: string): Promise<Uint8Array | undefined> {
  const head = await gw.store.head(key);
  return head ? gw.store.readStart(key, head.size) : undefined;
}

describe("ConvertImage inline", () => {
  test("stores the original, records a QUEUED conversion and enqueues convert_image with the original's key (no link)", async () => {
    const options = create(ConversionOptionsSchema, { quality: Quality.LOSSLESS, maxWidth: 800, stripMetadata: true });
    const { conversion } = await gw.client.convertImage({
      userEmail: "conv@Example.com",
      source: { case: "imageData", value: png },
      filename: "holiday.png",
      options,
    });
    expect(conversion).toMatchObject({
      userEmail: "conv@example.com",
      state: ConversionState.QUEUED,
      filename: "holiday.png",
      inputFormat: "png",
      inputSize: BigInt(png.byteLength),
      pdfUrl: "",
    });
    expect(conversion!.options).toMatchObject({ quality: Quality.LOSSLESS, maxWidth: 800, stripMetadata: true });
    const id = conversion!.id;
    expect(await objectBytes(objectKeys.original(id))).toEqual(png);

    const [job, ...more] = infra.jobs.jobs("convert_image", jobKeys.convertImage(id));
    expect(more).toHaveLength(0);
    expect(job!.args).toMatchObject({
      objectKey: objectKeys.original(id),
      request: { conversionId: id, inputFormat: "png", options: { quality: "QUALITY_LOSSLESS", maxWidth: 800, stripMetadata: true } },
    });
    // The job service presigns the original when it calls the image service: no link in the outbox or the job.
    expect(job!.args["request"]).not.toHaveProperty("imageUrl");
    expect(JSON.stringify(job!.args)).not.toMatch(/X-Amz-Signature|https?:\/\//);
    const { rows } = await gw.db.query<{ args: unknown }>("select args from mcsv_user.outbox where job_key = $1", [jobKeys.convertImage(id)]);
    expect(rows).toHaveLength(1);
    expect(JSON.stringify(rows[0]!.args)).not.toMatch(/X-Amz-Signature|https?:\/\//);

    expect((await gw.client.getConversion({ conversionId: id })).conversion).toEqual(conversion);
  });

  test("accepts every supported format, named from the sniffed bytes", async () => {
    for (const format of ["jpeg", "webp", "tiff", "gif", "avif"] as const) {
      const { conversion } = await gw.client.convertImage({ userEmail: "formats@example.com", source: { case: "imageData", value: await image(format) } });
      expect(conversion).toMatchObject({ inputFormat: format, filename: `image.${format === "jpeg" ? "jpg" : format}` });
    }
  });

  test("refuses what is not a raster image, whatever the filename says", async () => {
    const disguised: Record<string, string> = {
      svg: '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><script>alert(1)</script></svg>',
      pdf: "%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n",
      postscript: "%!PS-Adobe-3.0\n/Times-Roman findfont 12 scalefont setfont\nshowpage\n",
      html: "<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>",
      text: "just some text, honestly a png",
    };
    const calls = infra.jobs.calls.length;
    for (const [kind, body] of Object.entries(disguised)) {
      const error = await failure(gw.client.convertImage({ userEmail: "x@example.com", source: { case: "imageData", value: new TextEncoder().encode(body) }, filename: "photo.png" }));
      expect({ kind, code: error.code, fields: badFields(error) }).toEqual({ kind, code: Code.InvalidArgument, fields: ["imageData"] });
    }
    // A PNG signature alone is not enough either: file-type needs the IHDR chunk.
    const truncated = await failure(gw.client.convertImage({ userEmail: "x@example.com", source: { case: "imageData", value: png.subarray(0, 8) } }));
    expect(truncated.code).toBe(Code.InvalidArgument);
    expect(infra.jobs.calls.length).toBe(calls);
  });

  test("an image over the inline limit is resource_exhausted, also when the message exceeds the read limit", async () => {
    const over = new Uint8Array(LIMIT + 1);
    over.set(png);
    const error = await failure(gw.client.convertImage({ userEmail: "big@example.com", source: { case: "imageData", value: over } }));
    expect(error.code).toBe(Code.ResourceExhausted);
    expect(error.rawMessage).toContain("CreateUploadUrl");
    const huge = new Uint8Array(4 * 1024 * 1024);
    huge.set(png);
    expect((await failure(gw.client.convertImage({ userEmail: "big@example.com", source: { case: "imageData", value: huge } }))).code).toBe(Code.ResourceExhausted);
    // The limit itself is accepted.
    const exact = new Uint8Array(LIMIT);
    exact.set(png);
    expect((await gw.client.convertImage({ userEmail: "big@example.com", source: { case: "imageData", value: exact } })).conversion!.inputSize).toBe(BigInt(LIMIT));
  });

  test("with the default limit a 25 MiB image is accepted and one byte more is resource_exhausted", async () => {
    const defaults = await startGateway(infra);
    try {
      expect(defaults.config.GATEWAY_MAX_IMAGE_BYTES).toBe(25 * 1024 * 1024);
      const exact = new Uint8Array(25 * 1024 * 1024);
      exact.set(png);
      const { conversion } = await defaults.client.convertImage({ userEmail: "big@example.com", source: { case: "imageData", value: exact } });
      expect(conversion!.inputSize).toBe(BigInt(exact.byteLength));
      expect((await gw.store.head(objectKeys.original(conversion!.id)))?.size).toBe(exact.byteLength);
      const over = new Uint8Array(exact.byteLength + 1);
      over.set(png);
      expect((await failure(defaults.client.convertImage({ userEmail: "big@example.com", source: { case: "imageData", value: over } }))).code).toBe(Code.ResourceExhausted);
    } finally {
      await defaults.stop();
    }
  });

  test("validates every field at once and keeps only the file's name", async () => {
    const error = await failure(
      gw.client.convertImage({
        userEmail: "nope",
        filename: "bad\u0000name.png",
        options: { quality: 99 as Quality, maxWidth: 20_001, maxHeight: 20_001 },
        idempotencyKey: "x".repeat(201),
        callbackUrl: "not a url",
      }),
    );
    expect(error.code).toBe(Code.InvalidArgument);
    expect(badFields(error).sort()).toEqual(["callbackUrl", "filename", "idempotencyKey", "imageData", "options.maxHeight", "options.maxWidth", "options.quality", "userEmail"]);

    const { conversion } = await gw.client.convertImage({ userEmail: "paths@example.com", source: { case: "imageData", value: png }, filename: "..\\..\\windows\\evil.png" });
    expect(conversion!.filename).toBe("evil.png");
    const unix = await gw.client.convertImage({ userEmail: "paths@example.com", source: { case: "imageData", value: png }, filename: "/etc/passwd" });
    expect(unix.conversion!.filename).toBe("passwd");
    expect(badFields(await failure(gw.client.convertImage({ userEmail: "paths@example.com", source: { case: "imageData", value: png }, filename: "dir/.." })))).toEqual(["filename"]);
  });
});

describe("idempotency", () => {
  test("the same key returns the same conversion and enqueues nothing new; a different request with it is refused", async () => {
    const request = { userEmail: "idem@example.com", source: { case: "imageData" as const, value: png }, filename: "a.png", idempotencyKey: "conv-1" };
    const first = await gw.client.convertImage(request);
    const again = await gw.client.convertImage({ ...request, userEmail: "IDEM@example.com" });
    expect(again.conversion).toEqual(first.conversion);
    expect(infra.jobs.calls.filter((c) => c.jobKey === jobKeys.convertImage(first.conversion!.id))).toHaveLength(1);

    const other = await failure(gw.client.convertImage({ ...request, source: { case: "imageData", value: await image("png", 17) } }));
    expect(other.code).toBe(Code.InvalidArgument);
    expect(badFields(other)).toEqual(["idempotencyKey"]);
    // Keys are per address: another address with the same key gets its own conversion.
    const elsewhere = await gw.client.convertImage({ ...request, userEmail: "someone-else@example.com" });
    expect(elsewhere.conversion!.id).not.toBe(first.conversion!.id);
  });

  test("concurrent identical requests make one conversion and one convert_image job", async () => {
    const request = { userEmail: "race@example.com", source: { case: "imageData" as const, value: png }, idempotencyKey: "race-1" };
    const results = await Promise.all(Array.from({ length: 8 }, () => gw.client.convertImage(request)));
    const ids = new Set(results.map((r) => r.conversion!.id));
    expect(ids.size).toBe(1);
    const [id] = [...ids];
    const { rows } = await gw.db.query("select count(*)::int as n from mcsv_user.conversions where lower(user_email) = 'race@example.com'");
    expect(rows[0].n).toBe(1);
    expect(infra.jobs.calls.filter((c) => c.task === "convert_image" && (c.args["request"] as { conversionId: string }).conversionId === id)).toHaveLength(1);
    // The losers' originals are removed again: only the winner's remains.
    const originals: string[] = [];
    for await (const object of gw.store.list("originals/")) originals.push(object.key);
    expect(originals).toContain(objectKeys.original(id!));
    const { rows: all } = await gw.db.query<{ id: string }>("select id from mcsv_user.conversions");
    const known = new Set(all.map((r) => objectKeys.original(r.id)));
    expect(originals.filter((key) => !known.has(key))).toEqual([]);
  });
});

describe("uploads", () => {
  async function put(url: string, headers: Record<string, string>, body: Uint8Array): Promise<number> {
    const res = await fetch(url, { method: "PUT", headers, body });
    await res.arrayBuffer();
    return res.status;
  }

  test("CreateUploadUrl, a real PUT to the presigned URL, then ConvertImage by upload_id", async () => {
    const jpeg = await image("jpeg", 64);
    const asked = Date.now();
    const ticket = await gw.client.createUploadUrl({ userEmail: "up@example.com", filename: "C:\\photos\\scan.jpg", contentType: "image/jpeg", size: BigInt(jpeg.byteLength) });
    expect(ticket.uploadId).toMatch(/^[0-9a-f-]{36}$/);
    expect(ticket.headers).toEqual({ "Content-Type": "image/jpeg", "Content-Length": String(jpeg.byteLength) });
    // The link lives PRESIGN_TTL_SECONDS (900 s by default) from the call; SigV4 dates are whole seconds.
    const expiresAt = Number(ticket.expiresAt!.seconds) * 1000;
    expect(expiresAt).toBeGreaterThanOrEqual(asked - 1_000 + gw.config.PRESIGN_TTL_SECONDS * 1000);
    expect(expiresAt).toBeLessThanOrEqual(Date.now() + gw.config.PRESIGN_TTL_SECONDS * 1000);

    // Before the PUT the upload is not there yet.
    const early = await failure(gw.client.convertImage({ userEmail: "up@example.com", source: { case: "uploadId", value: ticket.uploadId } }));
    expect(early.code).toBe(Code.FailedPrecondition);

    expect(await put(ticket.uploadUrl, ticket.headers, jpeg)).toBe(200);
    const { conversion } = await gw.client.convertImage({ userEmail: "UP@example.com", source: { case: "uploadId", value: ticket.uploadId } });
    expect(conversion).toMatchObject({ state: ConversionState.QUEUED, inputFormat: "jpeg", inputSize: BigInt(jpeg.byteLength), filename: "scan.jpg" });
    expect(await objectBytes(objectKeys.original(conversion!.id))).toEqual(jpeg);
    expect(await gw.store.head(objectKeys.upload(ticket.uploadId))).toBeUndefined();
    expect(infra.jobs.jobs("convert_image", jobKeys.convertImage(conversion!.id))).toHaveLength(1);

    // An upload is converted once.
    const twice = await failure(gw.client.convertImage({ userEmail: "up@example.com", source: { case: "uploadId", value: ticket.uploadId } }));
    expect(twice.code).toBe(Code.FailedPrecondition);
    expect(await metricValue(gw.service.url, "mcsv_conversions_requested_total", { source: "upload" })).toBe(1);
  });

  test("refuses a foreign or unknown upload, a bigger object than declared, and a disguised file", async () => {
    const ticket = await gw.client.createUploadUrl({ userEmail: "owner@example.com", contentType: "image/png", size: BigInt(png.byteLength) });
    expect((await failure(gw.client.convertImage({ userEmail: "thief@example.com", source: { case: "uploadId", value: ticket.uploadId } }))).code).toBe(Code.NotFound);
    expect((await failure(gw.client.convertImage({ userEmail: "owner@example.com", source: { case: "uploadId", value: "6f1c2b1e-0000-4000-8000-000000000000" } }))).code).toBe(Code.NotFound);
    expect(badFields(await failure(gw.client.convertImage({ userEmail: "owner@example.com", source: { case: "uploadId", value: "../uploads/x" } })))).toEqual(["uploadId"]);

    // s3rver checks no signatures, so a client can send more than it declared: the gateway notices.
    const bigger = new Uint8Array(png.byteLength + 100);
    bigger.set(png);
    expect(await put(ticket.uploadUrl, { "Content-Type": "image/png" }, bigger)).toBe(200);
    const tooBig = await failure(gw.client.convertImage({ userEmail: "owner@example.com", source: { case: "uploadId", value: ticket.uploadId } }));
    expect(tooBig.code).toBe(Code.FailedPrecondition);

    const svg = new TextEncoder().encode('<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>');
    const disguised = await gw.client.createUploadUrl({ userEmail: "owner@example.com", filename: "cat.png", contentType: "image/png", size: BigInt(svg.byteLength) });
    expect(await put(disguised.uploadUrl, disguised.headers, svg)).toBe(200);
    const refused = await failure(gw.client.convertImage({ userEmail: "owner@example.com", source: { case: "uploadId", value: disguised.uploadId } }));
    expect(refused.code).toBe(Code.InvalidArgument);
    expect(badFields(refused)).toEqual(["uploadId"]);
  });

  test("CreateUploadUrl validates the type and size", async () => {
    const error = await failure(gw.client.createUploadUrl({ userEmail: "", contentType: "image/svg+xml", size: 0n }));
    expect(error.code).toBe(Code.InvalidArgument);
    expect(badFields(error).sort()).toEqual(["contentType", "size", "userEmail"]);
    const big = await failure(gw.client.createUploadUrl({ userEmail: "a@example.com", contentType: "image/png", size: BigInt(UPLOAD_LIMIT + 1) }));
    expect(big.code).toBe(Code.ResourceExhausted);
  });
});

describe("callback_url", () => {
  const convert = (callbackUrl: string) => gw.client.convertImage({ userEmail: "cb@example.com", source: { case: "imageData", value: png }, callbackUrl });

  test.each([
    "https://api.example.com/hooks/mcsv",
    "http://api.example.com:8080/cb?x=1",
    "https://hooks.internal.test/cb", // internal, but named explicitly by the operator
    "http://127.0.0.1:9/cb",
  ])("allows %s", async (url) => {
    const { conversion } = await convert(url);
    expect(conversion!.state).toBe(ConversionState.QUEUED);
  });

  test.each([
    ["https://evil.com/cb", "not allowed"],
    ["https://example.com.evil.com/cb", "not allowed"],
    ["https://sneaky.example.com/cb", "non-public"],
    ["https://metadata.example.com/latest", "non-public"],
    ["https://mapped.example.com/", "non-public"],
    ["https://nat64.example.com/", "non-public"], // NAT64 of 169.254.169.254
    ["https://sixtofour.example.com/", "non-public"], // 6to4 of 10.0.0.7
    ["https://teredo.example.com/", "non-public"],
    ["https://api.example.com:8443/cb", "port 8443 is not allowed"],
    ["http://127.0.0.1:8085/events", "port 8085 is not allowed"],
    ["https://hooks.internal.test:22/", "port 22 is not allowed"],
    ["https://nowhere.example.com/", "cannot be resolved"],
    ["http://169.254.169.254/latest/meta-data", "not allowed"],
    ["http://[::1]/cb", "not allowed"],
    ["ftp://api.example.com/cb", "https or http"],
    ["https://user:secret@api.example.com/cb", "credentials"],
    ["/relative/path", "absolute"],
  ])("refuses %s", async (url, why) => {
    const error = await failure(convert(url));
    expect(error.code).toBe(Code.InvalidArgument);
    expect(badFields(error)).toEqual(["callbackUrl"]);
    expect(error.rawMessage).toContain(why);
  });

  // Address classification and the policy itself: test/shared/callback-policy.test.ts.
});

describe("GetConversion and ListConversions", () => {
  test("not_found and invalid_argument", async () => {
    expect((await failure(gw.client.getConversion({ conversionId: "6f1c2b1e-0000-4000-8000-000000000000" }))).code).toBe(Code.NotFound);
    expect(badFields(await failure(gw.client.getConversion({ conversionId: "abc" })))).toEqual(["conversionId"]);
  });

  test("lists newest first, page by page, with opaque tokens bound to the address", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      ids.push((await gw.client.convertImage({ userEmail: "Lister@example.com", source: { case: "imageData", value: png }, filename: `${i}.png` })).conversion!.id);
    }
    await gw.client.convertImage({ userEmail: "other@example.com", source: { case: "imageData", value: png } });
    const seen: string[] = [];
    let pageToken = "";
    const sizes: number[] = [];
    do {
      const page = await gw.client.listConversions({ userEmail: "lister@EXAMPLE.com", pageSize: 2, pageToken });
      sizes.push(page.conversions.length);
      seen.push(...page.conversions.map((c) => c.id));
      pageToken = page.nextPageToken;
    } while (pageToken);
    expect(sizes).toEqual([2, 2, 1]);
    expect(seen).toEqual([...ids].reverse());

    const all = await gw.client.listConversions({ userEmail: "lister@example.com" });
    expect(all.conversions.map((c) => c.id)).toEqual([...ids].reverse());
    expect(all.nextPageToken).toBe("");

    const first = await gw.client.listConversions({ userEmail: "lister@example.com", pageSize: 2 });
    const foreign = await failure(gw.client.listConversions({ userEmail: "other@example.com", pageToken: first.nextPageToken }));
    expect(badFields(foreign)).toEqual(["pageToken"]);
    expect(badFields(await failure(gw.client.listConversions({ userEmail: "lister@example.com", pageToken: "garbage!" })))).toEqual(["pageToken"]);
    expect(badFields(await failure(gw.client.listConversions({ userEmail: "lister@example.com", pageSize: 101 })))).toEqual(["pageSize"]);
    expect(badFields(await failure(gw.client.listConversions({ userEmail: "lister@example.com", pageSize: -1 })))).toEqual(["pageSize"]);
    expect((await gw.client.listConversions({ userEmail: "nobody@example.com" })).conversions).toEqual([]);
  });
});

describe("storage down", () => {
  test("ConvertImage answers unavailable at once and readiness reports S3", async () => {
    const broken = await startGateway(infra, { S3_ENDPOINT: "http://127.0.0.1:9", S3_TIMEOUT_MS: "1000" });
    try {
      const error = await failure(broken.client.convertImage({ userEmail: "s3@example.com", source: { case: "imageData", value: png } }));
      expect(error.code).toBe(Code.Unavailable);
      const ready = await httpGet(`${broken.service.url}/health/ready`);
      expect(ready.status).toBe(503);
      // S3 is the check that fails, with why; the others pass.
      const { checks } = JSON.parse(ready.body) as { checks: Record<string, string> };
      expect(checks).toMatchObject({ postgres: "ok", conversion_listener: "ok" });
      expect(checks["s3"]).not.toBe("ok");
      expect(checks["s3"]).toMatch(/ECONNREFUSED|connect|timed out/i);
    } finally {
      await broken.stop();
    }
  });
});

test("the gateway stays healthy after all of this", async () => {
  expect((await httpGet(`${gw.service.url}/health/ready`)).status).toBe(200);
  expect(await metricValue(gw.service.url, "mcsv_conversions_requested_total", { source: "inline" })).toBeGreaterThan(10);
});
