/**
 * WatchHub on its own, with an injected reader that counts its reads and a change source driven by the test: the
 * watchers of one conversion share one read of its row per change, however many they are, and a tenant holds at most
 * TENANT_MAX_WATCHES watches open. (test/user/watches.test.ts shows the same through the gateway, on Postgres.)
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { ConversionRow } from "../../services/user/records.js";
import { WatchHub, type Watch } from "../../services/user/watch-hub.js";

/** A stand-in for ConversionChanges: the test announces changes itself. */
function fakeChanges() {
  const subscribers = new Map<string, Set<() => void>>();
  return {
    listening: true,
    subscribe(id: string, onChange: () => void) {
      const set = subscribers.get(id) ?? new Set();
      subscribers.set(id, set);
      set.add(onChange);
      return () => set.delete(onChange);
    },
    announce(id: string) {
      for (const onChange of subscribers.get(id) ?? []) onChange();
    },
    subscriptions: (id: string) => subscribers.get(id)?.size ?? 0,
  };
}

/** A reader over a table of rows that counts its calls, by id; `gate` holds reads until released. */
function countingReader() {
  const rows = new Map<string, Partial<ConversionRow>>();
  const reads = new Map<string, number>();
  let gate: Promise<void> | undefined;
  let release = () => undefined as void;
  return {
    rows,
    reads: (id: string) => reads.get(id) ?? 0,
    hold() {
      gate = new Promise<void>((resolve) => (release = resolve));
    },
    release: () => release(),
    async read(id: string): Promise<ConversionRow | undefined> {
      reads.set(id, (reads.get(id) ?? 0) + 1);
      const snapshot = rows.get(id) ? { ...rows.get(id) } : undefined;
      await gate;
      return snapshot as ConversionRow | undefined;
    },
  };
}

const never = new AbortController().signal;

function setup(maxPerTenant = 1_000) {
  const changes = fakeChanges();
  const reader = countingReader();
  const hub = new WatchHub(changes, (id) => reader.read(id), { maxPerTenant });
  return { changes, reader, hub };
}

test("a hundred watchers of one conversion: one read for their first look, then one per change", async () => {
  const { changes, reader, hub } = setup();
  reader.rows.set("c1", { id: "c1", state: "queued" });
  const watches = Array.from({ length: 100 }, () => hub.open("acme", "c1"));
  expect(changes.subscriptions("c1")).toBe(1);

  const first = await Promise.all(watches.map((w) => w.next(never)));
  expect(first.every((n) => n?.row?.state === "queued")).toBe(true);
  expect(reader.reads("c1")).toBe(1);

  for (const [n, state] of [[2, "processing"], [3, "succeeded"]] as const) {
    const waiting = watches.map((w) => w.next(never));
    reader.rows.set("c1", { id: "c1", state });
    changes.announce("c1");
    const seen = await Promise.all(waiting);
    expect(seen.map((s) => s?.row?.state)).toEqual(Array(100).fill(state));
    expect(reader.reads("c1")).toBe(n);
  }
  for (const w of watches) w.close();
  expect(changes.subscriptions("c1")).toBe(0);
});

test("watchers of different conversions do not share reads; a late watcher reuses the current one", async () => {
  const { reader, hub } = setup();
  reader.rows.set("a", { id: "a", state: "queued" });
  reader.rows.set("b", { id: "b", state: "queued" });
  const a = hub.open("acme", "a");
  const b = hub.open("acme", "b");
  await Promise.all([a.next(never), b.next(never)]);
  expect([reader.reads("a"), reader.reads("b")]).toEqual([1, 1]);
  // Nothing changed since: a new watcher of "a" gets the row read already.
  const late = hub.open("acme", "a");
  expect((await late.next(never))?.row?.state).toBe("queued");
  expect(reader.reads("a")).toBe(1);
  for (const w of [a, b, late]) w.close();
});

test("a change during a read is read again (the read in flight may predate it), still once for all", async () => {
  const { changes, reader, hub } = setup();
  reader.rows.set("c", { id: "c", state: "queued" });
  const watches = Array.from({ length: 10 }, () => hub.open("acme", "c"));
  reader.hold();
  const first = watches.map((w) => w.next(never));
  reader.rows.set("c", { id: "c", state: "processing" });
  changes.announce("c");
  reader.release();
  expect((await Promise.all(first)).map((n) => n?.row?.state)).toEqual(Array(10).fill("queued"));
  expect(reader.reads("c")).toBe(1);
  // Each watcher saw the version before the change: the next look reads again, once.
  const second = await Promise.all(watches.map((w) => w.next(never)));
  expect(second.map((n) => n?.row?.state)).toEqual(Array(10).fill("processing"));
  expect(reader.reads("c")).toBe(2);
  for (const w of watches) w.close();
});

test("without the listener a finished read is not reused; a failed read is not shared with later callers", async () => {
  const { changes, reader, hub } = setup();
  reader.rows.set("c", { id: "c", state: "queued" });
  const one = hub.open("acme", "c");
  await one.next(never);
  changes.listening = false;
  const two = hub.open("acme", "c");
  await two.next(never);
  expect(reader.reads("c")).toBe(2);
  changes.listening = true;

  let fail = true;
  const flaky = new WatchHub(changes, async () => {
    if (fail) throw new Error("connection reset");
    return { id: "d", state: "queued" } as ConversionRow;
  }, { maxPerTenant: 10 });
  const w = flaky.open("acme", "d");
  await expect(w.next(never)).rejects.toThrow("connection reset");
  fail = false;
  const again = flaky.open("acme", "d");
  expect((await again.next(never))?.row?.state).toBe("queued");
  for (const x of [one, two, w, again]) x.close();
});

test("next() waits for a change, and returns undefined when its signal aborts or the watch closes", async () => {
  const { reader, hub } = setup();
  reader.rows.set("c", { id: "c", state: "queued" });
  const watch = hub.open("acme", "c");
  await watch.next(never);
  const abort = new AbortController();
  const waiting = watch.next(abort.signal);
  abort.abort();
  expect(await waiting).toBeUndefined();
  const pending = watch.next(never);
  watch.close();
  expect(await pending).toBeUndefined();
  expect(reader.reads("c")).toBe(1);
});

test("a tenant holds at most maxPerTenant watches: the next is resource_exhausted with retry-after; others are unaffected", async () => {
  const { hub } = setup(3);
  const held: Watch[] = [hub.open("acme", "x"), hub.open("acme", "y"), hub.open("acme", "x")];
  expect(hub.openBy("acme")).toBe(3);
  let refused: ConnectError | undefined;
  try {
    hub.open("acme", "z");
  } catch (error) {
    refused = ConnectError.from(error);
  }
  expect(refused?.code).toBe(Code.ResourceExhausted);
  expect(refused?.rawMessage).toMatch(/already holds 3 WatchConversion streams open.*TENANT_MAX_WATCHES.*retry in 10 s/);
  expect(refused?.metadata.get("retry-after")).toBe("10");
  // Another tenant has its own allowance.
  const other = hub.open("globex", "z");
  // Closing one (twice changes nothing) makes room for one.
  held[0]!.close();
  held[0]!.close();
  expect(hub.openBy("acme")).toBe(2);
  held.push(hub.open("acme", "z"));
  expect(() => hub.open("acme", "z")).toThrow(ConnectError);
  for (const w of [...held, other]) w.close();
  expect([hub.openBy("acme"), hub.openBy("globex")]).toEqual([0, 0]);
});
