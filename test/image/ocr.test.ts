/**
 * OCR by the real ocrmypdf and tesseract (services/image/ocr.ts): text rendered into an image by ImageMagick, the
 * image made a PDF losslessly by the passthrough engine, the PDF given its text layer. poppler reads the text back,
 * the image streams are compared byte for byte, and a run stopped by its timer or its signal leaves no process and
 * no file behind.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { promisify } from "node:util";
import { Code, ConnectError } from "@connectrpc/connect";
import { countWords, OcrMyPdf } from "../../services/image/ocr.js";
import { passthroughPdf } from "../../services/image/passthrough-pdf.js";
import { imageStreams, pdfFonts, pdfText, qpdfCheck } from "../support/pdf.js";

const execFileAsync = promisify(execFile);

const PHRASE = "Invoice number 4711 total amount";
const options = { timeoutMs: 60_000, maxOutputBytes: 64 * 1024 * 1024 };

const failure = (promise: Promise<unknown>) =>
  promise.then(
    () => {
      throw new Error("it succeeded");
    },
    (e: unknown) => ConnectError.from(e),
  );

const words = (text: string) => text.split(/\s+/).filter(Boolean);

/** A white PNG with `lines` written on it in black, by ImageMagick (arguments, no shell). */
async function textImage(width: number, height: number, lines: string[], pointsize = 48, lineSpacing = 120): Promise<Buffer> {
  const annotations = lines.flatMap((line, i) => ["-annotate", `+50+${200 + i * lineSpacing}`, line]);
  const args = ["-size", `${width}x${height}`, "xc:white", "-font", "DejaVu-Sans", "-pointsize", String(pointsize), "-fill", "black", ...annotations, "png:-"];
  const { stdout } = await execFileAsync("convert", args, { encoding: "buffer", maxBuffer: 1 << 28 });
  return stdout;
}

async function losslessPdf(png: Buffer): Promise<Buffer> {
  const made = await passthroughPdf(png);
  if (!made) throw new Error("the passthrough engine declined the test image");
  return made.pdf;
}

/** Pages of several PDFs as one, by qpdf. */
async function concatenated(pdfs: Buffer[]): Promise<Buffer> {
  const dir = mkdtempSync(join(tmpdir(), "mcsv-ocr-test-"));
  try {
    const files = pdfs.map((pdf, i) => {
      writeFileSync(join(dir, `${i}.pdf`), pdf);
      return join(dir, `${i}.pdf`);
    });
    await execFileAsync("qpdf", ["--empty", "--pages", ...files, "--", join(dir, "out.pdf")]);
    return readFileSync(join(dir, "out.pdf"));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

interface ProcessEntry {
  pid: number;
  ppid: number;
  pgrp: number;
  comm: string;
  zombie: boolean;
}

/** Every process /proc shows (a zombie waiting for its parent to reap it is flagged: it no longer runs). */
function processTable(): ProcessEntry[] {
  const entries: ProcessEntry[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      // "pid (comm) state ppid pgrp …"; comm may hold spaces and parentheses.
      const close = stat.lastIndexOf(")");
      const [state, ppid, pgrp] = stat.slice(close + 2).split(" ");
      entries.push({ pid: Number(name), ppid: Number(ppid), pgrp: Number(pgrp), comm: stat.slice(stat.indexOf("(") + 1, close), zombie: state === "Z" });
    } catch {
      // Gone between the listing and the read.
    }
  }
  return entries;
}

/** A process's arguments ([] once it is gone). */
function commandLine(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean);
  } catch {
    return [];
  }
}

/**
 * Watches, every few milliseconds, the process group of the ocrmypdf this test process starts, and who is in it: each
 * member's arguments joined by spaces.
 */
function watchOcrGroup() {
  let group: number | undefined;
  const members = new Map<number, string>();
  const timer = setInterval(() => {
    for (const entry of processTable()) {
      if (group === undefined && entry.ppid === process.pid && entry.comm === "ocrmypdf") group = entry.pgrp;
      // A process just forked shows its parent's arguments until it runs its own program: the latest ones count.
      if (group !== undefined && entry.pgrp === group && !entry.zombie) members.set(entry.pid, commandLine(entry.pid).join(" ") || members.get(entry.pid) || "");
    }
  }, 5);
  return {
    group: () => group,
    members: () => [...members.values()],
    stop: () => clearInterval(timer),
  };
}

