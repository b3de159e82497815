/**
 * A conversion's pages and OCR text in a few words, worded alike in convert's progress and the conversions
 * commands. A gateway from before documents sends no page count: then there is nothing to say.
 */
import { ConversionState, type Conversion } from "@mcsv/sdk";

const counted = (n: number, thing: string) => `${n} ${thing}${n === 1 ? "" : "s"}`;

/** "page 2 of 3" while the conversion is processing and a page is done; undefined otherwise. */
export function pageProgress(c: Conversion): string | undefined {
  return c.state === ConversionState.PROCESSING && c.pageCount > 0 && c.pagesDone > 0 ? `page ${c.pagesDone} of ${c.pageCount}` : undefined;
}

/** "3 pages" once it succeeded, "1 of 3 pages done" before (or when it failed). */
export function pagesSummary(c: Conversion): string | undefined {
  if (c.pageCount === 0) return undefined;
  return c.state === ConversionState.SUCCEEDED ? counted(c.pageCount, "page") : `${c.pagesDone} of ${counted(c.pageCount, "page")} done`;
}

/** "7 words recognised (eng+deu)"; undefined without a text layer. */
export function textSummary(c: Conversion): string | undefined {
  return c.text ? `${counted(c.text.wordCount, "word")} recognised (${c.text.languages.join("+")})` : undefined;
}
