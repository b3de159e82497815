/**
 * The outbox relay against real Postgres: rows that commits hand over in the same turn of the event loop go to the
 * job service together, in one call; a row the job service refuses is set aside without holding back the others;
 * a call that fails is retried later for every row. Each test works inside a transaction that is rolled back, so
 * that the gateway's own relay never sees its rows.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { createLogger } from "../../services/shared/logger.js";
import { addToOutbox, OutboxRelay, type ClaimedJob } from "../../services/user/outbox.js";
import { startGateway, startInfra, type Gateway, type Infra } from "./support.js";

let infra: Infra;
let gw: Gateway;

beforeAll(async () => {
  infra = await startInfra();
  gw = await startGateway(infra);
});

afterAll(async () => {
  await gw?.stop();
  await infra?.stop();
});

const logger = createLogger("test", { level: "error" });
const cleanup = (key: string) => ({ task: "cleanup_storage" as const, jobKey: `outbox-test:${key}`, args: { objectKey: `originals/${key}` } });

async function inRolledBackTransaction(fn: (client: import("pg").PoolClient) => Promise<void>): Promise<void> {
  const client = await gw.db.connect();
  try {
    await client.query("begin");
    await fn(client);
  } finally {
    await client.query("rollback");
    client.release();
  }
}

const rowsOf = async (client: import("pg").PoolClient, keys: string[]) =>
  (
    await client.query<{ job_key: string; sent: boolean; dead: boolean; retry_later: boolean }>(
      `select job_key, sent_at is not null as sent, dead_at is not null as dead, next_attempt_at > now() as retry_later
       from mcsv_user.outbox where job_key = any($1) order by job_key`,
      [keys.map((k) => `outbox-test:${k}`)],
    )
  ).rows;

test("rows handed over in the same turn go in one call, and are all marked sent", async () => {
  await inRolledBackTransaction(async (client) => {
    const calls: ClaimedJob[][] = [];
    const relay = new OutboxRelay(client, async (jobs) => void calls.push(jobs), logger, { pollMs: 60_000 });
    const ids = await Promise.all(["a", "b", "c"].map((k) => addToOutbox(client, "acme", [cleanup(k)])));
    // Three commits' worth of rows, handed over without waiting for each other.
    await Promise.all(ids.map((rowIds) => relay.deliverNow(rowIds)));
    expect(calls.map((batch) => batch.map((j) => j.jobKey).sort())).toEqual([["outbox-test:a", "outbox-test:b", "outbox-test:c"]]);
    expect((await rowsOf(client, ["a", "b", "c"])).map((r) => r.sent)).toEqual([true, true, true]);
    // A later turn is another call.
    await relay.deliverNow(await addToOutbox(client, "acme", [cleanup("d")]));
    expect(calls).toHaveLength(2);
  });
});

test("a row the job service refuses is set aside, and the rest of its batch is delivered", async () => {
  await inRolledBackTransaction(async (client) => {
    const calls: string[][] = [];
    const relay = new OutboxRelay(
      client,
      async (jobs) => {
        calls.push(jobs.map((j) => j.jobKey));
        if (jobs.some((j) => j.jobKey.endsWith(":bad"))) throw new ConnectError("jobs[1].args: bad", Code.InvalidArgument);
      },
      logger,
      { pollMs: 60_000 },
    );
    await relay.deliverNow(await addToOutbox(client, "acme", [cleanup("ok-1"), cleanup("bad"), cleanup("ok-2")]));
    // The batch, then each row on its own.
    expect(calls[0]).toHaveLength(3);
    expect(calls.slice(1).sort()).toEqual([["outbox-test:bad"], ["outbox-test:ok-1"], ["outbox-test:ok-2"]]);
    expect(await rowsOf(client, ["bad", "ok-1", "ok-2"])).toEqual([
      { job_key: "outbox-test:bad", sent: false, dead: true, retry_later: false },
      { job_key: "outbox-test:ok-1", sent: true, dead: false, retry_later: false },
      { job_key: "outbox-test:ok-2", sent: true, dead: false, retry_later: false },
    ]);
  });
});

test("a call the job service does not take leaves every row of the batch to a later retry", async () => {
  await inRolledBackTransaction(async (client) => {
    const relay = new OutboxRelay(
      client,
      async () => {
        throw new ConnectError("restarting", Code.Unavailable);
      },
      logger,
      { pollMs: 60_000 },
    );
    await relay.deliverNow(await addToOutbox(client, "acme", [cleanup("later-1"), cleanup("later-2")]));
    expect(await rowsOf(client, ["later-1", "later-2"])).toEqual([
      { job_key: "outbox-test:later-1", sent: false, dead: false, retry_later: true },
      { job_key: "outbox-test:later-2", sent: false, dead: false, retry_later: true },
    ]);
  });
});
