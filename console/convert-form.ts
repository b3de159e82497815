/**
 * The convert form's choices as ConversionOptions (quality, engine, page layout, title and author, PDF/A, OCR), and
 * whether several images become one PDF. A control that does not apply is disabled: the fit without a page size, the
 * OCR languages without OCR.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { PageSize, type ConversionOptionsSchema, type PageFit, type PdfEngine, type Quality } from "@mcsv/sdk";
import { fillOptionSelects } from "./contract.js";

export type ConversionOptionsInit = MessageInitShape<typeof ConversionOptionsSchema>;

export interface ConvertFormElements {
  quality: HTMLSelectElement;
  engine: HTMLSelectElement;
  onePdf: HTMLInputElement;
  pageSize: HTMLSelectElement;
  fit: HTMLSelectElement;
  margin: HTMLInputElement;
  title: HTMLInputElement;
  author: HTMLInputElement;
  pdfa: HTMLInputElement;
  ocr: HTMLInputElement;
  ocrLanguages: HTMLInputElement;
}

/** What the form asks for, or what is wrong with it. */
export type Choices = { options: ConversionOptionsInit; onePdf: boolean; documentName: string; problem?: undefined } | { problem: string };

const POINTS_PER_MM = 72 / 25.4;
/** The title names the document's PDF: no directory part, no control characters, not too long. */
const NOT_IN_A_NAME = /[\\/\p{Cc}]/gu;

export class ConvertForm {
  constructor(private readonly elements: ConvertFormElements) {
    fillOptionSelects(elements);
    const showWhatApplies = () => {
      elements.fit.disabled = Number(elements.pageSize.value) === PageSize.UNSPECIFIED;
      elements.ocrLanguages.disabled = !elements.ocr.checked;
    };
    elements.pageSize.addEventListener("change", showWhatApplies);
    elements.ocr.addEventListener("change", showWhatApplies);
    showWhatApplies();
  }

  read(): Choices {
    const e = this.elements;
    const marginMm = e.margin.value.trim() === "" ? 0 : Number(e.margin.value);
    if (!Number.isFinite(marginMm) || marginMm < 0) return { problem: "The margin must be zero or more millimetres." };
    const languages = e.ocr.checked ? e.ocrLanguages.value.split(/[\s+,]+/).filter((language) => language !== "") : [];
    if (e.ocr.checked && languages.length === 0) return { problem: "Name at least one OCR language, such as eng." };
    const size = Number(e.pageSize.value) as PageSize;
    const title = e.title.value.trim();
    const author = e.author.value.trim();
    const options: ConversionOptionsInit = {
      quality: Number(e.quality.value) as Quality,
      engine: Number(e.engine.value) as PdfEngine,
      ...(size !== PageSize.UNSPECIFIED || marginMm > 0
        ? { layout: { size, margin: marginMm * POINTS_PER_MM, ...(size !== PageSize.UNSPECIFIED ? { fit: Number(e.fit.value) as PageFit } : {}) } }
        : {}),
      ...(title || author ? { metadata: { title, author } } : {}),
      pdfa: e.pdfa.checked,
      ocrLanguages: languages,
    };
    const named = title.replace(NOT_IN_A_NAME, "-").slice(0, 200).trim();
    return { options, onePdf: e.onePdf.checked, documentName: named ? `${named}.pdf` : "document.pdf" };
  }
}
