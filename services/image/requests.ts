/**
 * The ImageService requests checked (every bad field at once) and put in the pipeline's terms: a document request
 * (document-pipeline.ts) for both RPCs, and a one-image request (pipeline.ts) for a plain ConvertImage. Page layout
 * and metadata go from the contract's messages to the layout's and the writer's.
 */
import { create } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import {
  ConversionOptionsSchema,
  PageFit,
  PageOrientation,
  PdfEngine,
  Quality,
  type ConversionOptions,
  type ImageServiceConvertDocumentRequest,
  type ImageServiceConvertImageRequest,
} from "@mcsv/sdk";
import { checkDocumentOptions, pageSizeOf } from "../shared/document-options.js";
import { Violations } from "../shared/errors.js";
import type { DocumentDeps, DocumentRequest } from "./document-pipeline.js";
import { INPUT_FORMATS, isInputFormat, type InputFormat } from "./normalise.js";
import type { PageFit as Fit, PageLayout, PageOrientation as Orientation } from "./page-layout.js";
import type { DocumentMetadata } from "./pdf-document.js";
import { pdfEngineOf, type PdfEngineName } from "./pdf-engine.js";
import type { ConversionRequest } from "./pipeline.js";
import { qualityPreset } from "./quality.js";

/** What the checks need to know of the service (of its document limits, the most pages). */
export interface RequestPolicy extends Pick<DocumentDeps, "documentLimits"> {
  /** The engine of a request that leaves it unspecified (IMAGE_PDF_ENGINE). */
  defaultPdfEngine: PdfEngineName;
  /** The object key a URL points at in the service's own bucket, or undefined for any other URL (SSRF guard). */
  keyOfUrl(url: string): string | undefined;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const MAX_DIMENSION = 1_000_000;


/** The options every conversion shares, each bad one recorded in `violations`. */
function validateOptions(options: ConversionOptions | undefined, violations: Violations, deps: RequestPolicy) {
  const preset = qualityPreset(options?.quality ?? Quality.UNSPECIFIED);
  if (!preset) violations.add("options.quality", `unknown quality ${options?.quality}`);
  violations.check((options?.maxWidth ?? 0) <= MAX_DIMENSION, "options.maxWidth", `must be at most ${MAX_DIMENSION}`);
  violations.check((options?.maxHeight ?? 0) <= MAX_DIMENSION, "options.maxHeight", `must be at most ${MAX_DIMENSION}`);
  const engine = pdfEngineOf(options?.engine ?? PdfEngine.UNSPECIFIED, deps.defaultPdfEngine);
  if (!engine) violations.add("options.engine", `unknown PDF engine ${options?.engine}`);
  const all = options ?? create(ConversionOptionsSchema);
  checkDocumentOptions(all, violations);
  return {
    preset: preset!,
    stripMetadata: all.stripMetadata,
    maxWidth: all.maxWidth,
    maxHeight: all.maxHeight,
    engine: engine!,
    layout: pageLayoutOf(all),
    metadata: documentMetadataOf(all),
    pdfa: all.pdfa,
    ocrLanguages: [...all.ocrLanguages],
  };
}

/** One page's image: fetched only from our own bucket, never from an address the caller chose (SSRF guard). */
function validatePage(page: { imageUrl: string; inputFormat: string }, violations: Violations, deps: RequestPolicy, field: (name: string) => string) {
  if (page.imageUrl === "") violations.add(field("imageUrl"), "is required");
  else if (!deps.keyOfUrl(page.imageUrl)) violations.add(field("imageUrl"), "must be a presigned URL of an object in the service's storage bucket");
  violations.check(isInputFormat(page.inputFormat), field("inputFormat"), `must be one of ${INPUT_FORMATS.join(", ")}`);
  return { imageUrl: page.imageUrl, inputFormat: page.inputFormat as InputFormat };
}

export function validate(req: ImageServiceConvertImageRequest, deps: RequestPolicy): DocumentRequest {
  const violations = new Violations();
  violations.check(UUID.test(req.conversionId), "conversionId", "must be a UUID");
  const page = validatePage(req, violations, deps, (name) => name);
  const options = validateOptions(req.options, violations, deps);
  violations.throwIfAny();
  return { conversionId: req.conversionId.toLowerCase(), pages: [page], ...options };
}

export function validateDocument(req: ImageServiceConvertDocumentRequest, deps: RequestPolicy): DocumentRequest {
  const violations = new Violations();
  violations.check(UUID.test(req.conversionId), "conversionId", "must be a UUID");
  if (req.pages.length === 0) violations.add("pages", "must name at least one page");
  const max = deps.documentLimits.maxPages;
  if (req.pages.length > max) violations.add("pages", `must name at most ${max} pages`);
  const pages = req.pages.slice(0, max).map((page, i) => validatePage(page, violations, deps, (name) => `pages[${i}].${name}`));
  const options = validateOptions(req.options, violations, deps);
  violations.throwIfAny();
  return { conversionId: req.conversionId.toLowerCase(), pages, ...options };
}

/**
 * Whether a one-image request asks for nothing but its image: no layout, metadata, PDF/A or OCR. It then gets
 * ImageMagick's own PDF (or the passthrough engine's) through pipeline.ts; anything else needs the document writer.
 */
export function isPlainImage(request: DocumentRequest): boolean {
  const { layout, metadata, pdfa, ocrLanguages } = request;
  return layout.size === undefined && layout.margin === 0 && Object.keys(metadata).length === 0 && !pdfa && ocrLanguages.length === 0;
}

/** A one-image request in the pipeline's terms (ImageMagick's own PDF, or the passthrough engine's). */
export function singleImage(request: DocumentRequest): ConversionRequest {
  const { imageUrl, inputFormat } = request.pages[0]!;
  const { conversionId, preset, stripMetadata, maxWidth, maxHeight, engine } = request;
  return { conversionId, imageUrl, inputFormat, preset, stripMetadata, maxWidth, maxHeight, engine };
}

const FITS: Record<PageFit, Fit> = {
  [PageFit.UNSPECIFIED]: "into",
  [PageFit.INTO]: "into",
  [PageFit.FILL]: "fill",
  [PageFit.EXACT]: "exact",
  [PageFit.SHRINK]: "shrink",
};

const ORIENTATIONS: Record<PageOrientation, Orientation> = {
  [PageOrientation.UNSPECIFIED]: "auto",
  [PageOrientation.AUTO]: "auto",
  [PageOrientation.PORTRAIT]: "portrait",
  [PageOrientation.LANDSCAPE]: "landscape",
};

/** The layout of checked options (checkDocumentOptions): unknown values were refused there. */
function pageLayoutOf(options: ConversionOptions): PageLayout {
  const layout = options.layout;
  return {
    size: pageSizeOf(options),
    fit: FITS[layout?.fit ?? PageFit.UNSPECIFIED] ?? "into",
    margin: layout?.margin ?? 0,
    orientation: ORIENTATIONS[layout?.orientation ?? PageOrientation.UNSPECIFIED] ?? "auto",
  };
}

function documentMetadataOf(options: ConversionOptions): DocumentMetadata {
  const metadata = options.metadata;
  if (!metadata) return {};
  return {
    ...(metadata.title ? { title: metadata.title } : {}),
    ...(metadata.author ? { author: metadata.author } : {}),
    ...(metadata.subject ? { subject: metadata.subject } : {}),
    ...(metadata.keywords.length > 0 ? { keywords: [...metadata.keywords] } : {}),
    ...(metadata.createdAt ? { createdAt: timestampDate(metadata.createdAt) } : {}),
  };
}
