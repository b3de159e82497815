/**
 * IMAGE_CONCURRENCY bounds the conversions inside the pipeline: an instrumented hook counts how many are between the
 * start of "fetch" and the end of "upload", and the first conversion is held there while the others queue up.
 * IMAGE_MAX_WAITING bounds the queue: one more is refused at once as unavailable, with retry-after.
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { ImageServiceConvertImageRequestSchema, Quality } from "@mcsv/sdk";
import { registry } from "../../services/shared/metrics.js";
import { ConcurrencyLimiter } from "../../services/image/limiter.js";
import { encodePng, gradientPixels, startImageHarness, type ImageHarness } from "./support.js";

let harness: ImageHarness;
let inside = 0;
let mostInside = 0;
let hold: Promise<void> | undefined;
const entered: string[] = [];

beforeAll(async () => {
  harness = await startImageHarness(
    { IMAGE_CONCURRENCY: "1", IMAGE_MAX_WAITING: "3" },
    {
      hooks: {
        async stageStarted(stage, conversionId) {
          if (stage !== "fetch") return;
          inside++;
          mostInside = Math.max(mostInside, inside);
          entered.push(conversionId);
          await hold;
        },
        stageFinished(stage) {
          if (stage === "upload") inside--;
        },
      },
    },
  );
});

afterAll(async () => {
  await harness?.stop();
});

async function gauge(name: string): Promise<number> {
  return (await registry.getSingleMetric(name)!.get()).values[0]?.value ?? 0;
}

/** Polls (bounded) until `condition` holds; a state change, not a duration, is what the test waits for. */
async function until(condition: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (await condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error("condition never held");
}

test("with IMAGE_CONCURRENCY=1, conversions never overlap inside the pipeline and run in arrival order", async () => {
  const imageUrl = await harness.upload(await encodePng(gradientPixels(32, 24, 3), 32, 24, 3));
  let release!: () => void;
  hold = new Promise((resolve) => (release = resolve));

  const ids = [crypto.randomUUID(), crypto.randomUUID(), crypto.randomUUID()];
  const convert = (conversionId: string) =>
    harness.client.convertImage(create(ImageServiceConvertImageRequestSchema, { conversionId, imageUrl, inputFormat: "png", options: { quality: Quality.LOW } }));
  const first = convert(ids[0]!);
  await until(async () => entered.length === 1);
  const rest = [convert(ids[1]!), convert(ids[2]!)];
  await until(async () => (await gauge("mcsv_image_conversions_waiting")) === 2);
  expect(await gauge("mcsv_image_conversions_active")).toBe(1);
  expect(entered).toEqual([ids[0]]);

  // A queued request whose deadline passes gives up without ever entering the pipeline.
  const impatient = crypto.randomUUID();
  const gaveUp = await harness.client
    .convertImage(create(ImageServiceConvertImageRequestSchema, { conversionId: impatient, imageUrl, inputFormat: "png" }), { timeoutMs: 200 })
    .then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
  expect(gaveUp?.code).toBe(Code.DeadlineExceeded);

  hold = undefined;
  release();
  const responses = await Promise.all([first, ...rest]);
  expect(responses.map((r) => r.pdfKey)).toEqual(ids.map((id) => `pdfs/${id}.pdf`));
  expect(mostInside).toBe(1);
  expect(entered).toEqual(ids);
  expect(entered).not.toContain(impatient);
  expect(await gauge("mcsv_image_conversions_waiting")).toBe(0);
  expect(await gauge("mcsv_image_conversions_active")).toBe(0);
  expect(await harness.ready()).toBe(200);
});

test("with every slot busy and IMAGE_MAX_WAITING waiting, one more is refused at once: unavailable, retry-after 1", async () => {
  const imageUrl = await harness.upload(await encodePng(gradientPixels(16, 12, 3), 16, 12, 3));
  let release!: () => void;
  hold = new Promise((resolve) => (release = resolve));
  entered.length = 0;
  const convert = (conversionId: string) =>
    harness.client.convertImage(create(ImageServiceConvertImageRequestSchema, { conversionId, imageUrl, inputFormat: "png", options: { quality: Quality.LOW } }));
  const held = [convert(crypto.randomUUID())];
  await until(async () => entered.length === 1);
  held.push(convert(crypto.randomUUID()), convert(crypto.randomUUID()), convert(crypto.randomUUID()));
  await until(async () => (await gauge("mcsv_image_conversions_waiting")) === 3);

  const refused = await convert(crypto.randomUUID()).then(
    () => undefined,
    (e: unknown) => ConnectError.from(e),
  );
  expect(refused?.code).toBe(Code.Unavailable);
  expect(refused?.metadata.get("retry-after")).toBe("1");
  expect(refused?.rawMessage).toMatch(/busy: all 1 slots are busy and 3 tasks wait; retry in 1 s/);

  hold = undefined;
  release();
  expect((await Promise.all(held)).map((r) => r.pdfKey.startsWith("pdfs/"))).toEqual([true, true, true, true]);
  // Room again: the next one is taken.
  expect((await convert(crypto.randomUUID())).pdfKey).toMatch(/^pdfs\//);
});

describe("ConcurrencyLimiter", () => {
  test("hands slots out in arrival order and releases them when a task fails", async () => {
    const limiter = new ConcurrencyLimiter(2);
    const order: number[] = [];
    const gates = [0, 1, 2, 3].map(() => {
      let open!: () => void;
      const promise = new Promise<void>((resolve) => (open = resolve));
      return { promise, open };
    });
    const runs = [0, 1, 2, 3].map((i) =>
      limiter.run(async () => {
        order.push(i);
        await gates[i]!.promise;
        if (i === 0) throw new Error("boom");
        return i;
      }),
    );
    await Promise.resolve();
    expect([limiter.active, limiter.waiting]).toEqual([2, 2]);
    gates[0]!.open();
    await expect(runs[0]).rejects.toThrow("boom");
    expect(order).toEqual([0, 1, 2]);
    gates.forEach((g) => g.open());
    await expect(Promise.all(runs.slice(1))).resolves.toEqual([1, 2, 3]);
    expect(order).toEqual([0, 1, 2, 3]);
    expect([limiter.active, limiter.waiting]).toEqual([0, 0]);
  });

  test("a waiter that is aborted leaves the queue with the abort reason", async () => {
    const limiter = new ConcurrencyLimiter(1);
    let open!: () => void;
    const busy = limiter.run(() => new Promise<void>((resolve) => (open = resolve)));
    const controller = new AbortController();
    const waiting = limiter.run(async () => "never", controller.signal);
    expect(limiter.waiting).toBe(1);
    controller.abort(new Error("deadline"));
    await expect(waiting).rejects.toThrow("deadline");
    expect(limiter.waiting).toBe(0);
    open();
    await busy;
    expect(limiter.active).toBe(0);
  });
});
