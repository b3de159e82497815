/**
 * Property tests: every mcsv.v1 message survives the binary and the canonical JSON encodings unchanged.
 * The messages come from the descriptors of @mcsv/sdk, and the arbitraries from each message's descriptor, so a
 * new message or field is covered without touching this file.
 */
import {
  create,
  equals,
  fromBinary,
  fromJsonString,
  isFieldSet,
  toBinary,
  toJsonString,
  ScalarType,
  type DescField,
  type DescMessage,
} from "@bufbuild/protobuf";
import { nestedTypes } from "@bufbuild/protobuf/reflect";
import fc from "fast-check";
import { sdkFiles } from "./support.js";

const NUM_RUNS = 150;
/** How many levels of nested messages an arbitrary message may have. */
const MAX_DEPTH = 3;

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const UINT64_MAX = 2n ** 64n - 1n;

const text = fc.string({ unit: "grapheme", maxLength: 16 });
// protobuf-es drops a "__proto__" key when it parses JSON (its guard against prototype pollution), so that one key
// cannot round-trip through JSON, by design; every other string can.
const objectKey = text.filter((k) => k !== "__proto__");

function int64(min: bigint, max: bigint): fc.Arbitrary<bigint> {
  const edges = [min, max, 0n, 1n, 2n ** 53n, 2n ** 53n + 1n, 2n ** 32n].filter((v) => v >= min && v <= max);
  return fc.oneof(fc.constantFrom(...edges), fc.bigInt({ min, max }));
}

function scalar(type: ScalarType): fc.Arbitrary<unknown> {
  switch (type) {
    case ScalarType.DOUBLE:
      // JSON has no negative zero (JSON.stringify(-0) is "0"): the one double a JSON round trip cannot keep.
      return fc.double({ noNaN: true }).map((x) => (Object.is(x, -0) ? 0 : x));
    case ScalarType.FLOAT:
      return fc.float({ noNaN: true }).map((x) => (Object.is(x, -0) ? 0 : x));
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return int64(INT64_MIN, INT64_MAX);
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return int64(0n, UINT64_MAX);
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
      return fc.integer({ min: -0x8000_0000, max: 0x7fff_ffff });
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return fc.integer({ min: 0, max: 0xffff_ffff });
    case ScalarType.BOOL:
      return fc.boolean();
    case ScalarType.STRING:
      return text;
    case ScalarType.BYTES:
      return fc.uint8Array({ maxLength: 32 });
  }
}

/** Any JSON value that google.protobuf.Value can hold: its numbers are finite doubles. */
const { json } = fc.letrec<{ json: unknown }>((tie) => ({
  json: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    fc.constant(null),
    fc.boolean(),
    fc.double({ noNaN: true, noDefaultInfinity: true }),
    text,
    fc.array(tie("json"), { maxLength: 3 }),
    fc.dictionary(objectKey, tie("json"), { maxKeys: 3, noNullPrototype: true }),
  ),
}));
const jsonObject = fc.dictionary(objectKey, json, { maxKeys: 4, noNullPrototype: true });

const MAX_SECONDS_TIMESTAMP = 253_402_300_799n; // 9999-12-31T23:59:59Z
const MIN_SECONDS_TIMESTAMP = -62_135_596_800n; // 0001-01-01T00:00:00Z
const MAX_SECONDS_DURATION = 315_576_000_000n;
const nanos = fc.integer({ min: 0, max: 999_999_999 });

/** The values of message-typed fields of the well-known types, as protobuf-es represents them in a message. */
function wellKnown(message: DescMessage): fc.Arbitrary<unknown> | undefined {
  switch (message.typeName) {
    case "google.protobuf.Timestamp":
      return fc.record({ seconds: int64(MIN_SECONDS_TIMESTAMP, MAX_SECONDS_TIMESTAMP), nanos });
    case "google.protobuf.Duration":
      return fc
        .record({ seconds: int64(-MAX_SECONDS_DURATION, MAX_SECONDS_DURATION), nanos })
        .map(({ seconds, nanos }) => ({ seconds, nanos: seconds < 0n ? -nanos : nanos }));
    case "google.protobuf.Struct": // a JsonObject in protobuf-es
      return jsonObject;
    case "google.protobuf.Value": // a JsonValue
      return json;
    case "google.protobuf.ListValue": // a JsonValue[]
      return fc.array(json, { maxLength: 4 });
  }
  if (message.typeName.startsWith("google.protobuf.")) {
    const wrapped = message.fields[0];
    if (message.typeName.endsWith("Value") && wrapped?.fieldKind === "scalar") return scalar(wrapped.scalar); // unboxed
    throw new Error(`roundtrip.test.ts has no arbitrary for ${message.typeName}; add one`);
  }
  return undefined;
}

