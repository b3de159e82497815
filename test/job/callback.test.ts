/**
 * The callback sender (services/job/callback.ts) against real local HTTP and HTTPS receivers, with an injected
 * resolver standing in for DNS (the sandbox has none): the send-time re-check of CALLBACK_ALLOWED_HOSTS, the pinned
 * connection (DNS rebinding between the gateway's check and the POST is refused, and the socket goes only to the
 * address the check saw), TLS verification against the host name, and the classification of answers (2xx success;
 * 408, 429, 5xx, timeouts and network errors retried; other 3xx and 4xx permanent; redirects never followed), and
 * the Standard Webhooks signatures, checked with the standardwebhooks library's own verify as a receiver would.
 * Also notify_client's refusal log and metric. In process; no Postgres.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createTlsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import type { TLSSocket } from "node:tls";
import { Webhook, WebhookVerificationError } from "standardwebhooks";
import winston from "winston";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { GetWebhookSigningSecretsResponseSchema, NotifyClientTaskSchema, NotifyPdfReadyRequestSchema } from "@mcsv/sdk";
import { CallbackPolicy, type HostResolver } from "../../services/shared/callback-policy.js";
import { createLogger } from "../../services/shared/logger.js";
import { CallbackRefusedError, pinnedLookup, postCallback, type CallbackOptions } from "../../services/job/callback.js";
import { callbackRefusalsTotal } from "../../services/job/metrics.js";
import { isPermanentFailure, type TaskContext } from "../../services/job/tasks/context.js";
import { notifyClientTask } from "../../services/job/tasks/notify_client.js";
import { gatewaySigningSecrets } from "../../services/job/webhook-signing.js";

const PUBLIC = "93.184.216.34";
const SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const options: CallbackOptions = { event: "pdf_ready", idempotencyKey: "mcsv-job-42", signingSecrets: [SECRET], timeoutMs: 5_000 };

/** A policy as in development (plain http allowed) for local receivers, whose ports the entries must name. */
const devPolicy = (hosts: string[], resolver?: HostResolver) => new CallbackPolicy(hosts, resolver, { allowHttp: true });
const body = { conversion: { id: "conv-1", state: "CONVERSION_STATE_SUCCEEDED" } };

interface Received {
  method: string;
  path: string;
  headers: IncomingMessage["headers"];
  body: string;
  servername?: string | false | null;
}

/** A receiver on 127.0.0.1 that records every request and answers by path: /ok 204, /status/<n> n, /moved 302, /hang never. */
class Receiver {
  readonly requests: Received[] = [];
  port = 0;

  constructor(readonly server: Server) {
    server.on("request", (req: IncomingMessage, res: ServerResponse) => {
      let text = "";
      req.on("data", (chunk: Buffer) => (text += chunk.toString()));
      req.on("end", () => {
        const servername = (req.socket as Partial<TLSSocket>).servername;
        this.requests.push({ method: req.method ?? "", path: req.url ?? "", headers: req.headers, body: text, ...(servername !== undefined ? { servername } : {}) });
        const path = (req.url ?? "").split("?")[0]!;
        if (path.startsWith("/hang")) return;
        if (path === "/moved") res.writeHead(302, { location: "/ok" }).end();
        else if (path.startsWith("/status/")) res.writeHead(Number(path.slice(8))).end("answer body");
        else if (path === "/ok") res.writeHead(204).end();
        else res.writeHead(404).end();
      });
    });
  }

  async listen(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.closeAllConnections();
      this.server.close(() => resolve());
    });
  }
}

/** A resolver that answers from `answers` in turn (the last one repeats) and records each lookup. */
function scriptedResolver(...answers: string[][]): HostResolver & { lookups: string[] } {
  const lookups: string[] = [];
  const resolve = async (host: string) => {
    lookups.push(host);
    return answers[Math.min(lookups.length - 1, answers.length - 1)]!;
  };
  return Object.assign(resolve, { lookups });
}

async function failureOf(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (error) {
    return error as Error;
  }
  throw new Error("expected a failure");
}

let http: Receiver;

beforeAll(async () => {
  http = await new Receiver(createServer()).listen();
});

afterAll(async () => {
  await http?.close();
});

beforeEach(() => {
  http.requests.length = 0;
});

