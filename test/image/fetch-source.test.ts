/** fetchSource against a local HTTP server: limits, timeouts, and how S3's answers map to Connect codes. */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { Code, ConnectError } from "@connectrpc/connect";
import { fetchSource } from "../../services/image/fetch-source.js";

let server: Server;
let base: string;
let handler: (req: IncomingMessage, res: ServerResponse) => void;

beforeAll(async () => {
  server = createServer((req, res) => handler(req, res));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

const failure = (promise: Promise<unknown>) =>
  promise.then(
    () => {
      throw new Error("it succeeded");
    },
    (e: unknown) => ConnectError.from(e),
  );
const limits = { maxBytes: 1_000_000, timeoutMs: 10_000 };

test("reads the whole body", async () => {
  handler = (_req, res) => res.end(Buffer.alloc(300_000, 7));
  const bytes = await fetchSource(`${base}/ok`, limits);
  expect(bytes.byteLength).toBe(300_000);
});

test("a body without a length stops being read as soon as it passes the limit", async () => {
  let written = 0;
  let closed!: Promise<boolean>;
  handler = (_req, res) => {
    const chunk = Buffer.alloc(64 * 1024, 1);
    const pump = () => {
      while (written < 50_000_000) {
        written += chunk.length;
        if (!res.write(chunk)) return void res.once("drain", pump);
      }
      res.end();
    };
    closed = new Promise((resolve) => res.once("close", () => resolve(res.writableFinished)));
    pump();
  };
  const error = await failure(fetchSource(`${base}/chunked`, limits));
  expect(error.code).toBe(Code.InvalidArgument);
  expect(error.rawMessage).toMatch(/larger than the limit/);
  // The download was abandoned: the connection closed before the server could finish writing.
  expect(await closed).toBe(false);
  expect(written).toBeLessThan(50_000_000);
});

test.each([
  [403, Code.FailedPrecondition],
  [404, Code.NotFound],
  [400, Code.FailedPrecondition],
  [302, Code.FailedPrecondition], // a redirect is not followed
  [500, Code.Unavailable],
  [503, Code.Unavailable],
])("status %i maps to code %i", async (status, code) => {
  handler = (_req, res) => {
    res.writeHead(status, status === 302 ? { location: "http://127.0.0.1:1/elsewhere" } : {});
    res.end("<Error/>");
  };
  expect((await failure(fetchSource(`${base}/status`, limits))).code).toBe(code);
});

test("a server that does not answer in time is deadline_exceeded; a refused connection is unavailable", async () => {
  handler = () => undefined; // never answers
  expect((await failure(fetchSource(`${base}/slow`, { ...limits, timeoutMs: 100 }))).code).toBe(Code.DeadlineExceeded);
  expect((await failure(fetchSource("http://127.0.0.1:1/refused", limits))).code).toBe(Code.Unavailable);
});

test("a body cut short is unavailable (worth a retry)", async () => {
  handler = (_req, res) => {
    res.writeHead(200, { "content-length": "1000" });
    res.write(Buffer.alloc(10));
    setImmediate(() => res.destroy());
  };
  expect((await failure(fetchSource(`${base}/cut`, limits))).code).toBe(Code.Unavailable);
});
