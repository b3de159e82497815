/**
 * A document: one PDF of one or more images, a page each, laid out, described and, on request, archivable (PDF/A-2b)
 * and searchable (OCR). Each page goes through the stages of a one-image conversion (fetch → normalise → pdf), one
 * page at a time, so that only one page is ever decoded; what the pdf stage keeps of a page is its encoded image
 * (an image XObject): the original's own data (passthrough), or what ImageMagick encoded at the quality preset.
 * The document writer (pdf-document.ts) then places every page's image by the same layout, whatever its engine;
 * ocrmypdf adds the text layer (ocr stage), and the PDF is stored (upload stage).
 *
 * ImageMagick 6 cannot write a title, XMP or a page larger than its image without changing pixels; that is why a
 * document does not use ImageMagick's own PDF, and why a plain one-image conversion still does (pipeline.ts).
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { fetchSource } from "./fetch-source.js";
import type { OcrEngine } from "./ocr.js";
import { conversionBytesTotal, pdfEnginesTotal } from "./metrics.js";
import { normaliseOpened, openImage, type InputFormat, type NormalisedImage } from "./normalise.js";
import { inspectPassthrough, preparePassthrough, type PreparedPassthrough } from "./passthrough-pdf.js";
import { placeImage, type PageLayout } from "./page-layout.js";
import { pdfaAllows, srgbProfile, writeDocument, type DocumentMetadata, type DocumentPage, type ImageObject } from "./pdf-document.js";
import { choosePassthrough, type FallbackReason, type PdfEngineName } from "./pdf-engine.js";
import { normaliseOptionsOf, storePdf, timed, type ConversionResult, type PdfEngineUsed, type PipelineDeps } from "./pipeline.js";
import type { QualityPreset } from "./quality.js";

export interface DocumentDeps extends PipelineDeps {
  ocr: OcrEngine;
  /** OCR_TIMEOUT_MS: the time OCR may take per page. */
  ocrTimeoutMs: number;
  /** DOCUMENT_MAX_PAGES and DOCUMENT_MAX_PIXELS, enforced again here: the image service trusts no caller. */
  documentLimits: { maxPages: number; maxPixels: number };
}

/** A validated document request. */
export interface DocumentRequest {
  conversionId: string;
  pages: ReadonlyArray<{ imageUrl: string; inputFormat: InputFormat }>;
  preset: QualityPreset;
  stripMetadata: boolean;
  maxWidth: number;
  maxHeight: number;
  engine: PdfEngineName;
  layout: PageLayout;
  metadata: DocumentMetadata;
  pdfa: boolean;
  /** Tesseract languages; empty: no OCR. */
  ocrLanguages: readonly string[];
}

export interface DocumentResult extends ConversionResult {
  pageCount: number;
  /** The text layer OCR added. */
  text?: { words: number; languages: string[] } | undefined;
}

/** Told after each page is converted (awaited: the caller may pass the progress on before the next page starts). */
export type PageProgress = (pagesDone: number, pageCount: number) => void | Promise<void>;

