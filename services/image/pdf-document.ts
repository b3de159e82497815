/**
 * Writes a PDF document of image pages: one page per image XObject (an ImageObject, as the passthrough code builds
 * them from a JPEG or PNG), laid out by page-layout.ts, with the document's metadata in its Info dictionary and, when
 * there is any or for PDF/A, in an XMP packet; optionally PDF/A-2b (an sRGB output intent, the XMP identification).
 *
 * The pieces are written with their offsets computed as they go and joined once, so a large image's data is copied
 * once, into the file.
 */
import { createHash } from "node:crypto";
import { crc32 } from "node:zlib";
import sharp from "sharp";
import type { Placement } from "./page-layout.js";

/** An image XObject, ready for a PDF page: what the passthrough code (passthrough-pdf.ts) builds from a JPEG or PNG. */
export interface ImageObject {
  width: number;
  height: number;
  /** The image XObject's dictionary entries other than Type, Subtype, Width, Height, Length and ColorSpace. */
  entries: string;
  colorSpace: string | { icc: Buffer; components: number; alternate: string };
  /** The stream's bytes in pieces, joined only once, into the PDF (a large image's data is copied once). */
  data: Buffer[];
  smask?: { data: Buffer[]; entries: string };
}

export interface DocumentPage {
  image: ImageObject;
  placement: Placement;
}

export interface DocumentMetadata {
  title?: string;
  author?: string;
  subject?: string;
  keywords?: readonly string[];
  createdAt?: Date;
}

export interface DocumentOptions {
  metadata?: DocumentMetadata;
  /** Write PDF/A-2b. */
  pdfa?: boolean;
  /** The sRGB ICC profile of the PDF/A output intent (see srgbProfile). */
  outputProfile?: Buffer;
  /** Fixed clock for tests. */
  now?: Date;
}

/** The Info dictionary's and the XMP's producer. */
const PRODUCER = "mcsv";

/**
 * Whether PDF/A-2b with an sRGB output intent can take the image as it is: device CMYK samples have no meaning under
 * an RGB intent (an ICC-based CMYK image does), and LZW and interpolation are forbidden outright. Our ImageObjects
 * never carry the last two; the check is here so that this is the one place that says what PDF/A refuses.
 */
export function pdfaAllows(image: ImageObject): boolean {
  const deviceCmyk = typeof image.colorSpace === "string" && image.colorSpace.includes("/DeviceCMYK");
  return !deviceCmyk && !/\/LZWDecode|\/Interpolate true/.test(`${image.entries} ${image.smask?.entries ?? ""}`);
}

/** A PDF 1.7 with one page per entry of `pages`, in order. */
export function writeDocument(pages: readonly DocumentPage[], options: DocumentOptions = {}): Buffer {
  if (pages.length === 0) throw new Error("a PDF document needs at least one page");
  const pdfa = options.pdfa ?? false;
  if (pdfa) {
    if (!options.outputProfile) throw new Error("PDF/A needs the output intent's ICC profile (srgbProfile)");
    const refused = pages.findIndex((page) => !pdfaAllows(page.image));
    if (refused >= 0) throw new Error(`page ${refused + 1}: PDF/A with an sRGB output intent cannot take this image (DeviceCMYK)`);
  }
  const info = documentInfo(options);
  const objects = new PdfObjects();
  const catalog = objects.reserve();
  const pageTree = objects.reserve();
  const kids = pages.map((page) => writePage(objects, page, pageTree));
  objects.set(pageTree, `<< /Type /Pages /Kids [${kids.map(ref).join(" ")}] /Count ${kids.length} >>`);
  const infoRef = objects.add(infoDictionary(info));
  let extra = "";
  if (options.metadata || pdfa) {
    const xmp = Buffer.from(xmpPacket(info, pdfa), "utf8");
    // Uncompressed, so that tools which do not parse PDF can still find the packet (and PDF/A wants it so).
    extra += ` /Metadata ${ref(objects.add(stream("/Type /Metadata /Subtype /XML", [xmp])))}`;
  }
  if (pdfa) {
    const profile = objects.add(stream("/N 3", [options.outputProfile!]));
    extra += ` /OutputIntents [<< /Type /OutputIntent /S /GTS_PDFA1 /OutputConditionIdentifier (sRGB IEC61966-2.1) /Info (sRGB IEC61966-2.1) /DestOutputProfile ${ref(profile)} >>]`;
  }
  objects.set(catalog, `<< /Type /Catalog /Pages ${ref(pageTree)}${extra} >>`);
  return objects.serialise(catalog, infoRef);
}

