/**
 * The checks of a conversion's document options (page layout, metadata, OCR languages), shared by the gateway, which
 * refuses a bad request at once, and the image service, which trusts no caller. Each problem is reported under its
 * field's JSON path, as Violations expects.
 */
import { PageFit, PageOrientation, PageSize, type ConversionOptions } from "@mcsv/sdk";

/** Largest page side PDF viewers accept (200 inches), and the smallest we write (1 inch), in points. */
export const MAX_PAGE_POINTS = 14_400;
export const MIN_PAGE_POINTS = 72;
/** Margins around an image-sized page take at most half of the largest page (the image is made smaller to fit). */
export const MAX_PAGE_MARGIN = MAX_PAGE_POINTS / 4;
export const TITLE_MAX = 500;
export const AUTHOR_MAX = 500;
export const SUBJECT_MAX = 1_000;
export const KEYWORDS_MAX = 50;
export const KEYWORD_MAX = 100;
export const OCR_LANGUAGES_MAX = 5;
/** A tesseract language: its traineddata name (eng, deu, chi_sim, …). Installed ones are the image service's to check. */
export const OCR_LANGUAGE = /^[a-z]{3}(_[a-z]{2,8})?$/;

/** The page sizes the contract names, in points, portrait. */
export const NAMED_PAGE_SIZES: Readonly<Partial<Record<PageSize, { width: number; height: number }>>> = {
  [PageSize.A4]: { width: 595.276, height: 841.89 },
  [PageSize.LETTER]: { width: 612, height: 792 },
};

type Problems = { add(field: string, description: string): unknown };

/** Control characters have no place in a title or a keyword (and would break the XMP). */
const CONTROL = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/;

function checkText(problems: Problems, field: string, value: string, max: number): void {
  if (value.length > max) problems.add(field, `must be at most ${max} characters`);
  else if (CONTROL.test(value)) problems.add(field, "must not contain control characters");
}

/** The page size in points (portrait as named), or undefined for the image's own size. */
export function pageSizeOf(options: ConversionOptions): { width: number; height: number } | undefined {
  const layout = options.layout;
  if (!layout || layout.size === PageSize.UNSPECIFIED) return undefined;
  if (layout.size === PageSize.CUSTOM) return { width: layout.customWidth, height: layout.customHeight };
  return NAMED_PAGE_SIZES[layout.size];
}

/** Adds a problem for every document option that is out of range. */
export function checkDocumentOptions(options: ConversionOptions, problems: Problems): void {
  const layout = options.layout;
  if (layout) {
    if (!(layout.size in PageSize)) problems.add("options.layout.size", "is not a known page size");
    if (!(layout.fit in PageFit)) problems.add("options.layout.fit", "is not a known fit");
    if (!(layout.orientation in PageOrientation)) problems.add("options.layout.orientation", "is not a known orientation");
    const custom = layout.size === PageSize.CUSTOM;
    for (const [field, value] of [
      ["customWidth", layout.customWidth],
      ["customHeight", layout.customHeight],
    ] as const) {
      if (custom && !(value >= MIN_PAGE_POINTS && value <= MAX_PAGE_POINTS)) {
        problems.add(`options.layout.${field}`, `must be between ${MIN_PAGE_POINTS} and ${MAX_PAGE_POINTS} points for PAGE_SIZE_CUSTOM`);
      } else if (!custom && value !== 0) problems.add(`options.layout.${field}`, "applies only to PAGE_SIZE_CUSTOM");
    }
    const size = pageSizeOf(options);
    if (!Number.isFinite(layout.margin) || layout.margin < 0) problems.add("options.layout.margin", "must be zero or more points");
    else if (size && Math.min(size.width, size.height) - 2 * layout.margin < MIN_PAGE_POINTS) {
      problems.add("options.layout.margin", `must leave at least ${MIN_PAGE_POINTS} points inside the margins each way`);
    } else if (!size && layout.margin > MAX_PAGE_MARGIN) problems.add("options.layout.margin", `must be at most ${MAX_PAGE_MARGIN} points`);
  }
  const metadata = options.metadata;
  if (metadata) {
    checkText(problems, "options.metadata.title", metadata.title, TITLE_MAX);
    checkText(problems, "options.metadata.author", metadata.author, AUTHOR_MAX);
    checkText(problems, "options.metadata.subject", metadata.subject, SUBJECT_MAX);
    if (metadata.keywords.length > KEYWORDS_MAX) problems.add("options.metadata.keywords", `must be at most ${KEYWORDS_MAX}`);
    metadata.keywords.forEach((keyword, i) => {
      const field = `options.metadata.keywords[${i}]`;
      if (keyword.trim() === "") problems.add(field, "must not be empty");
      else if (keyword.includes(",")) problems.add(field, "must not contain a comma (keywords are joined with commas)");
      else checkText(problems, field, keyword, KEYWORD_MAX);
    });
    const created = metadata.createdAt;
    // From year 1 to 9999: what both the PDF date and XMP's ISO 8601 can write.
    if (created && (created.seconds < -62_135_596_800n || created.seconds > 253_402_300_799n)) {
      problems.add("options.metadata.createdAt", "must be between the years 1 and 9999");
    }
  }
  if (options.ocrLanguages.length > OCR_LANGUAGES_MAX) problems.add("options.ocrLanguages", `must name at most ${OCR_LANGUAGES_MAX} languages`);
  options.ocrLanguages.forEach((language, i) => {
    if (!OCR_LANGUAGE.test(language)) problems.add(`options.ocrLanguages[${i}]`, "must be a tesseract language code such as eng, deu or chi_sim");
  });
  if (new Set(options.ocrLanguages).size !== options.ocrLanguages.length) problems.add("options.ocrLanguages", "must not repeat a language");
}