export async function runDocument(deps: DocumentDeps, request: DocumentRequest, signal?: AbortSignal, onPage?: PageProgress): Promise<DocumentResult> {
  const started = performance.now();
  const id = request.conversionId;
  const { limits, documentLimits } = deps;
  if (request.pages.length > documentLimits.maxPages) {
    throw new ConnectError(`the document has ${request.pages.length} pages, more than the limit of ${documentLimits.maxPages}`, Code.InvalidArgument);
  }
  // A language that is not installed is refused before any page is converted (failed_precondition).
  if (request.ocrLanguages.length > 0) await deps.ocr.checkLanguages(request.ocrLanguages);
  const outputProfile = request.pdfa ? await srgbProfile() : undefined;

  const pages: DocumentPage[] = [];
  const engines: PdfEngineUsed[] = [];
  let inputSize = 0;
  let pixels = 0;
  let encodedBytes = 0;
  for (const [index, page] of request.pages.entries()) {
    signal?.throwIfAborted();
    const source = await timed(deps, "fetch", id, () => fetchSource(page.imageUrl, { maxBytes: limits.maxInputBytes, timeoutMs: limits.fetchTimeoutMs, signal }));
    inputSize += source.byteLength;
    conversionBytesTotal.inc({ direction: "in" }, source.byteLength);
    const { image, engine } = await convertPage(deps, request, page.inputFormat, source, signal);
    pixels += image.width * image.height;
    if (pixels > documentLimits.maxPixels) {
      throw new ConnectError(`the document's images have more pixels together than the limit of ${documentLimits.maxPixels.toLocaleString("en-US")}`, Code.ResourceExhausted);
    }
    encodedBytes += image.data.reduce((sum, piece) => sum + piece.byteLength, 0);
    if (encodedBytes > limits.maxOutputBytes) tooLarge(limits.maxOutputBytes);
    pages.push({ image, placement: placeImage(image.width, image.height, request.layout) });
    engines.push(engine);
    await onPage?.(index + 1, request.pages.length);
  }

  let pdf = await timed(deps, "pdf", id, async (span) => {
    span.setAttributes({ "mcsv.pdf.pages": pages.length, "mcsv.pdf.pdfa": request.pdfa });
    return writeDocument(pages, { metadata: request.metadata, pdfa: request.pdfa, outputProfile });
  });
  if (pdf.byteLength > limits.maxOutputBytes) tooLarge(limits.maxOutputBytes);
  let text: DocumentResult["text"];
  if (request.ocrLanguages.length > 0) {
    const layer = await timed(deps, "ocr", id, () => deps.ocr.addTextLayer(pdf, request.ocrLanguages, signal, deps.ocrTimeoutMs * pages.length));
    if (layer.pdf.byteLength > limits.maxOutputBytes) tooLarge(limits.maxOutputBytes);
    pdf = layer.pdf;
    text = { words: layer.words, languages: layer.languages };
  }
  signal?.throwIfAborted();
  const stored = await timed(deps, "upload", id, () => storePdf(deps.store, id, pdf));
  conversionBytesTotal.inc({ direction: "out" }, pdf.byteLength);
  const first = pages[0]!.image;
  return {
    pdfKey: stored.key,
    pdfUrl: stored.url.url,
    pdfUrlExpiresAt: stored.url.expiresAt,
    inputSize,
    outputSize: pdf.byteLength,
    width: first.width,
    height: first.height,
    durationMs: Math.round(performance.now() - started),
    pdfEngine: engines[0]!,
    pageCount: pages.length,
    text,
  };
}

function tooLarge(max: number): never {
  throw new ConnectError(`the PDF would be larger than the limit of ${max} bytes`, Code.ResourceExhausted);
}

/**
 * One page's image XObject: the passthrough engine's copy of the original when it applies (and PDF/A can hold its
 * colours), else the normalised image as ImageMagick encodes it at the preset (JPEG, or a PNG for LOSSLESS).
 */
async function convertPage(
  deps: DocumentDeps,
  request: DocumentRequest,
  inputFormat: InputFormat,
  source: Uint8Array,
  signal: AbortSignal | undefined,
): Promise<{ image: ImageObject; engine: PdfEngineUsed }> {
  const id = request.conversionId;
  const options = normaliseOptionsOf(deps.limits, request, inputFormat);
  type Prepared = { passthrough: PreparedPassthrough } | { normalised: NormalisedImage; fallback: FallbackReason | undefined };
  const prepared = await timed(deps, "normalise", id, async (): Promise<Prepared> => {
    const opened = await openImage(source, options);
    let fallback: FallbackReason | undefined;
    if (request.engine === "passthrough") {
      const choice = await choosePassthrough(source, opened.metadata, request);
      if (!("fallback" in choice) && !(request.pdfa && !pdfaAllows(choice.image))) {
        pdfEnginesTotal.inc({ engine: "passthrough", fallback: "none" });
        return { passthrough: choice };
      }
      fallback = "fallback" in choice ? choice.fallback : "pdfa-colour";
    }
    pdfEnginesTotal.inc({ engine: "imagemagick", fallback: fallback ?? "none" });
    return { normalised: await normaliseOpened(opened, options), fallback };
  });
  signal?.throwIfAborted();
  return timed(deps, "pdf", id, async (span) => {
    if ("passthrough" in prepared) {
      span.setAttributes({ "mcsv.pdf.engine": "passthrough", "mcsv.pdf.passthrough_mode": prepared.passthrough.mode });
      return { image: prepared.passthrough.image, engine: { engine: "passthrough", mode: prepared.passthrough.mode } };
    }
    span.setAttributes({ "mcsv.pdf.engine": "imagemagick", ...(prepared.fallback ? { "mcsv.pdf.fallback": prepared.fallback } : {}) });
    const encoded = await deps.renderer.encodeImage(prepared.normalised, request.preset, signal);
    // ImageMagick's own JPEG or PNG, read by the passthrough writer: never declined but for a bug.
    const plan = inspectPassthrough(encoded);
    const image = "declined" in plan ? plan : await preparePassthrough(plan);
    if ("declined" in image) throw new ConnectError(`the image ImageMagick encoded could not be placed in the PDF (${image.declined})`, Code.Internal);
    return { image: image.image, engine: { engine: "imagemagick", ...(prepared.fallback ? { fallback: prepared.fallback } : {}) } };
  });
}
