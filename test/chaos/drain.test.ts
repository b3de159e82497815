/**
 * The shared server's drain, in-process (services/shared/server.ts): what SIGTERM does to requests on kept-alive
 * connections. A request in flight finishes; a request that arrives on a kept-alive connection while the server
 * drains is answered, and the answer closes the connection; once the server stops listening, a new request is
 * refused (unavailable). None fails with a reset that would leave the client unsure whether it was handled.
 */
import { Agent, request } from "node:http";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { ClientService } from "@mcsv/sdk";
import { createLogger } from "../../services/shared/logger.js";
import { runService, type RunningService } from "../../services/shared/server.js";
import { internalAuth, operatorPolicy, TEST_INTERNAL_TOKEN } from "../support/credentials.js";
import { clientCode } from "./support.js";

let service: RunningService;
let releaseSlow: () => void = () => undefined;
let slowStarted: () => void = () => undefined;
const slowCalled = new Promise<void>((resolve) => (slowStarted = resolve));

beforeAll(async () => {
  const logger = createLogger("drain-test", { level: "error", format: "json" });
  logger.silent = true;
  service = await runService({
    name: "drain-test",
    port: 0,
    host: "127.0.0.1",
    logger,
    auth: operatorPolicy,
    shutdownGraceMs: 5_000,
    routes: (router) =>
      router.service(ClientService, {
        async listEvents(req) {
          if (req.limit === 7) {
            slowStarted();
            await new Promise<void>((resolve) => (releaseSlow = resolve));
          }
          return { events: [] };
        },
      }),
  });
});

afterAll(async () => {
  releaseSlow();
  await service?.shutdown("test over");
});

/** ListEvents as plain Connect JSON on `agent`'s connection; resolves with the status and Connection header. */
function listEvents(agent: Agent, limit: number): Promise<{ status: number; connection: string | undefined; body: string }> {
  const body = JSON.stringify({ limit });
  return new Promise((resolve, reject) => {
    const req = request(
      `${service.url}/mcsv.v1.ClientService/ListEvents`,
      { method: "POST", agent, headers: { "content-type": "application/json", authorization: `Bearer ${TEST_INTERNAL_TOKEN}`, "content-length": Buffer.byteLength(body) } },
      (res) => {
        let text = "";
        res.on("data", (chunk: Buffer) => (text += chunk.toString()));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection, body: text }));
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

test("a drain answers what arrives on kept-alive connections, closing them, then refuses new ones as unavailable", async () => {
  const idle = new Agent({ keepAlive: true, maxSockets: 1 });
  const busy = new Agent({ keepAlive: true, maxSockets: 1 });
  try {
    // A kept-alive connection that is idle when the drain begins, and one with a request in flight.
    expect(await listEvents(idle, 1)).toMatchObject({ status: 200, connection: "keep-alive" });
    const slow = listEvents(busy, 7);
    await slowCalled;

    const stopped = service.shutdown("test");
    const onIdleConnection = await listEvents(idle, 1);
    expect(onIdleConnection).toMatchObject({ status: 200, connection: "close" });
    releaseSlow();
    expect(await slow).toMatchObject({ status: 200, connection: "close" });
    await stopped;

    const client = createClient(ClientService, createConnectTransport({ baseUrl: service.url, httpVersion: "1.1", interceptors: [internalAuth] }));
    const refused = await client.listEvents({ limit: 1 }).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(refused).toBeDefined();
    expect(clientCode(refused)).toBe(Code.Unavailable);
  } finally {
    idle.destroy();
    busy.destroy();
  }
});
