/**
 * ConvertDocument at the gateway, on real Postgres and S3 with a stub job service: the originals stored a page each,
 * the typed convert_image job of a document, progress page by page through WatchConversion, the text layer in the
 * result, uploads as pages, the originals deleted after success, and the refusals.
 */
import { Code } from "@connectrpc/connect";
import { ConversionState, ConvertImageTaskSchema, PageSize } from "@mcsv/sdk";
import { fromJson } from "@bufbuild/protobuf";
import { objectKeys } from "../../services/shared/storage.js";
import { jobKeys } from "../../services/shared/tasks.js";
import { badFields, eventually, failure, image, startGateway, startInfra, type Gateway, type Infra } from "./support.js";

let infra: Infra;
let gw: Gateway;

beforeAll(async () => {
  infra = await startInfra();
  gw = await startGateway(infra, { DOCUMENT_MAX_PAGES: "3", GATEWAY_MAX_IMAGE_BYTES: String(64 * 1024) });
});

afterAll(async () => {
  await gw?.stop();
  await infra?.stop();
});

afterEach(() => expect(infra.jobs.invalid).toEqual([]));

test("a document: a page per original, one typed job, progress page by page, the text layer, originals deleted", async () => {
  const [png, jpeg] = [await image("png", 20), await image("jpeg", 30)];
  // The second page is an upload, the others inline.
  const upload = await gw.client.createUploadUrl({ userEmail: "doc@example.com", filename: "b.jpg", contentType: "image/jpeg", size: BigInt(jpeg.byteLength) });
  const put = await fetch(upload.uploadUrl, { method: "PUT", body: jpeg, headers: upload.headers });
  expect(put.ok).toBe(true);
  const { conversion } = await gw.client.convertDocument({
    userEmail: "doc@example.com",
    filename: "scans.pdf",
    images: [{ source: { case: "imageData", value: png } }, { source: { case: "uploadId", value: upload.uploadId } }, { source: { case: "imageData", value: png } }],
    options: { layout: { size: PageSize.A4 }, ocrLanguages: ["eng"] },
  });
  const id = conversion!.id;
  expect([conversion!.pageCount, conversion!.pagesDone, conversion!.inputFormat, conversion!.filename]).toEqual([3, 0, "png+jpeg", "scans.pdf"]);

  // One convert_image job naming each page's original, in order; the originals are stored.
  const [job] = infra.jobs.jobs("convert_image", jobKeys.convertImage(id));
  const task = fromJson(ConvertImageTaskSchema, job!.args);
  expect(task.request).toBeUndefined();
  expect(task.document?.pages.map((p) => p.inputFormat)).toEqual(["png", "jpeg", "png"]);
  expect(task.document?.options?.layout?.size).toBe(PageSize.A4);
  const keys = [0, 1, 2].map((i) => objectKeys.page(id, i));
  expect(task.pageObjectKeys).toEqual(keys);
  for (const key of keys) expect(await gw.store.head(key)).toBeDefined();

  // Watching: a snapshot per page done, in order, then the result.
  const seen: Array<[ConversionState, number]> = [];
  const watching = (async () => {
    for await (const { conversion: c } of gw.client.watchConversion({ conversionId: id })) seen.push([c!.state, c!.pagesDone]);
  })();
  await eventually(() => (seen.length === 1 ? true : undefined), "the first snapshot");
  for (const pagesDone of [1, 2, 2, 3]) {
    await gw.client.notifyImageConverted({ conversionId: id, state: ConversionState.PROCESSING, pagesDone });
    await eventually(() => (seen.at(-1)![1] === pagesDone ? true : undefined), `page ${pagesDone} of 3`);
  }
  const done = await gw.client.notifyImageConverted({
    conversionId: id,
    state: ConversionState.SUCCEEDED,
    outputSize: 99n,
    width: 20,
    height: 20,
    pagesDone: 3,
    text: { wordCount: 7, languages: ["eng"] },
  });
  await watching;
  // A repeat of a page already reported is no change: no snapshot for it.
  expect(seen).toEqual([
    [ConversionState.QUEUED, 0],
    [ConversionState.PROCESSING, 1],
    [ConversionState.PROCESSING, 2],
    [ConversionState.PROCESSING, 3],
    [ConversionState.SUCCEEDED, 3],
  ]);
  expect(done.conversion?.text).toMatchObject({ wordCount: 7, languages: ["eng"] });
  expect((await gw.client.getConversion({ conversionId: id })).conversion?.text?.wordCount).toBe(7);
  await eventually(async () => ((await Promise.all(keys.map((key) => gw.store.head(key)))).every((head) => head === undefined) ? true : undefined), "the originals deleted");
});

test("refusals: no images, too many, an upload twice, inline bytes over the limit, a bad page", async () => {
  const png = await image("png", 8);
  const inline = { source: { case: "imageData" as const, value: png } };
  expect(badFields(await failure(gw.client.convertDocument({ userEmail: "r@example.com", images: [] })))).toEqual(["images"]);
  expect(badFields(await failure(gw.client.convertDocument({ userEmail: "r@example.com", images: [inline, inline, inline, inline] })))).toEqual(["images"]);
  const upload = crypto.randomUUID();
  const twice = { source: { case: "uploadId" as const, value: upload } };
  expect(badFields(await failure(gw.client.convertDocument({ userEmail: "r@example.com", images: [twice, twice] })))).toEqual(["images"]);
  const big = { source: { case: "imageData" as const, value: new Uint8Array(40 * 1024).fill(1) } };
  expect((await failure(gw.client.convertDocument({ userEmail: "r@example.com", images: [big, big] }))).code).toBe(Code.ResourceExhausted);
  // One page not an image: named by its index, and no conversion recorded.
  const error = await failure(gw.client.convertDocument({ userEmail: "r@example.com", images: [inline, { source: { case: "imageData", value: new TextEncoder().encode("not an image") } }] }));
  expect(error.code).toBe(Code.InvalidArgument);
  expect(badFields(error)).toEqual(["images[1].imageData"]);
  expect((await gw.client.listConversions({ userEmail: "r@example.com" })).conversions).toEqual([]);
});
