/**
 * A PDF/A-2b check with the tools at hand (no veraPDF here): qpdf for the structure and the objects (`qpdf --json`),
 * poppler's pdffonts for font embedding, and a small XMP reader. It covers what a writer of image documents can get
 * wrong: the file header and trailer, encryption, the XMP identification and its agreement with the Info dictionary,
 * the output intent, device colour under that intent, forbidden filters and image entries, and unembedded fonts.
 * Not covered: content-stream operators, inline images, annotations, fonts' internals, ICC profiles' contents beyond
 * their colour space.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);
const MAX_BUFFER = 256 * 1024 * 1024;

/** An XMP property: a simple value, the x-default (else first) entry of a language alternative, or a Seq/Bag's items. */
export type XmpValue = string | string[];
/** XMP properties by qualified name with the usual prefixes (dc, pdf, xmp, pdfaid, …) whatever the file's own. */
export type XmpProperties = Record<string, XmpValue>;

/** What keeps `pdf` from being PDF/A-2b, one sentence each; empty when it passes every check here. */
export async function checkPdfA2b(pdf: Buffer): Promise<string[]> {
  return inTempFile(pdf, async (file) => {
    const problems: string[] = [];
    const problem = (text: string) => void problems.push(text);

    // File structure: qpdf finds no error or warning; header with a binary comment; nothing after %%EOF.
    try {
      await run("qpdf", ["--check", file], { maxBuffer: MAX_BUFFER });
    } catch (error) {
      const { stdout = "", stderr = "" } = error as { stdout?: string; stderr?: string };
      problem(`qpdf --check is not clean: ${`${stdout}\n${stderr}`.trim().split("\n").slice(-3).join(" / ")}`);
      return problems; // The objects below cannot be trusted.
    }
    const header = /^%PDF-(\d)\.(\d)(?:\r\n|\r|\n)%([\s\S]{4})/.exec(pdf.subarray(0, 64).toString("latin1"));
    if (!header) problem("the header is not %PDF-n.m followed by a comment line");
    else {
      const version = Number(header[1]) + Number(header[2]) / 10;
      if (version < 1.4 || version > 1.7) problem(`PDF ${header[1]}.${header[2]} is not a version PDF/A-2 is based on (1.4 to 1.7)`);
      if ([...header[3]!].some((c) => c.charCodeAt(0) < 128)) problem("the header's comment does not start with four bytes above 127");
    }
    if (!/%%EOF(?:\r\n|\r|\n)?$/.test(pdf.subarray(-32).toString("latin1"))) problem("data follows the last %%EOF");

    const doc = await readObjects(file);
    if (doc.trailer["/Encrypt"] !== undefined) problem("the file is encrypted");
    const id = doc.trailer["/ID"];
    if (!Array.isArray(id) || id.length !== 2 || !id.every((s) => typeof s === "string")) problem("the trailer has no /ID of two strings");
    const catalog = asDictionary(doc.resolve(doc.trailer["/Root"]));

    // XMP: present, well-formed UTF-8, identifying PDF/A-2b, and agreeing with the Info dictionary.
    const xmp = await readCatalogXmp(doc, catalog).catch((error: Error) => {
      problem(error.message);
      return undefined;
    });
    if (xmp === null) problem("the catalog has no XMP metadata stream");
    if (xmp) {
      if (xmp["pdfaid:part"] !== "2") problem(`XMP pdfaid:part is ${JSON.stringify(xmp["pdfaid:part"])}, not 2`);
      if (xmp["pdfaid:conformance"] !== "B") problem(`XMP pdfaid:conformance is ${JSON.stringify(xmp["pdfaid:conformance"])}, not B`);
      const info = asDictionary(doc.resolve(doc.trailer["/Info"]));
      for (const disagreement of infoAgainstXmp(info, xmp)) problem(disagreement);
    }

    // Output intent: a GTS_PDFA1 one, whose profile says how many components device colour has.
    const intents = (asArray(doc.resolve(catalog["/OutputIntents"])) ?? []).map((intent) => asDictionary(doc.resolve(intent)));
    const pdfa = intents.find((intent) => intent["/S"] === "/GTS_PDFA1");
    let intentComponents: number | undefined;
    if (!pdfa) problem("there is no OutputIntent with /S /GTS_PDFA1");
    else {
      const profileRef = pdfa["/DestOutputProfile"];
      const profile = doc.streamDictionary(profileRef);
      if (!profile) problem("the PDF/A OutputIntent has no DestOutputProfile stream");
      else {
        intentComponents = Number(profile["/N"]);
        const space = (await doc.streamData(profileRef as string)).toString("latin1", 16, 20);
        const expected: Record<number, string> = { 1: "GRAY", 3: "RGB ", 4: "CMYK" };
        if (expected[intentComponents] !== space) problem(`the output profile has /N ${profile["/N"]} but colour space "${space}"`);
      }
    }

    // Images and filters.
    for (const [name, dictionary] of doc.streams()) {
      const filters = [doc.resolve(dictionary["/Filter"])].flat();
      if (filters.includes("/LZWDecode")) problem(`${name} uses LZWDecode`);
      if (dictionary["/Subtype"] !== "/Image") continue;
      if (dictionary["/Interpolate"] === true) problem(`image ${name} has /Interpolate true`);
      if (dictionary["/Alternates"] !== undefined) problem(`image ${name} has /Alternates`);
      const device = deviceSpace(doc, dictionary["/ColorSpace"]);
      const forbidden = intentComponents === 3 ? "/DeviceCMYK" : intentComponents === 4 ? "/DeviceRGB" : undefined;
      if (device && device === forbidden) problem(`image ${name} is ${device.slice(1)} under a ${intentComponents}-component output intent`);
    }

    // Fonts: every one embedded.
    const { stdout: fonts } = await run("pdffonts", [file], { maxBuffer: MAX_BUFFER });
    for (const line of fonts.split("\n").slice(2)) {
      const columns = line.trim().split(/\s+/);
      // name type… encoding emb sub uni object-number generation: emb is fifth from the end.
      if (columns.length >= 7 && columns[columns.length - 5] !== "yes") problem(`font ${columns[0]} is not embedded`);
    }
    return problems;
  });
}

