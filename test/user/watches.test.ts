/**
 * WatchConversion under load and abuse (issue #10, point 7), through the gateway on real Postgres: the watchers of a
 * conversion cost one read of its row per change however many they are, a tenant holds at most TENANT_MAX_WATCHES
 * streams open in a process (resource_exhausted with retry-after beyond), and no stream outlives WATCH_MAX_SECONDS
 * (deadline_exceeded: watch again).
 */
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { ConversionState, UserService, type Conversion } from "@mcsv/sdk";
import { bearerInterceptor } from "../../services/shared/auth.js";
import { TEST_API_KEY, TEST_TENANT } from "../support/credentials.js";
import { eventually, image, metricValue, startGateway, startInfra, type Gateway, type Infra } from "./support.js";

const OTHER_KEY = "globex-api-key-0123456789abcdef";
const TWO_TENANTS = { MCSV_API_KEYS: `${TEST_TENANT}=${TEST_API_KEY},globex=${OTHER_KEY}` };

let infra: Infra;
let png: Uint8Array;

beforeAll(async () => {
  infra = await startInfra();
  png = await image("png");
});

afterAll(async () => {
  await infra?.stop();
});

async function queue(gw: Gateway, client: Client<typeof UserService> = gw.client): Promise<Conversion> {
  const { conversion } = await client.convertImage({ userEmail: "watch@example.com", source: { case: "imageData", value: png } });
  return conversion!;
}

/** A watch running in the background: the states it saw, and how it ended. */
function follow(client: Client<typeof UserService>, conversionId: string, signal?: AbortSignal) {
  const states: ConversionState[] = [];
  const ended = (async () => {
    for await (const { conversion } of client.watchConversion({ conversionId }, { signal })) states.push(conversion!.state);
  })().then(
    () => undefined,
    (error: unknown) => ConnectError.from(error),
  );
  return { states, ended };
}

const watchReads = (gw: Gateway) => metricValue(gw.service.url, "mcsv_conversion_watch_reads_total");

function clientOf(gw: Gateway, key: string): Client<typeof UserService> {
  return createClient(UserService, createConnectTransport({ baseUrl: gw.service.url, httpVersion: "1.1", interceptors: [bearerInterceptor(key)] }));
}

test("fifty watchers of one conversion: one read of its row per change", async () => {
  const gw = await startGateway(infra);
  try {
    const { id } = await queue(gw);
    const watchers = Array.from({ length: 50 }, () => follow(gw.client, id));
    await eventually(() => (watchers.every((w) => w.states.length === 1) ? true : undefined), "every watcher to see QUEUED");

    for (const state of [ConversionState.PROCESSING, ConversionState.FAILED]) {
      const before = await watchReads(gw);
      await gw.client.notifyImageConverted({ conversionId: id, state, ...(state === ConversionState.FAILED ? { error: "corrupt" } : {}) });
      await eventually(() => (watchers.every((w) => w.states.at(-1) === state) ? true : undefined), `every watcher to see ${ConversionState[state]}`);
      expect(await watchReads(gw)).toBe(before + 1);
    }
    for (const w of watchers) {
      expect(await w.ended).toBeUndefined();
      expect(w.states).toEqual([ConversionState.QUEUED, ConversionState.PROCESSING, ConversionState.FAILED]);
    }
  } finally {
    await gw.stop();
  }
});

test("a tenant holds at most TENANT_MAX_WATCHES streams: the next is resource_exhausted with retry-after; other tenants watch on", async () => {
  const gw = await startGateway(infra, { ...TWO_TENANTS, TENANT_MAX_WATCHES: "2" });
  const stop = new AbortController();
  try {
    const acme = gw.client;
    const globex = clientOf(gw, OTHER_KEY);
    const [a, b, c] = [await queue(gw), await queue(gw), await queue(gw)];
    const cancelFirst = new AbortController();
    const held = [follow(acme, a.id, AbortSignal.any([cancelFirst.signal, stop.signal])), follow(acme, b.id, stop.signal)];
    await eventually(() => (held.every((w) => w.states.length === 1) ? true : undefined), "two open watches");

    const refused = await follow(acme, c.id).ended;
    expect(refused?.code).toBe(Code.ResourceExhausted);
    expect(refused?.rawMessage).toBe("this tenant already holds 2 WatchConversion streams open, the most it may (TENANT_MAX_WATCHES); close one or wait; retry in 10 s");
    expect(refused?.metadata.get("retry-after")).toBe("10");

    // Another tenant has its own allowance, and does not see acme's conversion.
    const theirs = await queue(gw, globex);
    const other = follow(globex, theirs.id, stop.signal);
    await eventually(() => (other.states.length === 1 ? true : undefined), "globex's watch");
    expect((await follow(globex, c.id).ended)?.code).toBe(Code.NotFound);

    // A closed stream makes room again.
    cancelFirst.abort();
    expect((await held[0]!.ended)?.code).toBe(Code.Canceled);
    await eventually(async () => ((await metricValue(gw.service.url, "mcsv_conversion_watchers")) === 2 ? true : undefined), "the server to close it");
    const again = follow(acme, c.id, stop.signal);
    await eventually(() => (again.states.length === 1 ? true : undefined), "a watch once one was closed");
  } finally {
    stop.abort();
    await gw.stop();
  }
});

test("a watch ends after WATCH_MAX_SECONDS with deadline_exceeded, telling the client to watch again", async () => {
  const gw = await startGateway(infra, { WATCH_MAX_SECONDS: "1" });
  try {
    const { id } = await queue(gw);
    const started = Date.now();
    const watch = follow(gw.client, id);
    const error = await watch.ended;
    const elapsed = Date.now() - started;
    expect(watch.states).toEqual([ConversionState.QUEUED]);
    expect(error?.code).toBe(Code.DeadlineExceeded);
    expect(error?.rawMessage).toBe("the watch reached its maximum duration of 1 s; watch again");
    expect(elapsed).toBeGreaterThanOrEqual(900);
    expect(elapsed).toBeLessThan(5_000);
    await eventually(async () => ((await metricValue(gw.service.url, "mcsv_conversion_watchers")) === 0 ? true : undefined), "the watch to be released");
    // A conversion that ends in time ends its watch normally.
    const quick = await queue(gw);
    const next = follow(gw.client, quick.id);
    await eventually(() => (next.states.length === 1 ? true : undefined), "the second watch");
    await gw.client.notifyImageConverted({ conversionId: quick.id, state: ConversionState.FAILED, error: "x" });
    expect(await next.ended).toBeUndefined();
    expect(next.states).toEqual([ConversionState.QUEUED, ConversionState.FAILED]);
  } finally {
    await gw.stop();
  }
});
