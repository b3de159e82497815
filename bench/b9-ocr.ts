/**
 * B9: OCR through mcsv (services/image/ocr.ts: `OcrMyPdf.addTextLayer`, which spawns ocrmypdf in its own process
 * group with the PDF on stdin and out on stdout, a private temporary directory and a sidecar file for the word count)
 * against bare `ocrmypdf --output-type pdf --optimize 0 --jobs 1 -l eng in.pdf out.pdf` on the same PDF, spawned
 * from the benchmark. Both run one tesseract thread (mcsv sets OMP_THREAD_LIMIT=1; ocrmypdf picks 1 itself for
 * `--jobs 1`). The two alternate within each round, the order swapped every round, after one untimed run each.
 *
 * The PDF: N A4 pages at 300 dpi of English words (a fixed vocabulary in a seeded order), drawn by ImageMagick
 * (`convert … -font DejaVu-Sans -annotate …`, spawned without a shell) and written by it as a PDF. Both outputs must
 * give the same words through `pdftotext`; how many of the drawn words were recognised is reported beside.
 */
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { OcrMyPdf } from "../services/image/ocr.js";
import { runProgram } from "./b8-document.js";
import type { BenchOptions } from "./lib/context.js";
import { median, round } from "./lib/stats.js";

type Runner = "mcsv" | "bare";

export interface B9Result {
  pages: number;
  /** Words drawn over all pages. */
  wordsDrawn: number;
  ocrmypdf: string | undefined;
  bareArgs: string[];
  rounds: number;
  /** Medians of the rounds, ms per PDF. */
  msPerPdf: Partial<Record<Runner, number>>;
  roundMs: Partial<Record<Runner, number[]>>;
  /** The bare time over mcsv's: the median of the rounds' ratios (≥ 0.9 is the goal). */
  ratio?: number;
  roundRatios?: number[];
  /** What addTextLayer counted from its sidecar. */
  mcsvWords?: number;
  /** `pdftotext` of both outputs. */
  text?: { sameWords: boolean; words: Record<Runner, number>; firstDifference?: string };
  /** Share of the drawn words found, in order, in mcsv's text (the recognition itself, for the record). */
  recognised?: number;
  targets: { ratio: { min: number; met: boolean }; sameWords: { met: boolean } };
  errors: Partial<Record<Runner, string>>;
}

const RATIO_TARGET = 0.9;
const BARE_ARGS = ["--output-type", "pdf", "--optimize", "0", "--jobs", "1", "-l", "eng"];
/** A4 at 300 dpi, in pixels. */
const PAGE = { width: 2480, height: 3508, dpi: 300 };
const LINE_HEIGHT = 75;
const LINES_PER_PAGE = 40;
const WORDS_PER_LINE = 9;

const VOCABULARY = (
  "the quick brown fox jumps over lazy dog image service converts every photo into document pages with margins " +
  "metadata search text layer archive storage bucket upload download request response queue worker retry budget " +
  "memory process signal timeout deadline language english river mountain garden window kitchen morning evening " +
  "summer winter autumn spring yellow purple orange silver golden number letter paper pencil market station harbour " +
  "journey picture company quality measure benchmark result figure median ratio floor target reference machine"
).split(" ");

/** The words of every page, line by line, in a fixed seeded order. */
function pageText(pages: number): string[][][] {
  let state = 0x9e3779b9;
  const next = () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) % VOCABULARY.length;
  };
  return Array.from({ length: pages }, () => Array.from({ length: LINES_PER_PAGE }, () => Array.from({ length: WORDS_PER_LINE }, () => VOCABULARY[next()]!)));
}

/** The ImageMagick arguments that draw the pages (each a parenthesised image sequence member) into `out` as a PDF. */
function drawArguments(text: string[][][], out: string): string[] {
  const args = ["-density", String(PAGE.dpi), "-units", "PixelsPerInch"];
  for (const lines of text) {
    args.push("(", "-size", `${PAGE.width}x${PAGE.height}`, "xc:white", "-font", "DejaVu-Sans", "-pointsize", "11", "-fill", "black");
    lines.forEach((words, i) => args.push("-annotate", `+250+${300 + i * LINE_HEIGHT}`, words.join(" ")));
    args.push(")");
  }
  args.push("-type", "Grayscale", "-compress", "Zip", `pdf:${out}`);
  return args;
}

async function ocrmypdfVersion(): Promise<string | undefined> {
  try {
    return `ocrmypdf ${(await runProgram("ocrmypdf", ["--version"])).toString().trim()}`;
  } catch {
    return undefined;
  }
}

const wordsOf = (text: string) => text.split(/\s+/).filter(Boolean);

/** The share of `drawn` found in `found` in order (longest common subsequence over the drawn count). */
function recognisedShare(drawn: readonly string[], found: readonly string[]): number {
  let previous = new Uint32Array(found.length + 1);
  let current = new Uint32Array(found.length + 1);
  for (const word of drawn) {
    for (let j = 1; j <= found.length; j++) current[j] = word === found[j - 1] ? previous[j - 1]! + 1 : Math.max(previous[j]!, current[j - 1]!);
    [previous, current] = [current, previous];
  }
  return drawn.length ? previous[found.length]! / drawn.length : Number.NaN;
}