/** The XMP properties of the document (its catalog's metadata stream), or undefined when it has none. */
export async function readXmp(pdf: Buffer): Promise<XmpProperties | undefined> {
  return inTempFile(pdf, async (file) => {
    const doc = await readObjects(file);
    return (await readCatalogXmp(doc, asDictionary(doc.resolve(doc.trailer["/Root"])))) ?? undefined;
  });
}

async function inTempFile<T>(pdf: Buffer, work: (file: string) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), "mcsv-pdfa-"));
  try {
    const file = join(dir, "in.pdf");
    writeFileSync(file, pdf);
    return await work(file);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------------- objects

type PdfValue = unknown;
type Dictionary = Record<string, PdfValue>;

interface Objects {
  trailer: Dictionary;
  /** The value of a reference ("12 0 R"), a stream's dictionary for a stream; anything else as it is. */
  resolve(value: PdfValue): PdfValue;
  streamDictionary(value: PdfValue): Dictionary | undefined;
  /** A stream's data, decoded. */
  streamData(reference: string): Promise<Buffer>;
  /** Every stream object, by reference, with its dictionary. */
  streams(): Array<[string, Dictionary]>;
}

const REFERENCE = /^(\d+) (\d+) R$/;

/** The file's objects as `qpdf --json` (version 2) gives them: names "/Name", text strings "u:…", references "n g R". */
async function readObjects(file: string): Promise<Objects> {
  const { stdout } = await run("qpdf", ["--json=2", "--json-key=qpdf", "--json-stream-data=none", file], { maxBuffer: MAX_BUFFER });
  const objects = (JSON.parse(stdout) as { qpdf: [unknown, Record<string, { value?: PdfValue; stream?: { dict: Dictionary } }>] }).qpdf[1];
  const entry = (value: PdfValue) => (typeof value === "string" && REFERENCE.test(value) ? objects[`obj:${value}`] : undefined);
  return {
    trailer: asDictionary(objects["trailer"]?.value),
    resolve: (value) => {
      const found = entry(value);
      return found ? (found.stream?.dict ?? found.value) : value;
    },
    streamDictionary: (value) => entry(value)?.stream?.dict,
    async streamData(reference) {
      const [, number, generation] = REFERENCE.exec(reference)!;
      const args = [`--show-object=${number},${generation}`, "--filtered-stream-data", file];
      return (await run("qpdf", args, { encoding: "buffer", maxBuffer: MAX_BUFFER })).stdout;
    },
    streams: () =>
      Object.entries(objects).flatMap(([key, object]): Array<[string, Dictionary]> => (object.stream ? [[key.replace(/^obj:/, ""), object.stream.dict]] : [])),
  };
}

function asDictionary(value: PdfValue): Dictionary {
  return value && typeof value === "object" && !Array.isArray(value) ? (value as Dictionary) : {};
}

function asArray(value: PdfValue): PdfValue[] | undefined {
  return Array.isArray(value) ? value : undefined;
}

/** A text string's text (qpdf writes "u:" before text it decoded, "b:" before bytes in hex). */
function textOf(value: PdfValue): string | undefined {
  if (typeof value !== "string") return undefined;
  if (value.startsWith("u:")) return value.slice(2);
  if (value.startsWith("b:")) return Buffer.from(value.slice(2), "hex").toString("latin1");
  return undefined;
}

/** The device colour space an image's samples are in ("/DeviceCMYK", also as an Indexed base), if any. */
function deviceSpace(doc: Objects, colorSpace: PdfValue): string | undefined {
  const space = doc.resolve(colorSpace);
  if (typeof space === "string") return /^\/Device(Gray|RGB|CMYK)$/.test(space) ? space : undefined;
  const array = asArray(space);
  if (array && array[0] === "/Indexed") return deviceSpace(doc, array[1]);
  return undefined;
}

// ---------------------------------------------------------------------------------------------------- metadata

/** The catalog's XMP; null without a metadata stream; rejects with the reason when the packet is unreadable. */
async function readCatalogXmp(doc: Objects, catalog: Dictionary): Promise<XmpProperties | null> {
  const reference = catalog["/Metadata"];
  const dictionary = doc.streamDictionary(reference);
  if (!dictionary) return null;
  if (dictionary["/Type"] !== "/Metadata" || dictionary["/Subtype"] !== "/XML") throw new Error("the metadata stream is not /Type /Metadata /Subtype /XML");
  const bytes = await doc.streamData(reference as string);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new Error("the XMP packet is not UTF-8");
  }
  const packet = /<\?xpacket begin=[^?]*\?>/.exec(text)?.[0];
  if (packet && /\b(bytes|encoding)=/.test(packet)) throw new Error("the XMP packet header has a bytes or encoding attribute");
  return parseXmp(text);
}

