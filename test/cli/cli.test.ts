/**
 * The mcsv command line as people run it: a subprocess (`node cli/bin/mcsv.mjs`, what `npx mcsv` runs) against the
 * five real services, with MCSV_URL and MCSV_API_KEY pointing at them. The PDFs it saves are checked with qpdf and
 * poppler; what it says it did is checked against the gateway's own state.
 */
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { ConversionState, JobService, PageSize, UserService } from "@mcsv/sdk";
import pg from "pg";
import sharp from "sharp";
import { freePort } from "../../scripts/lib/embedded.js";
import { ROOT } from "../../scripts/lib/system.js";
import { listImages } from "../image/support.js";
import { TEST_API_KEY, TEST_INTERNAL_TOKEN } from "../support/credentials.js";
import { extractImages, photoLikePng, qpdfCheck, rawPixels } from "../support/pdf.js";
import { pageImages, pdfInfo, pdfText } from "../support/pdf.js";
import { run, type RunResult } from "../support/run.js";
import type { DocumentOutcome } from "../../cli/convert/convert-document.js";
import type { FileOutcome } from "../../cli/convert/convert-file.js";
import { startTestSystem, type TestSystem } from "../support/system.js";

const CLI = join(ROOT, "cli", "bin", "mcsv.mjs");
const EMAIL = "cli@example.com";
/** The documents' address: their conversions apart from the single images'. */
const DOCUMENT_EMAIL = "documents.cli@example.com";
/** A4 in points (595.28 × 841.89), upright and turned, to pdfinfo's precision. */
const A4 = [expect.closeTo(595.28, 1), expect.closeTo(841.89, 1)];
const A4_LANDSCAPE = [...A4].reverse();

let system: TestSystem;
let work: string;
let gradient: Buffer;

/** Runs mcsv in the scratch directory with only the environment given (no credentials file is found there). */
function mcsv(args: string[], env: Record<string, string> = {}): Promise<RunResult> {
  return run(process.execPath, [CLI, ...args], {
    cwd: work,
    env: { PATH: process.env["PATH"], HOME: work, MCSV_URL: system.urls.user, MCSV_API_KEY: TEST_API_KEY, ...env },
  });
}

const outDir = (name: string) => {
  const dir = join(work, name);
  mkdirSync(dir, { recursive: true });
  return dir;
};

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "mcsv-cli-"));
  system = await startTestSystem();
  gradient = await photoLikePng(96, 64);
  writeFileSync(join(work, "gradient.png"), gradient);
  writeFileSync(join(work, "photo.jpg"), await sharp({ create: { width: 80, height: 60, channels: 3, background: "#ef4444" } }).jpeg().toBuffer());
  writeFileSync(join(work, "notes.png"), "not an image at all\n");
  // A line of printed text in a real font, drawn by ImageMagick: what OCR can read back.
  const drawn = await promisify(execFile)(
    "convert",
    ["-size", "900x300", "xc:white", "-font", "DejaVu-Sans", "-pointsize", "40", "-fill", "black", "-annotate", "+40+160", "Invoice number 4711", "png:-"],
    { encoding: "buffer" },
  );
  writeFileSync(join(work, "invoice.png"), drawn.stdout);
}, 120_000);