export async function runB9(options: BenchOptions & { imageMagick: string }): Promise<B9Result> {
  const pages = options.quick ? 1 : 2;
  const rounds = options.quick ? 2 : 5;
  const version = await ocrmypdfVersion();
  const text = pageText(pages);
  const drawn = text.flat(2);
  const result: B9Result = {
    pages,
    wordsDrawn: drawn.length,
    ocrmypdf: version,
    bareArgs: BARE_ARGS,
    rounds,
    msPerPdf: {},
    roundMs: {},
    targets: { ratio: { min: RATIO_TARGET, met: false }, sameWords: { met: false } },
    errors: {},
  };
  if (!version) {
    // ocrmypdf is what both sides run: without it there is nothing to compare.
    throw new Error("ocrmypdf is not installed (apt-get install ocrmypdf tesseract-ocr-eng)");
  }
  const dir = await mkdtemp(join(tmpdir(), "mcsv-b9-"));
  try {
    const input = join(dir, "in.pdf");
    await runProgram(options.imageMagick, drawArguments(text, input));
    const pdf = await readFile(input);
    options.log(`B9: ${pages} A4 pages at ${PAGE.dpi} dpi, ${drawn.length} words, ${pdf.byteLength} bytes; ${rounds} rounds`);

    const ocr = new OcrMyPdf({ timeoutMs: 600_000, maxOutputBytes: 1 << 30 });
    const outputs: Partial<Record<Runner, Buffer>> = {};
    const runners: Record<Runner, () => Promise<Buffer>> = {
      mcsv: async () => {
        const layer = await ocr.addTextLayer(pdf, ["eng"]);
        result.mcsvWords = layer.words;
        return layer.pdf;
      },
      bare: async () => {
        const out = join(dir, "bare.pdf");
        await runProgram("ocrmypdf", [...BARE_ARGS, input, out]);
        return readFile(out);
      },
    };
    const order = Object.keys(runners) as Runner[];
    const times: Partial<Record<Runner, number[]>> = {};
    // Round 0 is a warm-up (ocrmypdf's and tesseract's files in the page cache, the language probe), not timed.
    for (let r = 0; r <= rounds; r++) {
      for (const runner of r % 2 === 0 ? order : [...order].reverse()) {
        if (result.errors[runner]) continue;
        try {
          const started = performance.now();
          const output = await runners[runner]();
          const ms = performance.now() - started;
          if (r > 0) (times[runner] ??= []).push(ms);
          outputs[runner] = output;
        } catch (error) {
          result.errors[runner] = error instanceof Error ? error.message.slice(0, 300) : String(error);
        }
      }
    }
    for (const runner of order) {
      if (!times[runner]) continue;
      result.msPerPdf[runner] = round(median(times[runner]), 1);
      result.roundMs[runner] = times[runner].map((t) => round(t, 1));
    }
    if (times.mcsv && times.bare && times.mcsv.length === times.bare.length) {
      result.roundRatios = times.bare.map((t, i) => round(t / times.mcsv![i]!, 3));
      result.ratio = round(median(result.roundRatios), 3);
      result.targets.ratio.met = result.ratio >= RATIO_TARGET;
    }
    if (outputs.mcsv && outputs.bare) {
      const words: Partial<Record<Runner, string[]>> = {};
      for (const runner of order) {
        const file = join(dir, `${runner}-out.pdf`);
        await writeFile(file, outputs[runner]!);
        words[runner] = wordsOf((await runProgram("pdftotext", [file, "-"])).toString("utf8"));
      }
      const a = words.mcsv!;
      const b = words.bare!;
      const at = a.findIndex((word, i) => word !== b[i]);
      const differs = at >= 0 ? at : a.length !== b.length ? Math.min(a.length, b.length) : -1;
      result.text = {
        sameWords: differs < 0,
        words: { mcsv: a.length, bare: b.length },
        ...(differs >= 0 ? { firstDifference: `word ${differs}: mcsv ${JSON.stringify(a[differs])}, bare ${JSON.stringify(b[differs])}` } : {}),
      };
      result.targets.sameWords.met = differs < 0 && a.length > 0;
      result.recognised = round(recognisedShare(drawn, a), 3);
    }
    options.log(
      `B9: mcsv ${result.msPerPdf.mcsv ?? "–"} ms, bare ocrmypdf ${result.msPerPdf.bare ?? "–"} ms per PDF (ratio ${result.ratio ?? "–"}, rounds ${result.roundRatios?.join(", ") ?? "–"}); ` +
        (result.text
          ? `pdftotext: ${result.text.sameWords ? "same words" : `words differ (${result.text.firstDifference})`}, ${result.text.words.mcsv} and ${result.text.words.bare}; sidecar ${result.mcsvWords}; ${Math.round((result.recognised ?? 0) * 100)} % of the drawn words recognised`
          : "no text compared") +
        (Object.keys(result.errors).length ? `; errors ${JSON.stringify(result.errors)}` : ""),
    );
    return result;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