/** Info entries and the XMP properties PDF/A requires to say the same. */
const INFO_IN_XMP: ReadonlyArray<[string, string, "text" | "date" | "list"]> = [
  ["/Title", "dc:title", "text"],
  ["/Author", "dc:creator", "list"],
  ["/Subject", "dc:description", "text"],
  ["/Keywords", "pdf:Keywords", "text"],
  ["/Producer", "pdf:Producer", "text"],
  ["/Creator", "xmp:CreatorTool", "text"],
  ["/CreationDate", "xmp:CreateDate", "date"],
  ["/ModDate", "xmp:ModifyDate", "date"],
];

function infoAgainstXmp(info: Dictionary, xmp: XmpProperties): string[] {
  const problems: string[] = [];
  for (const [key, property, kind] of INFO_IN_XMP) {
    const value = textOf(info[key]);
    if (value === undefined) continue;
    const counterpart = xmp[property];
    const same =
      kind === "list"
        ? Array.isArray(counterpart) && counterpart.length === 1 && counterpart[0] === value
        : kind === "date"
          ? typeof counterpart === "string" && pdfDateMs(value) !== undefined && pdfDateMs(value) === xmpDateMs(counterpart)
          : counterpart === value;
    if (!same) problems.push(`Info ${key.slice(1)} ${JSON.stringify(value)} differs from XMP ${property} ${JSON.stringify(counterpart)}`);
  }
  return problems;
}

