/**
 * A handler that cannot reach Postgres answers unavailable (retry later) through the shared server, without the
 * database's address; any other failure stays internal. In-process, against a port where nothing listens.
 */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { ClientService } from "@mcsv/sdk";
import { createPool, databaseUnavailable, isDatabaseUnavailable } from "../../services/shared/database.js";
import { createLogger } from "../../services/shared/logger.js";
import { runService, type RunningService } from "../../services/shared/server.js";
import { freePort } from "../../scripts/lib/embedded.js";
import { internalAuth, operatorPolicy } from "../support/credentials.js";

let service: RunningService;
let closePool: () => Promise<void>;
let deadPort: number;

beforeAll(async () => {
  const logger = createLogger("database-unavailable-test", { level: "error", format: "json" });
  logger.silent = true;
  deadPort = await freePort();
  const pool = createPool(`postgres://mcsv:mcsv@127.0.0.1:${deadPort}/mcsv`, logger, { max: 1 });
  closePool = () => pool.end();
  service = await runService({
    name: "database-unavailable-test",
    port: 0,
    host: "127.0.0.1",
    logger,
    auth: operatorPolicy,
    dependencyErrors: databaseUnavailable,
    routes: (router) =>
      router.service(ClientService, {
        async listEvents(req) {
          if (req.limit === 1) await pool.query("select 1");
          throw new Error("a bug");
        },
      }),
  });
});

afterAll(async () => {
  await service?.shutdown("test over");
  await closePool?.();
});

const client = () => createClient(ClientService, createConnectTransport({ baseUrl: service.url, httpVersion: "1.1", interceptors: [internalAuth] }));

test("Postgres out of reach: unavailable, and the answer does not name the database", async () => {
  const error = ConnectError.from(await client().listEvents({ limit: 1 }).catch((e: unknown) => e));
  expect(error.code).toBe(Code.Unavailable);
  expect(error.rawMessage).toBe("the database is unavailable; retry later");
  expect(error.rawMessage).not.toContain(String(deadPort));
});

test("any other failure stays internal", async () => {
  const error = ConnectError.from(await client().listEvents({ limit: 2 }).catch((e: unknown) => e));
  expect(error.code).toBe(Code.Internal);
});

test("what counts as Postgres being unavailable", () => {
  expect(isDatabaseUnavailable(Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), { code: "ECONNREFUSED" }))).toBe(true);
  expect(isDatabaseUnavailable(Object.assign(new Error("terminating connection due to administrator command"), { code: "57P01" }))).toBe(true);
  expect(isDatabaseUnavailable(Object.assign(new Error("the database system is starting up"), { code: "57P03" }))).toBe(true);
  expect(isDatabaseUnavailable(Object.assign(new Error("connection failure"), { code: "08006" }))).toBe(true);
  expect(isDatabaseUnavailable(new Error("Connection terminated unexpectedly"))).toBe(true);
  expect(isDatabaseUnavailable(new Error("timeout exceeded when trying to connect"))).toBe(true);
  expect(isDatabaseUnavailable(Object.assign(new Error("duplicate key value violates unique constraint"), { code: "23505" }))).toBe(false);
  expect(isDatabaseUnavailable(Object.assign(new Error('syntax error at or near "selec"'), { code: "42601" }))).toBe(false);
  expect(isDatabaseUnavailable("ECONNREFUSED")).toBe(false);
});