function enumValue(field: DescField & { enum: NonNullable<DescField["enum"]> }): fc.Arbitrary<number> {
  const known = fc.constantFrom(...field.enum.values.map((v) => v.number));
  // proto3 enums are open: a number without a name must survive too.
  return field.enum.open ? fc.oneof({ weight: 9, arbitrary: known }, { weight: 1, arbitrary: fc.integer({ min: -5, max: 1000 }) }) : known;
}

/** The value of one field (a list for a repeated field, an object for a map); undefined leaves it unset. */
function fieldValue(field: DescField, depth: number): fc.Arbitrary<unknown> {
  const message = (desc: DescMessage): fc.Arbitrary<unknown> | undefined =>
    wellKnown(desc) ?? (depth > 0 ? messageInit(desc, depth - 1) : undefined);
  switch (field.fieldKind) {
    case "scalar":
      return scalar(field.scalar);
    case "enum":
      return enumValue(field);
    case "message":
      return message(field.message) ?? fc.constant(undefined);
    case "list": {
      const item = field.listKind === "scalar" ? scalar(field.scalar) : field.listKind === "enum" ? enumValue(field) : message(field.message);
      return item ? fc.array(item, { maxLength: 4 }) : fc.constant([]);
    }
    case "map": {
      const value = field.mapKind === "scalar" ? scalar(field.scalar) : field.mapKind === "enum" ? enumValue(field) : message(field.message);
      const key =
        field.mapKey === ScalarType.STRING ? objectKey : field.mapKey === ScalarType.BOOL ? fc.constantFrom("true", "false") : scalar(field.mapKey).map(String);
      return value ? fc.dictionary(key, value, { maxKeys: 4, noNullPrototype: true }) : fc.constant({});
    }
  }
}

/** An init object for create(): every field and oneof of the message, by its local name. */
function messageInit(desc: DescMessage, depth: number): fc.Arbitrary<Record<string, unknown>> {
  const record: Record<string, fc.Arbitrary<unknown>> = {};
  for (const member of desc.members) {
    if (member.kind === "oneof") {
      record[member.localName] = fc.oneof(
        fc.constant(undefined),
        ...member.fields.map((field) => fieldValue(field, depth).map((value) => (value === undefined ? undefined : { case: field.localName, value }))),
      );
    } else {
      record[member.localName] = fieldValue(member, depth);
    }
  }
  return fc.record(record).map((init) => Object.fromEntries(Object.entries(init).filter(([, v]) => v !== undefined)));
}

const messages = sdkFiles().flatMap((file) =>
  [...nestedTypes(file)].filter((type): type is DescMessage => type.kind === "message"),
);

test("the registry has the mcsv.v1 messages", () => {
  expect(messages.map((m) => m.typeName)).toEqual(expect.arrayContaining(["mcsv.v1.Conversion", "mcsv.v1.Job", "mcsv.v1.ConvertImageRequest"]));
});

describe.each(messages.map((m) => [m.typeName, m] as const))("%s", (_name, desc) => {
  const arbitrary = messageInit(desc, MAX_DEPTH).map((init) => create(desc, init));

  test("the arbitrary sets every field", () => {
    const samples = fc.sample(arbitrary, { numRuns: 200, seed: 1 });
    const unset = desc.fields.filter((field) => !samples.some((message) => isFieldSet(message, field)));
    expect(unset.map((field) => field.name)).toEqual([]);
  });

  test("binary round trip", () => {
    fc.assert(
      fc.property(arbitrary, (message) => {
        expect(equals(desc, fromBinary(desc, toBinary(desc, message)), message)).toBe(true);
      }),
      { numRuns: NUM_RUNS },
    );
  });

  test("JSON round trip", () => {
    fc.assert(
      fc.property(arbitrary, (message) => {
        const json = toJsonString(desc, message);
        expect(equals(desc, fromJsonString(desc, json), message)).toBe(true);
      }),
      { numRuns: NUM_RUNS },
    );
  });
});
