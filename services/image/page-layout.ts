/**
 * Where an image goes on its PDF page: the page's size and the image's place and size on it, in PDF user space
 * (points, origin bottom-left). A pure decision, shared by every PDF engine so that they all lay pages out alike.
 * The contract's layout is checked before it gets here (services/shared/document-options.ts).
 */
import { PageSize } from "@mcsv/sdk";
import { MAX_PAGE_POINTS, NAMED_PAGE_SIZES } from "../shared/document-options.js";

/**
 * How the image fills the box (the page less its margins): `into` as large as fits, aspect kept; `fill` covering the
 * box, aspect kept, what overflows clipped; `exact` stretched to the box; `shrink` like `into` but never larger than
 * the image's own size.
 */
export type PageFit = "into" | "fill" | "exact" | "shrink";

/** `auto` turns the page landscape for an image wider than tall, portrait otherwise. */
export type PageOrientation = "auto" | "portrait" | "landscape";

/** PDF viewers (Acrobat among them) refuse pages over 200 inches, i.e. MAX_PAGE_POINTS, on a side. */
const MAX_PAGE_INCHES = MAX_PAGE_POINTS / 72;

/**
 * Dots per inch that make the page the image's size, one pixel per point (72 dpi), unless that would exceed the
 * largest page viewers accept: then just enough more dots per inch to fit, the pixels untouched.
 */
export function pageDensity(width: number, height: number): number {
  return Math.max(72, Math.ceil(Math.max(width, height) / MAX_PAGE_INCHES));
}

export interface PageLayout {
  /** The page in points; undefined = the image's own size (one pixel per point, see pageDensity), plus margins. */
  size?: { width: number; height: number } | undefined;
  fit: PageFit;
  /** Margin on every side, in points. */
  margin: number;
  orientation: PageOrientation;
}

/** The page is the image: its own size, no margin (what the service always did). */
export const IMAGE_PAGE: PageLayout = { fit: "into", margin: 0, orientation: "auto" };

/** Named page sizes, portrait, in points (A4 is 210 × 297 mm): the contract's. */
export const PAGE_SIZES = { a4: NAMED_PAGE_SIZES[PageSize.A4]!, letter: NAMED_PAGE_SIZES[PageSize.LETTER]! };

export interface Rectangle {
  x: number;
  y: number;
  width: number;
  height: number;
}

export interface Placement extends Rectangle {
  pageWidth: number;
  pageHeight: number;
  /** Set when the image overflows its box (fill): clip to it. */
  clip?: Rectangle;
}


/** Tolerance of the overflow test: `fill` makes one side equal to the box's up to rounding. */
const EPSILON = 1e-9;

/** The page and the image's place on it, for an image of `pixelWidth` × `pixelHeight`. */
export function placeImage(pixelWidth: number, pixelHeight: number, layout: PageLayout): Placement {
  const { margin } = layout;
  const dpi = pageDensity(pixelWidth, pixelHeight);
  const own = { width: (pixelWidth * 72) / dpi, height: (pixelHeight * 72) / dpi };
  if (!layout.size) {
    // The image's own size, made smaller only if the margins would push the page past what viewers accept.
    const scale = Math.min(1, (MAX_PAGE_POINTS - 2 * margin) / Math.max(own.width, own.height));
    const width = own.width * scale;
    const height = own.height * scale;
    return { pageWidth: width + 2 * margin, pageHeight: height + 2 * margin, x: margin, y: margin, width, height };
  }
  const [short, long] = [Math.min(layout.size.width, layout.size.height), Math.max(layout.size.width, layout.size.height)];
  const landscape = layout.orientation === "landscape" || (layout.orientation === "auto" && pixelWidth > pixelHeight);
  const pageWidth = landscape ? long : short;
  const pageHeight = landscape ? short : long;
  const box = { x: margin, y: margin, width: pageWidth - 2 * margin, height: pageHeight - 2 * margin };
  const { width, height } = fitted(own, box, layout.fit);
  const placement: Placement = { pageWidth, pageHeight, x: box.x + (box.width - width) / 2, y: box.y + (box.height - height) / 2, width, height };
  if (width > box.width + EPSILON || height > box.height + EPSILON) placement.clip = box;
  return placement;
}

/** The image's size in the box under `fit`. */
function fitted(own: { width: number; height: number }, box: Rectangle, fit: PageFit): { width: number; height: number } {
  if (fit === "exact") return { width: box.width, height: box.height };
  const into = Math.min(box.width / own.width, box.height / own.height);
  const scale = fit === "fill" ? Math.max(box.width / own.width, box.height / own.height) : fit === "shrink" ? Math.min(1, into) : into;
  return { width: own.width * scale, height: own.height * scale };
}