afterAll(async () => {
  await system?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

test("convert: the good files become PDFs, the bad one is named with its reason, and the exit status is 1", async () => {
  const out = outDir("batch");
  const result = await mcsv(["convert", "--email", EMAIL, "--quality", "lossless", "--out", out, "--concurrency", "2", "gradient.png", "notes.png", "photo.jpg"]);

  expect(result.code).toBe(1);
  expect(result.stderr).toMatch(/^mcsv: notes\.png: invalid_argument: imageData: is not a recognised image format/m);
  expect(result.stderr).toContain("1 of 3 files failed");
  expect(result.stderr).not.toMatch(/gradient\.png|photo\.jpg/);
  // Not a terminal: one plain line per change of state.
  expect(result.stdout).toMatch(/^gradient\.png: succeeded$/m);
  expect(result.stdout).toContain(`gradient.png: saved ${join(out, "gradient.pdf")}`);
  expect(result.stdout).toContain(`photo.jpg: saved ${join(out, "photo.pdf")}`);
  expect(existsSync(join(out, "notes.pdf"))).toBe(false);

  const gradientPdf = readFileSync(join(out, "gradient.pdf"));
  await qpdfCheck(gradientPdf);
  expect(await listImages(gradientPdf)).toEqual([expect.objectContaining({ width: 96, height: 64, color: "rgb", bpc: 8 })]);
  // --quality lossless reached the service: the embedded pixels are the original's.
  const [embedded] = await extractImages(gradientPdf);
  expect(embedded!.data.equals((await rawPixels(gradient)).data)).toBe(true);

  const photoPdf = readFileSync(join(out, "photo.pdf"));
  await qpdfCheck(photoPdf);
  expect(await listImages(photoPdf)).toEqual([expect.objectContaining({ width: 80, height: 60 })]);
});

let convertedId: string;

test("convert --json: each file's conversion id, final state, PDF path or error, and trace id; no PDF is overwritten", async () => {
  const out = outDir("json");
  writeFileSync(join(out, "gradient.pdf"), "an older file of the same name");
  const result = await mcsv(["convert", "--json", "--email", EMAIL, "--out", out, "--max-width", "48", "gradient.png", "notes.png", "missing.png"]);

  expect(result.code).toBe(1);
  const outcomes = JSON.parse(result.stdout) as FileOutcome[];
  expect(outcomes.map((o) => o.file)).toEqual(["gradient.png", "notes.png", "missing.png"]);
  const [good, bad, missing] = outcomes;

  expect(good).toMatchObject({ ok: true, source: "inline", state: "succeeded", error: null, pdf: join(out, "gradient-1.pdf") });
  expect(good!.conversionId).toMatch(/^[0-9a-f-]{36}$/);
  expect(good!.traceId).toMatch(/^[0-9a-f]{32}$/);
  expect(readFileSync(join(out, "gradient.pdf"), "utf8")).toBe("an older file of the same name");
  const pdf = readFileSync(good!.pdf!);
  await qpdfCheck(pdf);
  expect(await listImages(pdf)).toEqual([expect.objectContaining({ width: 48, height: 32 })]);
  // The gateway knows the conversion by that id, with the options the flags gave.
  const { conversion } = await system.client(UserService, "user").getConversion({ conversionId: good!.conversionId! });
  expect(conversion).toMatchObject({ state: ConversionState.SUCCEEDED, filename: "gradient.png", userEmail: EMAIL, width: 48, height: 32 });
  expect(conversion?.options?.maxWidth).toBe(48);
  convertedId = good!.conversionId!;

  expect(bad).toMatchObject({ ok: false, conversionId: null, state: null, pdf: null });
  expect(bad!.error).toMatch(/^invalid_argument: imageData: is not a recognised image format/);
  // A refused call has a trace too.
  expect(bad!.traceId).toMatch(/^[0-9a-f]{32}$/);
  expect(missing).toMatchObject({ ok: false, source: null, error: "no such file", traceId: null });
  expect(result.stderr).toMatch(/^mcsv: missing\.png: no such file$/m);
});

test("a file above --max-inline-bytes goes through CreateUploadUrl and a presigned PUT", async () => {
  const big = await photoLikePng(400, 300);
  writeFileSync(join(work, "big.png"), big);
  const out = outDir("upload");
  const result = await mcsv(["convert", "--json", "--verbose", "--email", EMAIL, "--out", out, "--max-inline-bytes", String(Math.floor(big.byteLength / 2)), "big.png"]);

  expect(result.code).toBe(0);
  const [outcome] = JSON.parse(result.stdout) as FileOutcome[];
  expect(outcome).toMatchObject({ ok: true, source: "upload", state: "succeeded", pdf: join(out, "big.pdf") });
  // --verbose: one line per RPC with its trace id, and the PUT (its signature left out).
  expect(result.stderr).toMatch(/^mcsv: rpc UserService\/CreateUploadUrl ok \d+ ms trace=[0-9a-f]{32}$/m);
  expect(result.stderr).toMatch(/^mcsv: PUT http:\/\/[^?\s]+\/uploads\/[0-9a-f-]{36} 200 \d+ ms$/m);
  expect(result.stderr).toContain(`rpc UserService/ConvertImage ok`);
  expect(result.stderr).toContain(`trace=${outcome!.traceId}`);
  expect(result.stderr).not.toContain("X-Amz-Signature");

  // The gateway's side: the conversion came from an upload of exactly this file.
  const db = new pg.Client({ connectionString: system.env["DATABASE_URL"] });
  await db.connect();
  try {
    const { rows } = await db.query<{ size: string; filename: string }>("select size, filename from mcsv_user.uploads where conversion_id = $1", [outcome!.conversionId]);
    expect(rows).toEqual([{ size: String(big.byteLength), filename: "big.png" }]);
  } finally {
    await db.end();
  }
  const pdf = readFileSync(outcome!.pdf!);
  await qpdfCheck(pdf);
  expect(await listImages(pdf)).toEqual([expect.objectContaining({ width: 400, height: 300 })]);
});

describe("convert --one-pdf", () => {
  let documentId: string;

  test("three images, in the order given, become one portrait A4 PDF with its title and searchable text, followed page by page", async () => {
    const result = await mcsv([
      "convert", "--email", DOCUMENT_EMAIL, "--one-pdf", join("document", "scans.pdf"),
      "--page-size", "a4", "--orientation", "portrait", "--title", "Scans of May", "--ocr", "eng",
      "photo.jpg", "invoice.png", "gradient.png",
    ]);

    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    const label = join("document", "scans.pdf");
    const lines = result.stdout.trim().split("\n");
    expect(lines.every((line) => line.startsWith(`${label}: `))).toBe(true);
    // Not a terminal: a plain line per step. OCR runs after the last page, so "page 3 of 3" is there to be seen.
    const pagesDone = lines.flatMap((line) => /: page (\d) of 3$/.exec(line)?.[1] ?? []).map(Number);
    expect(pagesDone).toContain(3);
    expect([...pagesDone].sort()).toEqual(pagesDone);
    expect(lines.at(-2)).toMatch(new RegExp(`: succeeded, 3 pages, \\d+ words recognised \\(eng\\)$`));
    expect(lines.at(-1)).toBe(`${label}: saved ${label}`);

    const pdf = readFileSync(join(work, label));
    await qpdfCheck(pdf);
    expect(await pdfInfo(pdf)).toMatchObject({ pages: 3, pageSizes: [A4, A4, A4], title: "Scans of May" });
    // The order given on the command line, not the files' sorted order.
    expect((await pageImages(pdf)).map(({ page, width, height }) => [page, width, height])).toEqual([
      [1, 80, 60],
      [2, 900, 300],
      [3, 96, 64],
    ]);
    // The words in order (pdftotext may break the OCR layer's line between them).
    expect(await pdfText(pdf)).toMatch(/Invoice\s+number\s+4711/);

    const { conversions } = await system.client(UserService, "user").listConversions({ userEmail: DOCUMENT_EMAIL });
    expect(conversions).toHaveLength(1);
    expect(conversions[0]).toMatchObject({ filename: "scans.pdf", pageCount: 3, text: { languages: ["eng"] } });
    documentId = conversions[0]!.id;
  }, 120_000);

  test("--json: an image past the inline budget is uploaded, the PDF beside an existing one, with its id, pages and trace", async () => {
    // The JPEG fits the budget, the PNG does not: the smallest go inline.
    const budget = statSync(join(work, "photo.jpg")).size + 10;
    expect(statSync(join(work, "gradient.png")).size).toBeGreaterThan(budget);
    const result = await mcsv([
      "convert", "--json", "--verbose", "--email", DOCUMENT_EMAIL, "--one-pdf", join("document", "scans.pdf"), "--max-inline-bytes", String(budget),
      "--page-size", "210x297mm", "--margin", "10mm", "gradient.png", "photo.jpg",
    ]);

    expect(result.code).toBe(0);
    const outcome = JSON.parse(result.stdout) as DocumentOutcome;
    expect(outcome).toMatchObject({
      file: join("document", "scans.pdf"),
      ok: true,
      state: "succeeded",
      pdf: join("document", "scans-1.pdf"),
      pageCount: 2,
      wordCount: null,
      error: null,
      images: [
        { file: "gradient.png", source: "upload", error: null },
        { file: "photo.jpg", source: "inline", error: null },
      ],
    });
    expect(outcome.conversionId).toMatch(/^[0-9a-f-]{36}$/);
    expect(outcome.traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(result.stderr).toMatch(/^mcsv: rpc UserService\/CreateUploadUrl ok /m);
    expect(result.stderr).toContain(`rpc UserService/ConvertDocument ok`);
    expect(result.stderr).toContain(`trace=${outcome.traceId}`);

    const { conversion } = await system.client(UserService, "user").getConversion({ conversionId: outcome.conversionId! });
    const mm = 72 / 25.4;
    expect(conversion?.options?.layout).toMatchObject({ size: PageSize.CUSTOM, customWidth: expect.closeTo(210 * mm, 6), customHeight: expect.closeTo(297 * mm, 6), margin: expect.closeTo(10 * mm, 6) });
    const pdf = readFileSync(join(work, outcome.pdf!));
    // Orientation auto: both images are wider than tall.
    expect(await pdfInfo(pdf)).toMatchObject({ pages: 2, pageSizes: [A4_LANDSCAPE, A4_LANDSCAPE] });
    expect((await pageImages(pdf)).map((image) => image.width)).toEqual([96, 80]);
  }, 60_000);

  test("an image that cannot be sent stops the document before anything is converted", async () => {
    const result = await mcsv(["convert", "--email", DOCUMENT_EMAIL, "--one-pdf", "nothing.pdf", "gradient.png", "missing.png"]);
    expect(result.code).toBe(1);
    expect(result.stderr).toBe("mcsv: missing.png: no such file\nmcsv: nothing.pdf: 1 of 2 images cannot be sent; nothing was converted\n");
    expect(existsSync(join(work, "nothing.pdf"))).toBe(false);
    const { conversions } = await system.client(UserService, "user").listConversions({ userEmail: DOCUMENT_EMAIL });
    expect(conversions.filter((c) => c.filename === "nothing.pdf")).toEqual([]);
  });

  test("a bad value for a document flag is one line (and the usage hint), exit status 2, and sends nothing", async () => {
    for (const [flag, value, reason] of [
      ["--page-size", "A5", "--page-size takes image, a4, letter or WIDTHxHEIGHT in points, mm or in (595x842, 210x297mm, 8.5x11in)"],
      ["--ocr", "eng+English", '--ocr takes tesseract languages joined by + or , (eng, eng+deu), not "english"'],
    ]) {
      const result = await mcsv(["convert", "--email", DOCUMENT_EMAIL, "--one-pdf", "bad.pdf", flag!, value!, "gradient.png"]);
      expect(result.code).toBe(2);
      expect(result.stdout).toBe("");
      expect(result.stderr).toBe(`error: option '${flag} <${flag === "--ocr" ? "languages" : "size"}>' argument '${value}' is invalid. ${reason}\n(add --help for usage)\n`);
    }
    expect(existsSync(join(work, "bad.pdf"))).toBe(false);
  });

  test("conversions get, list and watch show a document's pages and its text layer", async () => {
    expect(documentId).toBeDefined();
    const get = await mcsv(["conversions", "get", documentId]);
    expect(get.code).toBe(0);
    expect(get.stdout).toMatch(/^pages:\s+3 pages$/m);
    expect(get.stdout).toMatch(/^text:\s+\d+ words recognised \(eng\)$/m);
    expect(get.stdout).toMatch(/^options:\s+quality \w+, engine \w+, a4, ocr eng$/m);
    expect(get.stdout).toMatch(/^title:\s+Scans of May$/m);

    const list = await mcsv(["conversions", "list", "--email", DOCUMENT_EMAIL]);
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(new RegExp(`^${documentId}\\s+succeeded\\s+scans\\.pdf\\s+3\\s+\\d+\\s+\\S+$`, "m"));

    // A finished conversion: one line, its end.
    const watch = await mcsv(["conversions", "watch", documentId]);
    expect(watch.code).toBe(0);
    expect(watch.stdout).toMatch(/^\S+ {2}succeeded: 3 pages, \d+ words recognised \(eng\)\n$/);
  });
});

test("every command has --help", async () => {
  const result = await mcsv(["convert", "--help"]);
  expect(result.code).toBe(0);
  expect(result.stdout).toMatch(/^Usage: mcsv convert \[options\] <files\.\.\.>/);
  for (const flag of [
    "--email", "--quality", "--engine", "--strip-metadata", "--max-width", "--max-height", "--concurrency", "--out", "--json", "--api-key",
    "--one-pdf", "--page-size", "--fit", "--margin", "--orientation", "--title", "--author", "--subject", "--keywords", "--created", "--pdfa", "--ocr",
  ]) {
    expect(result.stdout).toContain(flag);
  }
  const jobs = await mcsv(["jobs", "retry", "--help"]);
  expect(jobs.code).toBe(0);
  expect(jobs.stdout).toMatch(/^Usage: mcsv jobs retry \[options\] <id>/);
});

test("a wrong API key, no service and a missing --email each end in one line that says what to do", async () => {
  const wrongKey = await mcsv(["--api-key", "not-the-right-key-0123456789", "conversions", "list", "--email", EMAIL]);
  expect(wrongKey.code).toBe(1);
  expect(wrongKey.stdout).toBe("");
  expect(wrongKey.stderr).toBe("mcsv: unauthenticated (invalid credentials): pass --api-key or set MCSV_API_KEY\n");

  const nowhere = `http://127.0.0.1:${await freePort()}`;
  const unreachable = await mcsv(["--url", nowhere, "users", "create", "--name", "Nobody", "--email", "nobody@example.com"]);
  expect(unreachable.code).toBe(1);
  expect(unreachable.stderr).toBe(`mcsv: cannot reach ${nowhere} (ECONNREFUSED): is \`npm start\` running?\n`);

  const noEmail = await mcsv(["convert", "gradient.png"]);
  expect(noEmail.code).toBe(1);
  expect(noEmail.stderr).toMatch(/^mcsv: --email is required: .*MCSV_EMAIL\)\n$/);
});

test("users create, with the API key from the dev credentials file", async () => {
  // As `npm start` keeps it: no --api-key and no MCSV_API_KEY.
  const dataDir = outDir("data");
  writeFileSync(join(dataDir, "credentials.json"), JSON.stringify({ apiKey: TEST_API_KEY, internalToken: TEST_INTERNAL_TOKEN }));
  const result = await run(process.execPath, [CLI, "users", "create", "--name", "Ada Lovelace", "--email", "ada.cli@example.com"], {
    cwd: work,
    env: { PATH: process.env["PATH"], HOME: work, MCSV_URL: system.urls.user, MCSV_DATA_DIR: dataDir },
  });
  expect(result.stderr).toBe("");
  expect(result.code).toBe(0);
  const id = /^id:\s+([0-9a-f-]{36})$/m.exec(result.stdout)?.[1];
  expect(id).toBeDefined();
  expect(result.stdout).toMatch(/^name:\s+Ada Lovelace$/m);
  const { user } = await system.client(UserService, "user").getUser({ id: id! });
  expect(user).toMatchObject({ name: "Ada Lovelace", email: "ada.cli@example.com" });

  const again = await mcsv(["users", "create", "--name", "Ada Again", "--email", "ada.cli@example.com"]);
  expect(again.code).toBe(1);
  expect(again.stderr).toBe("mcsv: already_exists: a user with this email already exists\n");
});

test("conversions list and get", async () => {
  expect(convertedId).toBeDefined();
  const list = await mcsv(["--json", "conversions", "list", "--email", EMAIL]);
  expect(list.code).toBe(0);
  const listed = JSON.parse(list.stdout) as { conversions: Array<{ id: string; state: string; filename: string }> };
  const { conversions } = await system.client(UserService, "user").listConversions({ userEmail: EMAIL, pageSize: 20 });
  expect(listed.conversions.map((c) => c.id)).toEqual(conversions.map((c) => c.id));
  expect(listed.conversions).toContainEqual(expect.objectContaining({ id: convertedId, state: "CONVERSION_STATE_SUCCEEDED", filename: "gradient.png" }));

  const table = await mcsv(["conversions", "list", "--email", EMAIL, "--limit", "2"]);
  expect(table.code).toBe(0);
  expect(table.stdout.split("\n")[0]).toMatch(/^ID\s+STATE\s+FILE\s+PAGES\s+WORDS\s+CREATED$/);
  expect(table.stdout).toMatch(/^more: --page-token \S+$/m);

  const get = await mcsv(["conversions", "get", convertedId]);
  expect(get.code).toBe(0);
  expect(get.stdout).toMatch(new RegExp(`^id:\\s+${convertedId}$`, "m"));
  expect(get.stdout).toMatch(/^state:\s+succeeded$/m);
  expect(get.stdout).toMatch(/^pdf url:\s+http:\/\/\S+\/pdfs\/\S+$/m);

  const missing = await mcsv(["conversions", "get", "00000000-0000-4000-8000-000000000000"]);
  expect(missing.code).toBe(1);
  expect(missing.stderr).toMatch(/^mcsv: not_found: .+\n$/);
});

test("jobs stats and list with the operator's credential", async () => {
  const env = { MCSV_JOB_URL: system.urls.job, MCSV_INTERNAL_TOKEN: TEST_INTERNAL_TOKEN };
  const stats = await mcsv(["--json", "jobs", "stats"], env);
  expect(stats.code).toBe(0);
  const printed = JSON.parse(stats.stdout) as { queues: Array<{ task: string }> };
  const { queues } = await system.client(JobService, "job").getQueueStats({});
  expect(printed.queues.map((q) => q.task).sort()).toEqual(queues.map((q) => q.task).sort());
  expect(printed.queues.map((q) => q.task)).toContain("convert_image");

  const list = await mcsv(["jobs", "list", "--state", "completed", "--task", "convert_image", "--limit", "3"], env);
  expect(list.code).toBe(0);
  const rows = list.stdout.trim().split("\n").slice(1).filter((line) => !line.startsWith("more:"));
  expect(rows.length).toBeGreaterThan(0);
  for (const row of rows) expect(row).toMatch(/^\S+\s+convert_image\s+completed\s+1\/\d+/);

  const noToken = await mcsv(["jobs", "stats", "--job-url", system.urls.job, "--internal-token", "wrong-token-0123456789abcdef"]);
  expect(noToken.code).toBe(1);
  expect(noToken.stderr).toBe("mcsv: unauthenticated (invalid credentials): pass --internal-token or set MCSV_INTERNAL_TOKEN\n");
});

test("webhooks secret and rotate: the tenant's signing secret, the same one the gateway reports", async () => {
  const shown = await mcsv(["--json", "webhooks", "secret"]);
  expect(shown.code).toBe(0);
  const { secret } = JSON.parse(shown.stdout) as { secret: string };
  expect(secret).toMatch(/^whsec_[A-Za-z0-9+/=]+$/);
  const gateway = system.client(UserService, "user");
  expect((await gateway.getWebhookSecret({})).secret).toBe(secret);

  const rotated = await mcsv(["webhooks", "rotate"]);
  expect(rotated.code).toBe(0);
  const fresh = /^secret:\s+(whsec_\S+)$/m.exec(rotated.stdout)?.[1];
  expect(fresh).toBeDefined();
  expect(fresh).not.toBe(secret);
  expect(rotated.stdout).toMatch(/^previous signs until:\s+\S+/m);
  expect((await gateway.getWebhookSecret({})).secret).toBe(fresh);
});