/**
 * Waits until no process of `group` runs and returns those that still do after a quarter of a second: a SIGKILL ends
 * them within milliseconds, while a tesseract left running on the long page goes on for seconds.
 */
async function survivorsOf(group: number): Promise<ProcessEntry[]> {
  const alive = () => processTable().filter((entry) => entry.pgrp === group && !entry.zombie);
  const deadline = Date.now() + 250;
  while (alive().length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  return alive();
}

let onePage: Buffer;
/** A full A4 page of text at 300 dpi: tesseract works on it for seconds, long enough to be stopped mid-run. */
let longPage: Buffer;
const ocr = new OcrMyPdf(options);
/** The test's own temporary directory (TMPDIR), so that whatever a run leaves behind shows. */
let scratch: string;
const savedTmpdir = process.env.TMPDIR;

beforeAll(async () => {
  scratch = mkdtempSync(join(tmpdir(), "mcsv-ocr-tmp-"));
  process.env.TMPDIR = scratch;
  onePage = await losslessPdf(await textImage(1200, 400, [PHRASE]));
  const lines = Array.from({ length: 55 }, (_, i) => `Line ${i} of the invoice lists item number ${4700 + i} at a total amount of ${i * 37} euros`);
  longPage = await losslessPdf(await textImage(2480, 3508, lines, 40, 60));
}, 60_000);

afterAll(() => {
  if (savedTmpdir === undefined) delete process.env.TMPDIR;
  else process.env.TMPDIR = savedTmpdir;
  rmSync(scratch, { recursive: true, force: true });
});

test("adds text that pdftotext reads back, counts its words, embeds its font and leaves the image stream byte for byte", async () => {
  const layer = await ocr.addTextLayer(onePage, ["eng"]);
  await qpdfCheck(layer.pdf);
  const text = await pdfText(layer.pdf);
  expect(words(text).join(" ")).toBe(PHRASE);
  expect(layer.words).toBe(words(PHRASE).length);
  expect(layer.languages).toEqual(["eng"]);

  const before = await imageStreams(onePage);
  const after = await imageStreams(layer.pdf);
  expect(before).toHaveLength(1);
  expect(after).toHaveLength(before.length);
  expect(after[0]!.data.equals(before[0]!.data)).toBe(true);
  expect(after[0]!.dictionary).toBe(before[0]!.dictionary);

  const fonts = await pdfFonts(layer.pdf);
  expect(fonts.length).toBeGreaterThan(0);
  expect(fonts.filter((font) => !font.embedded)).toEqual([]);
  // The private directory, with ocrmypdf's own temporary files and the recognised text, is gone.
  expect(readdirSync(scratch)).toEqual([]);
});

test("counts the words of every page of a document, a blank page between (form feeds are no words)", async () => {
  const blank = await losslessPdf(await textImage(1200, 400, []));
  const document = await concatenated([onePage, blank, onePage]);
  const layer = await ocr.addTextLayer(document, ["eng", "eng"]);
  expect(layer.languages).toEqual(["eng"]);
  expect(layer.words).toBe(words(await pdfText(layer.pdf)).length);
  expect(layer.words).toBe(2 * words(PHRASE).length);
});

test("the placeholder ocrmypdf writes for a page tesseract gave up on counts as no words", () => {
  // As ocrmypdf 14 writes them (_pipeline.merge_sidecars, _exec.tesseract._generate_null_hocr).
  expect(countWords(`${PHRASE}\n\f[skipped page]\f[OCR skipped on page(s) 3-4]\f${PHRASE}\n`)).toBe(2 * words(PHRASE).length);
});

test("lists the installed languages without osd, and is ready with its version and languages", async () => {
  const languages = await ocr.languages();
  expect(languages).toContain("eng");
  expect(languages).not.toContain("osd");
  expect(await ocr.ready()).toMatch(new RegExp(`^ocrmypdf \\d+(\\.\\d+)+, languages ${languages.join(", ")}$`));
});

test("a language that is not installed is failed_precondition, naming what is installed", async () => {
  const installed = await ocr.languages();
  const error = await failure(ocr.addTextLayer(onePage, ["eng", "deu"]));
  expect(error.code).toBe(Code.FailedPrecondition);
  expect(error.rawMessage).toBe(`OCR language "deu" is not installed here; installed: ${installed.join(", ")}`);
  // Anything else from a request is refused the same way before it could reach a command line.
  expect((await failure(ocr.addTextLayer(onePage, ["eng+osd"]))).code).toBe(Code.FailedPrecondition);
  expect((await failure(ocr.addTextLayer(onePage, ["--help"]))).code).toBe(Code.FailedPrecondition);
});

test("without ocrmypdf or tesseract, OCR is failed_precondition and not ready, saying which is missing", async () => {
  const noOcrMyPdf = new OcrMyPdf({ ...options, command: "/nonexistent/ocrmypdf" });
  const run = await failure(noOcrMyPdf.addTextLayer(onePage, ["eng"]));
  expect(run.code).toBe(Code.FailedPrecondition);
  expect(run.rawMessage).toBe("OCR is not available: /nonexistent/ocrmypdf is not installed");
  const ready = await failure(noOcrMyPdf.ready());
  expect(ready.code).toBe(Code.FailedPrecondition);
  expect(ready.rawMessage).toBe("OCR is not available: /nonexistent/ocrmypdf is not installed");

  const noTesseract = new OcrMyPdf({ ...options, tesseractCommand: "/nonexistent/tesseract" });
  expect(await noTesseract.languages()).toEqual([]);
  const unready = await failure(noTesseract.ready());
  expect(unready.code).toBe(Code.FailedPrecondition);
  expect(unready.rawMessage).toMatch(/tesseract is not installed/);
  expect((await failure(noTesseract.addTextLayer(onePage, ["eng"]))).code).toBe(Code.FailedPrecondition);
});

test("input it cannot take is invalid_argument: not a PDF, or an encrypted one (ocrmypdf's exit code 8)", async () => {
  expect((await failure(ocr.addTextLayer(Buffer.from("hello"), ["eng"]))).code).toBe(Code.InvalidArgument);
  const dir = mkdtempSync(join(tmpdir(), "mcsv-ocr-test-"));
  try {
    writeFileSync(join(dir, "in.pdf"), onePage);
    await execFileAsync("qpdf", ["--encrypt", "user", "owner", "256", "--", join(dir, "in.pdf"), join(dir, "encrypted.pdf")]);
    const error = await failure(ocr.addTextLayer(readFileSync(join(dir, "encrypted.pdf")), ["eng"]));
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.rawMessage).toMatch(/^ocrmypdf failed \(exit code 8\): .*encrypted/i);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("output past maxOutputBytes is resource_exhausted", async () => {
  const small = new OcrMyPdf({ ...options, maxOutputBytes: 1_000 });
  const error = await failure(small.addTextLayer(onePage, ["eng"]));
  expect(error.code).toBe(Code.ResourceExhausted);
  expect(readdirSync(scratch)).toEqual([]);
});

test("a run over its time is deadline_exceeded, its whole process group killed and its files removed", async () => {
  const hurried = new OcrMyPdf({ ...options, timeoutMs: 1_000 });
  await hurried.languages();
  const watch = watchOcrGroup();
  try {
    const error = await failure(hurried.addTextLayer(longPage, ["eng"]));
    expect(error.code).toBe(Code.DeadlineExceeded);
    expect(error.rawMessage).toBe("ocrmypdf took longer than 1000 ms and was stopped");
    const group = watch.group();
    expect(group).toBeDefined();
    expect(await survivorsOf(group!)).toEqual([]);
    expect(readdirSync(scratch)).toEqual([]);
  } finally {
    watch.stop();
  }
});

test("an aborted signal kills the process group, tesseract and all, with the signal's reason", async () => {
  const controller = new AbortController();
  const watch = watchOcrGroup();
  try {
    const run = failure(ocr.addTextLayer(longPage, ["eng"], controller.signal));
    // Stopped while tesseract recognises the page (`tesseract -l eng …`, not the quick `tesseract --version` ocrmypdf
    // asks first), once it has loaded its input: it is ocrmypdf's child, so only a kill of the group ends it then (a
    // tesseract still loading would fail by itself once the temporary files are removed, and prove nothing).
    const recognising = () => watch.members().some((args) => /^tesseract .*-l eng /.test(args));
    const deadline = Date.now() + 30_000;
    while (!recognising() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    expect(recognising()).toBe(true);
    await new Promise((r) => setTimeout(r, 300));
    controller.abort(new ConnectError("client gone", Code.Canceled));
    expect((await run).code).toBe(Code.Canceled);
    expect(await survivorsOf(watch.group()!)).toEqual([]);
    expect(readdirSync(scratch)).toEqual([]);
  } finally {
    watch.stop();
  }
});