/** libvips' built-in sRGB profile (ICC v4, 480 bytes), computed once. */
export function srgbProfile(): Promise<Buffer> {
  srgb ??= (async () => {
    const pixel = await sharp({ create: { width: 1, height: 1, channels: 3, background: "#ffffff" } }).withIccProfile("srgb").png().toBuffer();
    const { icc } = await sharp(pixel).metadata();
    if (!icc) throw new Error("libvips attached no sRGB profile");
    return icc;
  })();
  return srgb;
}
let srgb: Promise<Buffer> | undefined;

// ---------------------------------------------------------------------------------------------------- pages

/** The page, its content, its image and the image's profile and soft mask; returns the page's object number. */
function writePage(objects: PdfObjects, { image, placement }: DocumentPage, parent: number): number {
  const page = objects.reserve();
  const content = objects.reserve();
  const xobject = objects.reserve();
  const profile = typeof image.colorSpace === "string" ? undefined : objects.reserve();
  const smask = image.smask ? objects.reserve() : undefined;
  const { pageWidth, pageHeight, x, y, width, height, clip } = placement;
  const clipPath = clip ? `${num(clip.x)} ${num(clip.y)} ${num(clip.width)} ${num(clip.height)} re W n ` : "";
  objects.set(
    page,
    `<< /Type /Page /Parent ${ref(parent)} /MediaBox [0 0 ${num(pageWidth)} ${num(pageHeight)}] /Resources << /XObject << /Im0 ${ref(xobject)} >> >> /Contents ${ref(content)} >>`,
  );
  objects.set(content, stream("", [Buffer.from(`q ${clipPath}${num(width)} 0 0 ${num(height)} ${num(x)} ${num(y)} cm /Im0 Do Q`, "latin1")]));
  const colorSpace = typeof image.colorSpace === "string" ? image.colorSpace : `[/ICCBased ${ref(profile!)}]`;
  const imageDictionary = `/Type /XObject /Subtype /Image /Width ${image.width} /Height ${image.height} /ColorSpace ${colorSpace} ${image.entries}`;
  objects.set(xobject, stream(`${imageDictionary}${smask ? ` /SMask ${ref(smask)}` : ""}`, image.data, true));
  if (typeof image.colorSpace !== "string") {
    objects.set(profile!, stream(`/N ${image.colorSpace.components} /Alternate ${image.colorSpace.alternate}`, [image.colorSpace.icc], true));
  }
  if (image.smask) objects.set(smask!, stream(`/Type /XObject /Subtype /Image /Width ${image.width} /Height ${image.height} ${image.smask.entries}`, image.smask.data, true));
  return page;
}

// ---------------------------------------------------------------------------------------------------- metadata

/** The metadata as written, in both the Info dictionary and the XMP packet (PDF/A requires them equal). */
interface DocumentInfo {
  title?: string | undefined;
  author?: string | undefined;
  subject?: string | undefined;
  keywords?: string | undefined;
  created: Date;
  /** When the metadata was written (XMP's MetadataDate). */
  written: Date;
}

function documentInfo({ metadata = {}, now = new Date() }: DocumentOptions): DocumentInfo {
  const created = metadata.createdAt ?? now;
  if (Number.isNaN(created.getTime()) || Number.isNaN(now.getTime())) throw new Error("invalid date in the document's metadata");
  return {
    title: cleanText(metadata.title),
    author: cleanText(metadata.author),
    subject: cleanText(metadata.subject),
    keywords: cleanText(metadata.keywords?.join(", ")),
    created,
    written: now,
  };
}

