/**
 * ConversionOptions at the gateway: the PDF engine is validated like the other enums, stored in the conversion's
 * jsonb options by name, and read back; a row stored before the field existed reads as PDF_ENGINE_UNSPECIFIED, and a
 * request without an engine stores (and digests) exactly what it did before.
 */
import { create } from "@bufbuild/protobuf";
import { ConversionOptionsSchema, PdfEngine, Quality } from "@mcsv/sdk";
import { optionsFromJson, optionsToJson } from "../../services/user/records.js";
import { checkOptions } from "../../services/user/validation.js";

function violationsOf(options: Parameters<typeof checkOptions>[0]): string[] {
  const fields: string[] = [];
  checkOptions(options, { add: (field) => fields.push(field) });
  return fields;
}

test("an unknown engine is a violation of options.engine; the known ones are fine", () => {
  expect(violationsOf(create(ConversionOptionsSchema, { engine: 99 as PdfEngine }))).toEqual(["options.engine"]);
  expect(violationsOf(create(ConversionOptionsSchema, { engine: 99 as PdfEngine, quality: 99 as Quality })).sort()).toEqual(["options.engine", "options.quality"]);
  for (const engine of [PdfEngine.UNSPECIFIED, PdfEngine.IMAGEMAGICK, PdfEngine.PASSTHROUGH]) {
    expect(violationsOf(create(ConversionOptionsSchema, { engine }))).toEqual([]);
  }
  expect(violationsOf(undefined)).toEqual([]);
});

test("the engine is stored by name and read back; rows without it read as UNSPECIFIED; unset stores nothing new", () => {
  const options = create(ConversionOptionsSchema, { quality: Quality.LOSSLESS, engine: PdfEngine.PASSTHROUGH });
  const json = optionsToJson(options);
  expect(json).toEqual({ quality: "QUALITY_LOSSLESS", engine: "PDF_ENGINE_PASSTHROUGH" });
  expect(optionsFromJson(json).engine).toBe(PdfEngine.PASSTHROUGH);

  const old = optionsFromJson({ quality: "QUALITY_HIGH", maxWidth: 800 });
  expect([old.engine, old.quality, old.maxWidth]).toEqual([PdfEngine.UNSPECIFIED, Quality.HIGH, 800]);
  // The request digest (idempotency) is built from this JSON: without an engine it is what it always was.
  expect(optionsToJson(create(ConversionOptionsSchema, { quality: Quality.HIGH }))).toEqual({ quality: "QUALITY_HIGH" });
});
