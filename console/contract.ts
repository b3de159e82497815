/** Names of the contract's enums (quality, engine, state) for people, taken from @mcsv/sdk so they follow the contract. */
import type { DescEnum } from "@bufbuild/protobuf";
import { PdfEngineSchema, QualitySchema } from "@mcsv/sdk";
import { el } from "./dom.js";

/** Names that lower-casing would spoil. */
const PROPER_NAMES: Record<string, string> = { IMAGEMAGICK: "ImageMagick" };

/** `QUALITY_LOSSLESS` → "Lossless"; the UNSPECIFIED value leaves the choice to the service. */
export function enumLabel(desc: DescEnum, value: number): string {
  const local = desc.value[value]?.localName ?? String(value);
  if (local === "UNSPECIFIED") return "Service default";
  if (PROPER_NAMES[local]) return PROPER_NAMES[local];
  const words = local.toLowerCase().replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

function fillSelect(select: HTMLSelectElement, desc: DescEnum): void {
  select.replaceChildren(...desc.values.map((v) => el("option", { value: String(v.number) }, enumLabel(desc, v.number))));
}

export function fillOptionSelects(quality: HTMLSelectElement, engine: HTMLSelectElement): void {
  fillSelect(quality, QualitySchema);
  fillSelect(engine, PdfEngineSchema);
}