/** D:YYYYMMDDHHmmSSOHH'mm' (all but the year optional), in milliseconds since the epoch; no zone = UTC. */
function pdfDateMs(date: string): number | undefined {
  const m = /^D:(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:([Zz+-])(?:(\d{2})'?(\d{2})?'?)?)?$/.exec(date);
  if (!m) return undefined;
  const sign = m[7] === "-" ? -1 : 1;
  const offset = sign * (Number(m[8] ?? 0) * 60 + Number(m[9] ?? 0));
  return Date.UTC(Number(m[1]), Number(m[2] ?? 1) - 1, Number(m[3] ?? 1), Number(m[4] ?? 0), Number(m[5] ?? 0), Number(m[6] ?? 0)) - offset * 60_000;
}

/** YYYY[-MM[-DD[THH:mm[:SS[.s]][zone]]]] (ISO 8601 as XMP writes it), to the second, in ms since the epoch. */
function xmpDateMs(date: string): number | undefined {
  const m = /^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$/.exec(date);
  if (!m) return undefined;
  const zone = m[7] && m[7] !== "Z" ? m[7] : "+00:00";
  const offset = (zone[0] === "-" ? -1 : 1) * (Number(zone.slice(1, 3)) * 60 + Number(zone.slice(4, 6)));
  return Date.UTC(Number(m[1]), Number(m[2] ?? 1) - 1, Number(m[3] ?? 1), Number(m[4] ?? 0), Number(m[5] ?? 0), Number(m[6] ?? 0)) - offset * 60_000;
}

// ---------------------------------------------------------------------------------------------------- XMP

/** The usual prefix of each namespace, so that properties are found whatever prefix a writer chose. */
const PREFIXES: Record<string, string> = {
  "http://purl.org/dc/elements/1.1/": "dc",
  "http://ns.adobe.com/pdf/1.3/": "pdf",
  "http://ns.adobe.com/xap/1.0/": "xmp",
  "http://ns.adobe.com/xap/1.0/mm/": "xmpMM",
  "http://www.aiim.org/pdfa/ns/id/": "pdfaid",
  "http://www.aiim.org/pdfua/ns/id/": "pdfuaid",
  "http://www.w3.org/1999/02/22-rdf-syntax-ns#": "rdf",
  "http://www.w3.org/XML/1998/namespace": "xml",
};
const XML_NAMESPACE = "http://www.w3.org/XML/1998/namespace";

interface XmlElement {
  /** Namespace URI and local name. */
  uri: string;
  local: string;
  attributes: Array<{ uri: string; local: string; value: string }>;
  children: XmlElement[];
  text: string;
}

/**
 * The properties of every rdf:Description in an XMP packet, as attributes or as elements (simple, rdf:Alt, rdf:Seq,
 * rdf:Bag). Throws when the XML is not well-formed (unbalanced tags, an undeclared prefix).
 */
export function parseXmp(xml: string): XmpProperties {
  const properties: XmpProperties = {};
  const name = (uri: string, local: string) => `${PREFIXES[uri] ?? uri}:${local}`;
  const visit = (element: XmlElement) => {
    if (element.uri === RDF && element.local === "Description") {
      for (const attribute of element.attributes) {
        if (attribute.uri !== RDF && attribute.uri !== "" && attribute.uri !== XML_NAMESPACE) properties[name(attribute.uri, attribute.local)] = attribute.value;
      }
      for (const property of element.children) properties[name(property.uri, property.local)] = propertyValue(property);
    }
    element.children.forEach(visit);
  };
  visit(parseXml(xml));
  return properties;
}

const RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#";