/**
 * The text without what XML 1.0 cannot carry even escaped (control characters other than tab and line breaks, lone
 * surrogates, U+FFFE/U+FFFF), so that the Info dictionary and the XMP say the same; undefined when nothing is left.
 */
function cleanText(text: string | undefined): string | undefined {
  const cleaned = text?.replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, "");
  return cleaned ? cleaned : undefined;
}

function infoDictionary(info: DocumentInfo): string {
  const entries: Array<[string, string | undefined]> = [
    ["Title", info.title],
    ["Author", info.author],
    ["Subject", info.subject],
    ["Keywords", info.keywords],
    ["Producer", PRODUCER],
    ["CreationDate", pdfDate(info.created)],
    ["ModDate", pdfDate(info.created)],
  ];
  return `<< ${entries
    .filter((entry): entry is [string, string] => entry[1] !== undefined)
    .map(([key, value]) => `/${key} ${pdfTextString(value)}`)
    .join(" ")} >>`;
}

/** A PDF text string: literal when printable ASCII (with `\`, `(` and `)` escaped), else UTF-16BE with its BOM, in hex. */
function pdfTextString(text: string): string {
  if (/^[\x20-\x7e]*$/.test(text)) return `(${text.replace(/[\\()]/g, "\\$&")})`;
  return `<${Buffer.from(`\ufeff${text}`, "utf16le").swap16().toString("hex").toUpperCase()}>`;
}

const two = (n: number) => String(n).padStart(2, "0");

/** D:YYYYMMDDHHmmSS+00'00', in UTC. */
function pdfDate(date: Date): string {
  return `D:${date.getUTCFullYear()}${two(date.getUTCMonth() + 1)}${two(date.getUTCDate())}${two(date.getUTCHours())}${two(date.getUTCMinutes())}${two(date.getUTCSeconds())}+00'00'`;
}

/** The same instant as pdfDate, to the second, as XMP writes it. */
function xmpDate(date: Date): string {
  return `${date.toISOString().slice(0, 19)}+00:00`;
}

