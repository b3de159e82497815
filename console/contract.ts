/** Names of the contract's enums (quality, engine, state, page size, fit) for people, taken from @mcsv/sdk so they follow the contract. */
import type { DescEnum } from "@bufbuild/protobuf";
import { PageFit, PageSize, PdfEngineSchema, QualitySchema } from "@mcsv/sdk";
import { el } from "./dom.js";

/** Names that lower-casing would spoil. */
const PROPER_NAMES: Record<string, string> = { IMAGEMAGICK: "ImageMagick" };

/** The page sizes the console offers (a custom size is for the SDK and the CLI), the image's own first: the default. */
const PAGE_SIZES: ReadonlyArray<[PageSize, string]> = [
  [PageSize.UNSPECIFIED, "Image size"],
  [PageSize.A4, "A4"],
  [PageSize.LETTER, "Letter"],
];

/** The fits, said as what they do to the image (PAGE_FIT_UNSPECIFIED is PAGE_FIT_INTO, first). */
const FITS: ReadonlyArray<[PageFit, string]> = [
  [PageFit.INTO, "Fit inside the page"],
  [PageFit.FILL, "Fill the page (crop)"],
  [PageFit.EXACT, "Stretch to the page"],
  [PageFit.SHRINK, "Fit inside, never enlarged"],
];

/** `QUALITY_LOSSLESS` → "Lossless"; the UNSPECIFIED value leaves the choice to the service. */
export function enumLabel(desc: DescEnum, value: number): string {
  const local = desc.value[value]?.localName ?? String(value);
  if (local === "UNSPECIFIED") return "Service default";
  if (PROPER_NAMES[local]) return PROPER_NAMES[local];
  const words = local.toLowerCase().replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

function fillSelect(select: HTMLSelectElement, choices: ReadonlyArray<[number, string]>): void {
  select.replaceChildren(...choices.map(([value, label]) => el("option", { value: String(value) }, label)));
}

const enumChoices = (desc: DescEnum): Array<[number, string]> => desc.values.map((v) => [v.number, enumLabel(desc, v.number)]);

export function fillOptionSelects(selects: { quality: HTMLSelectElement; engine: HTMLSelectElement; pageSize: HTMLSelectElement; fit: HTMLSelectElement }): void {
  fillSelect(selects.quality, enumChoices(QualitySchema));
  fillSelect(selects.engine, enumChoices(PdfEngineSchema));
  fillSelect(selects.pageSize, PAGE_SIZES);
  fillSelect(selects.fit, FITS);
}