function propertyValue(property: XmlElement): XmpValue {
  const container = property.children.find((child) => child.uri === RDF && ["Alt", "Seq", "Bag"].includes(child.local));
  if (!container) return property.text.trim();
  const items = container.children.filter((child) => child.uri === RDF && child.local === "li");
  if (container.local !== "Alt") return items.map((item) => item.text);
  const lang = (item: XmlElement) => item.attributes.find((a) => a.uri === XML_NAMESPACE && a.local === "lang")?.value;
  return (items.find((item) => lang(item) === "x-default") ?? items[0])?.text ?? "";
}

const ENTITIES: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" };

function unescapeXml(text: string): string {
  return text.replace(/&(#x[0-9a-fA-F]+|#\d+|\w+);/g, (whole, entity: string) => {
    if (entity.startsWith("#x")) return String.fromCodePoint(parseInt(entity.slice(2), 16));
    if (entity.startsWith("#")) return String.fromCodePoint(Number(entity.slice(1)));
    const replacement = ENTITIES[entity];
    if (replacement === undefined) throw new Error(`the XMP uses an undefined entity ${whole}`);
    return replacement;
  });
}

/** A small namespace-aware XML reader: elements, attributes, text, CDATA; skips declarations, comments, PIs. */
function parseXml(xml: string): XmlElement {
  const root: XmlElement = { uri: "", local: "#document", attributes: [], children: [], text: "" };
  const open: Array<{ element: XmlElement; qname: string; scope: Map<string, string> }> = [];
  let scope = new Map<string, string>([["xml", XML_NAMESPACE]]);
  const current = () => open.at(-1)?.element ?? root;
  const resolve = (qname: string, isAttribute: boolean) => {
    const colon = qname.indexOf(":");
    if (colon < 0) return { uri: isAttribute ? "" : (scope.get("") ?? ""), local: qname };
    const uri = scope.get(qname.slice(0, colon));
    if (uri === undefined) throw new Error(`the XMP uses an undeclared prefix in ${qname}`);
    return { uri, local: qname.slice(colon + 1) };
  };
  const token = /<!--[\s\S]*?-->|<\?[\s\S]*?\?>|<!\[CDATA\[([\s\S]*?)\]\]>|<!DOCTYPE[^>]*>|<\/([^\s>]+)\s*>|<([^\s/>!?]+)((?:\s+[^\s=]+\s*=\s*(?:"[^"]*"|'[^']*'))*)\s*(\/?)>|([^<]+)|</g;
  for (const match of xml.matchAll(token)) {
    const [whole, cdata, closing, opening, attributeText, selfClosing, text] = match;
    if (cdata !== undefined) current().text += cdata;
    else if (text !== undefined) current().text += unescapeXml(text);
    else if (closing !== undefined) {
      const top = open.pop();
      if (!top || top.qname !== closing) throw new Error(`the XMP is not well-formed: </${closing}> closes ${top ? `<${top.qname}>` : "nothing"}`);
      scope = top.scope;
    } else if (opening !== undefined) {
      const raw = [...(attributeText ?? "").matchAll(/([^\s=]+)\s*=\s*(?:"([^"]*)"|'([^']*)')/g)].map((a) => ({ qname: a[1]!, value: unescapeXml(a[2] ?? a[3] ?? "") }));
      const outer = scope;
      scope = new Map(scope);
      for (const { qname, value } of raw) {
        if (qname === "xmlns") scope.set("", value);
        else if (qname.startsWith("xmlns:")) scope.set(qname.slice(6), value);
      }
      const element: XmlElement = {
        ...resolve(opening, false),
        attributes: raw.filter(({ qname }) => qname !== "xmlns" && !qname.startsWith("xmlns:")).map(({ qname, value }) => ({ ...resolve(qname, true), value })),
        children: [],
        text: "",
      };
      current().children.push(element);
      if (selfClosing) scope = outer;
      else open.push({ element, qname: opening, scope: outer });
    } else if (whole === "<") throw new Error("the XMP is not well-formed: a stray <");
  }
  if (open.length > 0) throw new Error(`the XMP is not well-formed: <${open.at(-1)!.qname}> is never closed`);
  return root;
}