const XML_ESCAPES: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;" };
const xml = (text: string) => text.replace(/[&<>"']/g, (c) => XML_ESCAPES[c]!);

/** The XMP packet: the Info entries' equivalents, and for PDF/A its identification (part 2, conformance B). */
function xmpPacket(info: DocumentInfo, pdfa: boolean): string {
  const alt = (text: string) => `<rdf:Alt><rdf:li xml:lang="x-default">${xml(text)}</rdf:li></rdf:Alt>`;
  const properties = [
    `<dc:format>application/pdf</dc:format>`,
    info.title && `<dc:title>${alt(info.title)}</dc:title>`,
    info.author && `<dc:creator><rdf:Seq><rdf:li>${xml(info.author)}</rdf:li></rdf:Seq></dc:creator>`,
    info.subject && `<dc:description>${alt(info.subject)}</dc:description>`,
    info.keywords && `<pdf:Keywords>${xml(info.keywords)}</pdf:Keywords>`,
    `<pdf:Producer>${xml(PRODUCER)}</pdf:Producer>`,
    `<xmp:CreateDate>${xmpDate(info.created)}</xmp:CreateDate>`,
    `<xmp:ModifyDate>${xmpDate(info.created)}</xmp:ModifyDate>`,
    `<xmp:MetadataDate>${xmpDate(info.written)}</xmp:MetadataDate>`,
    pdfa && `<pdfaid:part>2</pdfaid:part>`,
    pdfa && `<pdfaid:conformance>B</pdfaid:conformance>`,
  ].filter(Boolean);
  const namespaces = [
    `xmlns:dc="http://purl.org/dc/elements/1.1/"`,
    `xmlns:pdf="http://ns.adobe.com/pdf/1.3/"`,
    `xmlns:xmp="http://ns.adobe.com/xap/1.0/"`,
    ...(pdfa ? [`xmlns:pdfaid="http://www.aiim.org/pdfa/ns/id/"`] : []),
  ];
  // Padding lets a tool edit the packet in place; the BOM in `begin` says the packet is UTF-8.
  const padding = `${" ".repeat(99)}\n`.repeat(20);
  return [
    `<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>`,
    `<x:xmpmeta xmlns:x="adobe:ns:meta/">`,
    ` <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">`,
    `  <rdf:Description rdf:about="" ${namespaces.join(" ")}>`,
    ...properties.map((property) => `   ${property}`),
    `  </rdf:Description>`,
    ` </rdf:RDF>`,
    `</x:xmpmeta>`,
    `${padding}<?xpacket end="w"?>`,
  ].join("\n");
}

// ---------------------------------------------------------------------------------------------------- file structure

const ref = (objectNumber: number) => `${objectNumber} 0 R`;

/** A number as PDF writes it: at most three decimals, never in exponent notation. */
function num(value: number): string {
  return String(Math.round(value * 1000) / 1000);
}

/** A stream object's body: dictionary, data pieces (`bulk` for image data, see PdfObjects.serialise), endstream. */
function stream(dictionary: string, data: Buffer[], bulk = false): StreamBody {
  const head = Buffer.from(`<< ${dictionary}${dictionary ? " " : ""}/Length ${byteLength(data)} >>\nstream\n`, "latin1");
  return { pieces: [head, ...data, Buffer.from("\nendstream", "latin1")], bulk: bulk ? new Set(data) : undefined };
}

interface StreamBody {
  pieces: Buffer[];
  /** Pieces that the file identifier takes by their CRC-32 rather than their bytes. */
  bulk: Set<Buffer> | undefined;
}

/** Numbered objects, reserved before their bodies are known (a page names its parent, the catalog its pages). */
class PdfObjects {
  private readonly bodies: Array<StreamBody | undefined> = [];

  reserve(): number {
    this.bodies.push(undefined);
    return this.bodies.length;
  }

  set(objectNumber: number, body: string | StreamBody): void {
    this.bodies[objectNumber - 1] = typeof body === "string" ? { pieces: [Buffer.from(body, "latin1")], bulk: undefined } : body;
  }

  add(body: string | StreamBody): number {
    const objectNumber = this.reserve();
    this.set(objectNumber, body);
    return objectNumber;
  }

  /**
   * The file: header, objects, cross-reference table, trailer. Its identifier (/ID) is an MD5 of everything written
   * except image data, which goes in by CRC-32 and length: MD5 over a large image would hold the event loop for about
   * a second per gigabyte, CRC-32 for a tenth of that.
   */
  serialise(root: number, info: number): Buffer {
    // The binary comment tells transfer tools the file is binary (PDF/A requires it).
    const parts: Buffer[] = [Buffer.from("%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "latin1")];
    const fingerprint = createHash("md5");
    let length = parts[0]!.length;
    const offsets: number[] = [];
    this.bodies.forEach((body, i) => {
      if (!body) throw new Error(`object ${i + 1} was reserved but never written`);
      offsets.push(length);
      const head = Buffer.from(`${i + 1} 0 obj\n`, "latin1");
      const tail = Buffer.from("\nendobj\n", "latin1");
      parts.push(head, ...body.pieces, tail);
      length += head.length + byteLength(body.pieces) + tail.length;
      for (const piece of body.pieces) {
        fingerprint.update(body.bulk?.has(piece) ? `${piece.length}:${crc32(piece)}` : piece);
      }
    });
    const id = fingerprint.digest("hex").toUpperCase();
    const xref = [`xref\n0 ${this.bodies.length + 1}\n0000000000 65535 f \n`, ...offsets.map((o) => `${String(o).padStart(10, "0")} 00000 n \n`)].join("");
    const trailer = `trailer\n<< /Size ${this.bodies.length + 1} /Root ${ref(root)} /Info ${ref(info)} /ID [<${id}> <${id}>] >>\nstartxref\n${length}\n%%EOF\n`;
    parts.push(Buffer.from(`${xref}${trailer}`, "latin1"));
    return Buffer.concat(parts);
  }
}

function byteLength(pieces: readonly Buffer[]): number {
  return pieces.reduce((sum, piece) => sum + piece.length, 0);
}
