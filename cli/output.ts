/** What commands print: a message as canonical JSON (--json), or short aligned text for people. */
import { toJson, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";

/** Prints a response as protobuf's canonical JSON (the form buf curl and the HTTP API use). */
export function printMessage<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>): void {
  printJson(toJson(schema, message));
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** Rows as left-aligned columns under a header. */
export function printTable(header: string[], rows: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join("  ");
  process.stdout.write(`${[line(header), ...rows.map(line)].join("\n")}\n`);
}

/** "name: value" lines, skipping empty values. */
export function printFields(fields: Array<[string, string | undefined]>): void {
  const shown = fields.filter((f): f is [string, string] => f[1] !== undefined && f[1] !== "");
  const width = Math.max(...shown.map(([name]) => name.length));
  process.stdout.write(`${shown.map(([name, value]) => `${`${name}:`.padEnd(width + 1)} ${value}`).join("\n")}\n`);
}

export const time = (ts: Timestamp | undefined): string => (ts ? timestampDate(ts).toISOString() : "");

/** An enum value's name in lower case without its prefix: ConversionState.SUCCEEDED → "succeeded". */
export const enumName = (names: Record<number, string>, value: number): string => (names[value] ?? String(value)).toLowerCase();