describe("the send-time check", () => {
  test("DNS rebinding: public at the gateway's check, 127.0.0.1 at send time → refused for good, nothing reaches the local server", async () => {
    const resolver = scriptedResolver([PUBLIC], ["127.0.0.1"]);
    const policy = devPolicy([`*.example.com:${http.port}`], resolver);
    const url = `http://rebind.example.com:${http.port}/ok?token=s3cret`;
    // The gateway's check, when it accepted the conversion.
    expect(await policy.check(url)).toMatchObject({ addresses: [PUBLIC] });

    const error = await failureOf(postCallback(policy, url, body, options));
    expect(error).toBeInstanceOf(CallbackRefusedError);
    expect(isPermanentFailure(error)).toBe(true);
    expect(error.message).toBe(`callback to http://rebind.example.com:${http.port} refused: host rebind.example.com resolves to a non-public address`);
    expect((error as CallbackRefusedError).refusal).toBe("non_public");
    expect(resolver.lookups).toEqual(["rebind.example.com", "rebind.example.com"]);
    expect(http.requests).toEqual([]);
  });

  test("a mix of public and private addresses at send time is refused", async () => {
    const policy = devPolicy([`*.example.com:${http.port}`], scriptedResolver([PUBLIC, "127.0.0.1"]));
    const error = await failureOf(postCallback(policy, `http://mixed.example.com:${http.port}/ok`, body, options));
    expect(error).toBeInstanceOf(CallbackRefusedError);
    expect((error as CallbackRefusedError).refusal).toBe("non_public");
    expect(http.requests).toEqual([]);
  });

  test("a host taken off the allowlist after the job was enqueued is refused, even one that is reachable", async () => {
    const url = `http://127.0.0.1:${http.port}/ok`;
    expect(await devPolicy([`127.0.0.1:${http.port}`]).check(url)).toMatchObject({ url });
    const now = devPolicy(["hooks.example.com"], scriptedResolver([PUBLIC]));
    const error = await failureOf(postCallback(now, url, body, options));
    expect(error).toBeInstanceOf(CallbackRefusedError);
    expect(error.message).toBe(`callback to http://127.0.0.1:${http.port} refused: host 127.0.0.1 is not allowed for callbacks`);
    expect(http.requests).toEqual([]);
  });

  test("a host named exactly may resolve to loopback: delivered to the address the check saw, with no second lookup", async () => {
    // Any lookup after the check would answer an unroutable address: the POST would then time out instead.
    const resolver = scriptedResolver(["127.0.0.1"], ["10.255.255.1"]);
    const policy = devPolicy([`hooks.internal.test:${http.port}`], resolver);
    await postCallback(policy, `http://hooks.internal.test:${http.port}/ok?token=s3cret`, body, options);
    expect(resolver.lookups).toEqual(["hooks.internal.test"]);
    expect(http.requests).toHaveLength(1);
    const [request] = http.requests;
    expect(request).toMatchObject({ method: "POST", path: "/ok?token=s3cret", body: JSON.stringify(body) });
    expect(request!.headers).toMatchObject({
      host: `hooks.internal.test:${http.port}`,
      "content-type": "application/json",
      "x-mcsv-event": "pdf_ready",
      "idempotency-key": "mcsv-job-42",
      "user-agent": expect.stringMatching(/^mcsv-job\//),
    });
  });

  test("a DNS failure at send time is retried, not refused", async () => {
    const policy = devPolicy([`*.example.com:${http.port}`], async () => {
      throw Object.assign(new Error("getaddrinfo EAI_AGAIN"), { code: "EAI_AGAIN" });
    });
    const error = await failureOf(postCallback(policy, `http://flaky.example.com:${http.port}/ok`, body, options));
    expect(error.message).toBe(`callback to http://flaky.example.com:${http.port} failed: host flaky.example.com cannot be resolved`);
    expect(isPermanentFailure(error)).toBe(false);
  });

  test("the socket's lookup answers only the checked host, from the checked addresses", () => {
    const lookup = pinnedLookup({ host: "hooks.test", addresses: ["127.0.0.1", "::1"] });
    const answers: unknown[][] = [];
    const record = (...args: unknown[]) => answers.push(args);
    lookup("hooks.test", { all: true }, record);
    lookup("HOOKS.test", { family: 6 }, record);
    lookup("elsewhere.test", { all: true }, record);
    expect(answers[0]).toEqual([null, [{ address: "127.0.0.1", family: 4 }, { address: "::1", family: 6 }]]);
    expect(answers[1]).toEqual([null, "::1", 6]);
    expect(answers[2]![0]).toMatchObject({ code: "ENOTFOUND" });
  });
});

describe("answers and failures", () => {
  const local = () => devPolicy([`127.0.0.1:${http.port}`]);
  const at = (path: string) => `http://127.0.0.1:${http.port}${path}`;

  test("408, 429 and 5xx are retried; other 4xx and redirects are permanent, and a redirect is not followed", async () => {
    for (const status of [408, 429, 500, 503]) {
      const error = await failureOf(postCallback(local(), at(`/status/${status}`), body, options));
      expect({ status, message: error.message, permanent: isPermanentFailure(error) }).toEqual({ status, message: `callback to http://127.0.0.1:${http.port} answered ${status}`, permanent: false });
    }
    for (const status of [400, 404, 410]) {
      const error = await failureOf(postCallback(local(), at(`/status/${status}`), body, options));
      expect({ status, permanent: isPermanentFailure(error) }).toEqual({ status, permanent: true });
    }
    const moved = await failureOf(postCallback(local(), at("/moved"), body, options));
    expect(isPermanentFailure(moved)).toBe(true);
    expect(moved.message).toContain("answered 302 (redirects are not followed)");
    expect(http.requests.map((r) => r.path)).toEqual(["/status/408", "/status/429", "/status/500", "/status/503", "/status/400", "/status/404", "/status/410", "/moved"]);
    await postCallback(local(), at("/status/200"), body, options);
  });

  test("a receiver that does not answer in time, or a shutdown, fails the attempt (retried), naming only the origin", async () => {
    const slow = await failureOf(postCallback(local(), at("/hang/secret-path?key=s3cret"), body, { ...options, timeoutMs: 300 }));
    expect(slow.message).toBe(`callback to http://127.0.0.1:${http.port} failed: timed out after 300 ms`);
    expect(isPermanentFailure(slow)).toBe(false);

    const shutdown = new AbortController();
    const pending = failureOf(postCallback(local(), at("/hang?key=s3cret"), body, { ...options, signal: shutdown.signal }));
    while (http.requests.length < 2) await new Promise((resolve) => setTimeout(resolve, 10));
    shutdown.abort();
    const aborted = await pending;
    expect(aborted.message).toMatch(new RegExp(`^callback to http://127\\.0\\.0\\.1:${http.port} failed: .*abort`, "i"));
    expect(isPermanentFailure(aborted)).toBe(false);
    expect(`${slow.message} ${aborted.message}`).not.toMatch(/secret|s3cret/);
  });

  test("a refused connection is retried", async () => {
    const closed = await new Receiver(createServer()).listen();
    await closed.close();
    const error = await failureOf(postCallback(devPolicy([`127.0.0.1:${closed.port}`]), `http://127.0.0.1:${closed.port}/ok`, body, options));
    expect(error.message).toContain("ECONNREFUSED");
    expect(isPermanentFailure(error)).toBe(false);
  });
});

describe("signatures (Standard Webhooks)", () => {
  const at = (path: string) => `http://127.0.0.1:${http.port}${path}`;
  /** The headers a receiver verifies with, as it got them. */
  const received = (index = 0) => {
    const { headers, body: text } = http.requests[index]!;
    return { text, headers: { "webhook-id": String(headers["webhook-id"]), "webhook-timestamp": String(headers["webhook-timestamp"]), "webhook-signature": String(headers["webhook-signature"]) } };
  };

  test("every POST is signed: the receiver's own standardwebhooks verify accepts it, webhook-id is the idempotency key", async () => {
    const before = Math.floor(Date.now() / 1000);
    await postCallback(devPolicy([`127.0.0.1:${http.port}`]), at("/ok"), body, options);
    const { text, headers } = received();
    expect(headers["webhook-id"]).toBe("mcsv-job-42");
    expect(http.requests[0]!.headers["idempotency-key"]).toBe("mcsv-job-42");
    expect(Number(headers["webhook-timestamp"])).toBeGreaterThanOrEqual(before);
    expect(Number(headers["webhook-timestamp"])).toBeLessThanOrEqual(Math.floor(Date.now() / 1000));
    expect(headers["webhook-signature"]).toMatch(/^v1,[A-Za-z0-9+/]+=*$/);
    expect(new Webhook(SECRET).verify(text, headers)).toEqual(body);
  });

  test("a forged or altered callback fails verification", async () => {
    await postCallback(devPolicy([`127.0.0.1:${http.port}`]), at("/ok"), body, options);
    const { text, headers } = received();
    const altered = text.replace("CONVERSION_STATE_SUCCEEDED", "CONVERSION_STATE_FAILED");
    expect(altered).not.toBe(text);
    expect(() => new Webhook(SECRET).verify(altered, headers)).toThrow(WebhookVerificationError);
    expect(() => new Webhook(SECRET).verify(text, { ...headers, "webhook-id": "mcsv-job-43" })).toThrow(WebhookVerificationError);
    expect(() => new Webhook(SECRET).verify(text, { ...headers, "webhook-timestamp": String(Number(headers["webhook-timestamp"]) - 1) })).toThrow(WebhookVerificationError);
    // Signed by anyone else (a forger without the tenant's secret).
    const forger = new Webhook("whsec_" + Buffer.alloc(32, 7).toString("base64"));
    const forged = { ...headers, "webhook-signature": forger.sign(headers["webhook-id"], new Date(Number(headers["webhook-timestamp"]) * 1000), text) };
    expect(() => new Webhook(SECRET).verify(text, forged)).toThrow(WebhookVerificationError);
    // Too old: a replay after the receiver's tolerance (5 minutes).
    const old = new Date(Date.now() - 10 * 60_000);
    const replayed = { ...headers, "webhook-timestamp": String(Math.floor(old.getTime() / 1000)), "webhook-signature": new Webhook(SECRET).sign(headers["webhook-id"], old, text) };
    expect(() => new Webhook(SECRET).verify(text, replayed)).toThrow(/too old/);
  });

  test("with two secrets (after a rotation) the header carries both signatures, and either secret verifies", async () => {
    const next = "whsec_" + Buffer.alloc(32, 9).toString("base64");
    await postCallback(devPolicy([`127.0.0.1:${http.port}`]), at("/ok"), body, { ...options, signingSecrets: [next, SECRET] });
    const { text, headers } = received();
    expect(headers["webhook-signature"].split(" ")).toHaveLength(2);
    expect(new Webhook(next).verify(text, headers)).toEqual(body);
    expect(new Webhook(SECRET).verify(text, headers)).toEqual(body);
  });

  test("the tenant's secrets are asked of the gateway and kept briefly: never past a rotated secret's grace period", async () => {
    const asked: string[] = [];
    let answer: { secret: string; expiresAt?: Date }[] = [{ secret: SECRET }];
    const user = {
      getWebhookSigningSecrets: async ({ tenant }: { tenant?: string }) => {
        asked.push(tenant ?? "");
        return create(GetWebhookSigningSecretsResponseSchema, { secrets: answer.map((s) => ({ secret: s.secret, ...(s.expiresAt ? { expiresAt: timestampFromDate(s.expiresAt) } : {}) })) });
      },
    };
    const cached = gatewaySigningSecrets(user as never, { cacheMs: 60_000, rpcTimeoutMs: 1_000 });
    expect(await cached("acme")).toEqual([SECRET]);
    expect(await cached("acme")).toEqual([SECRET]);
    expect(await cached("globex")).toEqual([SECRET]);
    expect(asked).toEqual(["acme", "globex"]);
    // A rotated secret whose grace ends in 50 ms: the answer is kept no longer than that.
    answer = [{ secret: "whsec_bmV3LXNlY3JldC0wMTIzNDU2Nzg5YWJjZGVm" }, { secret: SECRET, expiresAt: new Date(Date.now() + 50) }];
    const rotated = gatewaySigningSecrets(user as never, { cacheMs: 60_000, rpcTimeoutMs: 1_000 });
    expect(await rotated("acme")).toHaveLength(2);
    await new Promise((resolve) => setTimeout(resolve, 80));
    answer = [answer[0]!];
    expect(await rotated("acme")).toEqual([answer[0]!.secret]);
    // Without a cache every callback asks; an empty answer sends nothing.
    const uncached = gatewaySigningSecrets(user as never, { cacheMs: 0, rpcTimeoutMs: 1_000 });
    await uncached("acme");
    await uncached("acme");
    expect(asked).toEqual(["acme", "globex", "acme", "acme", "acme", "acme"]);
    answer = [];
    await expect(uncached("acme")).rejects.toThrow("no webhook signing secret");
  });

  test("without a secret nothing is sent", async () => {
    const error = await failureOf(postCallback(devPolicy([`127.0.0.1:${http.port}`]), at("/ok"), body, { ...options, signingSecrets: [] }));
    expect(error.message).toContain("never sent unsigned");
    expect(http.requests).toEqual([]);
  });
});

describe("https", () => {
  let dir: string;
  let https: Receiver;
  let ca: Buffer;

  beforeAll(async () => {
    // A self-signed certificate for hooks.test only (not for 127.0.0.1), made on the spot.
    dir = mkdtempSync(join(tmpdir(), "mcsv-callback-tls-"));
    execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=hooks.test", "-addext", "subjectAltName=DNS:hooks.test", "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem")], { stdio: "ignore" });
    ca = readFileSync(join(dir, "cert.pem"));
    https = await new Receiver(createTlsServer({ key: readFileSync(join(dir, "key.pem")), cert: ca })).listen();
  });

  beforeEach(() => {
    https.requests.length = 0;
  });

  afterAll(async () => {
    await https?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("pinned to the checked address, TLS still verifies the certificate against the host name (SNI included)", async () => {
    const policy = new CallbackPolicy([`hooks.test:${https.port}`], scriptedResolver(["127.0.0.1"]));
    await postCallback(policy, `https://hooks.test:${https.port}/ok`, body, { ...options, ca });
    expect(https.requests).toHaveLength(1);
    expect(https.requests[0]).toMatchObject({ path: "/ok", servername: "hooks.test", headers: expect.objectContaining({ host: `hooks.test:${https.port}` }) });
  });

  test("verification stays on: an untrusted certificate fails (retried), and nothing is sent", async () => {
    const policy = new CallbackPolicy([`hooks.test:${https.port}`], scriptedResolver(["127.0.0.1"]));
    const untrusted = await failureOf(postCallback(policy, `https://hooks.test:${https.port}/ok`, body, options));
    expect(untrusted.message).toMatch(/self[- ]signed certificate/);
    // Trusted, but the name does not match: the certificate is for hooks.test, not for the address.
    const wrongName = await failureOf(postCallback(new CallbackPolicy([`127.0.0.1:${https.port}`]), `https://127.0.0.1:${https.port}/ok`, body, { ...options, ca }));
    expect(wrongName.message).toMatch(/IP: 127\.0\.0\.1 is not in the cert's list|does not match/);
    expect(https.requests).toEqual([]);
  });
});

describe("notify_client", () => {
  test("logs and counts a refusal, and the job ends (permanent)", async () => {
    const lines: Record<string, unknown>[] = [];
    const logger = createLogger("job-svc", { level: "info", format: "json" });
    logger.clear().add(new winston.transports.Stream({ stream: new Writable({ write: (chunk: Buffer, _enc, done) => (lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>), done()) }) }));
    const before = (await callbackRefusalsTotal.get()).values.find((v) => v.labels.reason === "non_public")?.value ?? 0;
    const task = notifyClientTask({
      client: { notifyPdfReady: async () => ({ recorded: true }) as never, notifyEmailSent: async () => ({ recorded: true }) as never },
      rpcTimeoutMs: 1_000,
      callbackTimeoutMs: 1_000,
      callbacks: devPolicy([`*.example.com:${http.port}`], scriptedResolver(["169.254.169.254"])),
      signingSecrets: async () => [SECRET],
      store: { presignGet: async () => ({ url: "https://s3.example/pdfs/x.pdf?X-Amz-Signature=x", expiresAt: new Date() }) },
      notificationPdfTtlSeconds: 3_600,
    });
    const ctx = { jobId: "42", attempt: 1, maxAttempts: 5, isLastAttempt: false, signal: new AbortController().signal, logger } as TaskContext;
    const pdfReady = create(NotifyPdfReadyRequestSchema, { conversion: { id: "conv-1" } });
    const error = await failureOf(task.run(create(NotifyClientTaskSchema, { event: { case: "pdfReady", value: pdfReady }, callbackUrl: `http://hooks.example.com:${http.port}/ok?token=s3cret` }), ctx));
    expect(isPermanentFailure(error)).toBe(true);
    expect(http.requests).toEqual([]);
    const after = (await callbackRefusalsTotal.get()).values.find((v) => v.labels.reason === "non_public")?.value ?? 0;
    expect(after - before).toBe(1);
    const refusal = lines.find((l) => l["message"] === "callback refused");
    expect(refusal).toMatchObject({ level: "warn", event: "pdf_ready", callback_origin: `http://hooks.example.com:${http.port}`, reason: "non_public" });
    expect(JSON.stringify(lines)).not.toContain("s3cret");
  });
});
