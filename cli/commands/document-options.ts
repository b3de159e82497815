/**
 * The flags of `convert` that lay out, describe, archive and make searchable its PDFs (ConversionOptions' layout,
 * metadata, pdfa and ocr_languages). A value that cannot be right is refused here, in commander's one line; what
 * depends on several flags together (a margin too wide for its page) is the gateway's to say.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { InvalidArgumentError, Option } from "commander";
import { PageFit, PageOrientation, PageSize, type ConversionOptionsSchema } from "@mcsv/sdk";
import { MAX_PAGE_POINTS, MIN_PAGE_POINTS, OCR_LANGUAGE } from "../../services/shared/document-options.js";

const FITS = { into: PageFit.INTO, fill: PageFit.FILL, exact: PageFit.EXACT, shrink: PageFit.SHRINK } as const;
const ORIENTATIONS = { auto: PageOrientation.AUTO, portrait: PageOrientation.PORTRAIT, landscape: PageOrientation.LANDSCAPE } as const;
const NAMED_SIZES = { image: PageSize.UNSPECIFIED, a4: PageSize.A4, letter: PageSize.LETTER } as const;
const POINTS_PER_UNIT = { pt: 1, mm: 72 / 25.4, in: 72 } as const;

/** A number of points, or of millimetres or inches with its unit: 36, 36pt, 12.7mm, 0.5in. */
const LENGTH = /^(\d+(?:\.\d+)?)(pt|mm|in)?$/;
/** WIDTHxHEIGHT with one unit for both: 595x842, 210x297mm, 8.5x11in. */
const CUSTOM_SIZE = /^(\d+(?:\.\d+)?)x(\d+(?:\.\d+)?)(pt|mm|in)?$/;
/** An ISO 8601 date, with a time (and an offset) or without: 2024-05-06, 2024-05-06T07:08:09Z. */
const ISO_DATE = /^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$/;

type Layout = NonNullable<MessageInitShape<typeof ConversionOptionsSchema>["layout"]>;
export type PageSizeChoice = Pick<Layout, "size" | "customWidth" | "customHeight">;

const inPoints = (value: string, unit: string | undefined) => Number(value) * POINTS_PER_UNIT[(unit ?? "pt") as keyof typeof POINTS_PER_UNIT];

function pageSize(value: string): PageSizeChoice {
  const given = value.trim().toLowerCase();
  if (given in NAMED_SIZES) return { size: NAMED_SIZES[given as keyof typeof NAMED_SIZES] };
  const custom = CUSTOM_SIZE.exec(given);
  if (!custom) throw new InvalidArgumentError("--page-size takes image, a4, letter or WIDTHxHEIGHT in points, mm or in (595x842, 210x297mm, 8.5x11in)");
  const [width, height] = [inPoints(custom[1]!, custom[3]), inPoints(custom[2]!, custom[3])];
  if (![width, height].every((side) => side >= MIN_PAGE_POINTS && side <= MAX_PAGE_POINTS)) {
    throw new InvalidArgumentError(`--page-size: each side must be ${MIN_PAGE_POINTS} to ${MAX_PAGE_POINTS} points (1 to 200 inches)`);
  }
  return { size: PageSize.CUSTOM, customWidth: width, customHeight: height };
}

function margin(value: string): number {
  const length = LENGTH.exec(value.trim().toLowerCase());
  if (!length) throw new InvalidArgumentError("--margin takes a length in points, mm or in (36, 12.7mm, 0.5in)");
  return inPoints(length[1]!, length[2]);
}

function keywords(value: string): string[] {
  const words = value.split(",").map((word) => word.trim()).filter((word) => word !== "");
  if (words.length === 0) throw new InvalidArgumentError("--keywords takes words separated by commas (receipts,2024)");
  return words;
}

function created(value: string): Date {
  const date = new Date(value.trim());
  if (!ISO_DATE.test(value.trim()) || Number.isNaN(date.getTime())) throw new InvalidArgumentError("--created takes an ISO 8601 date (2024-05-06 or 2024-05-06T07:08:09Z)");
  return date;
}

function ocrLanguages(value: string): string[] {
  const languages = [...new Set(value.split(/[+,]/).map((language) => language.trim().toLowerCase()))];
  const bad = languages.find((language) => !OCR_LANGUAGE.test(language));
  if (bad !== undefined) throw new InvalidArgumentError(`--ocr takes tesseract languages joined by + or , (eng, eng+deu), not ${JSON.stringify(bad)}`);
  return languages;
}

/** The parsed flags (commander's attribute names). */
export interface DocumentFlags {
  pageSize?: PageSizeChoice;
  fit?: keyof typeof FITS;
  margin?: number;
  orientation?: keyof typeof ORIENTATIONS;
  title?: string;
  author?: string;
  subject?: string;
  keywords?: string[];
  created?: Date;
  pdfa?: boolean;
  ocr?: string[];
}

export function documentFlags(): Option[] {
  return [
    new Option("--page-size <size>", "page size: image (each page its image's size), a4, letter, or WIDTHxHEIGHT in points, mm or in (210x297mm)").argParser(pageSize),
    new Option("--fit <fit>", "how an image fits its page: into, fill (cut to cover), exact (stretched), shrink (never enlarged)").choices(Object.keys(FITS)),
    new Option("--margin <length>", "margin on every side, in points or with mm or in (12.7mm)").argParser(margin),
    new Option("--orientation <orientation>", "page orientation (auto: landscape for a wide image)").choices(Object.keys(ORIENTATIONS)),
    new Option("--title <text>", "the PDF's title"),
    new Option("--author <text>", "the PDF's author"),
    new Option("--subject <text>", "the PDF's subject"),
    new Option("--keywords <words>", "the PDF's keywords, separated by commas").argParser(keywords),
    new Option("--created <date>", "the PDF's creation date, ISO 8601 (default: when it is written)").argParser(created),
    new Option("--pdfa", "write PDF/A-2b, for archiving"),
    new Option("--ocr <languages>", "add searchable text by OCR in these tesseract languages (eng, eng+deu)").argParser(ocrLanguages),
  ];
}

/** The flags as ConversionOptions' document fields; only what was given is set (the rest is the service's default). */
export function documentOptionsFrom(flags: DocumentFlags): Pick<MessageInitShape<typeof ConversionOptionsSchema>, "layout" | "metadata" | "pdfa" | "ocrLanguages"> {
  const laidOut = flags.pageSize !== undefined || flags.fit !== undefined || flags.margin !== undefined || flags.orientation !== undefined;
  const described = [flags.title, flags.author, flags.subject, flags.keywords, flags.created].some((flag) => flag !== undefined);
  return {
    ...(laidOut
      ? {
          layout: {
            ...flags.pageSize,
            ...(flags.fit ? { fit: FITS[flags.fit] } : {}),
            ...(flags.margin !== undefined ? { margin: flags.margin } : {}),
            ...(flags.orientation ? { orientation: ORIENTATIONS[flags.orientation] } : {}),
          },
        }
      : {}),
    ...(described
      ? {
          metadata: {
            title: flags.title ?? "",
            author: flags.author ?? "",
            subject: flags.subject ?? "",
            keywords: flags.keywords ?? [],
            ...(flags.created ? { createdAt: timestampFromDate(flags.created) } : {}),
          },
        }
      : {}),
    pdfa: flags.pdfa === true,
    ocrLanguages: flags.ocr ?? [],
  };
}
