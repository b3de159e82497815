/**
 * Page layout: the page's size and the image's place on it, for every fit, orientation, margin and page size, checked
 * as properties (into fits the box and touches it on one axis, fill covers it, …) over images wide, tall, square, tiny
 * and past the largest page, plus a few placements worked out by hand; and the checks of a requested layout.
 */
import { IMAGE_PAGE, PAGE_SIZES, pageDensity, placeImage, type PageFit, type PageLayout, type PageOrientation, type Placement } from "../../services/image/page-layout.js";
import { MAX_PAGE_POINTS } from "../../services/shared/document-options.js";

const IMAGES: Array<[number, number]> = [
  [300, 200],
  [200, 300],
  [250, 250],
  [7, 3],
  [4000, 1000],
  [30_000, 12_000],
];
const SIZES = { ...PAGE_SIZES, custom: { width: 400, height: 150 } };
const FITS: PageFit[] = ["into", "fill", "exact", "shrink"];
const ORIENTATIONS: PageOrientation[] = ["auto", "portrait", "landscape"];
const MARGINS = [0, 36];

/** Equal up to floating-point rounding. */
const near = (a: number, b: number) => Math.abs(a - b) < 1e-6 * Math.max(1, Math.abs(a), Math.abs(b));

/** The image's own size in points: one pixel per point, unless the image is larger than the largest page. */
function ownSize(w: number, h: number) {
  const dpi = pageDensity(w, h);
  return { width: (w * 72) / dpi, height: (h * 72) / dpi };
}

function box(p: Placement, margin: number) {
  return { x: margin, y: margin, width: p.pageWidth - 2 * margin, height: p.pageHeight - 2 * margin };
}

function centred(p: Placement, margin: number): boolean {
  const b = box(p, margin);
  return near(p.x - b.x, b.x + b.width - (p.x + p.width)) && near(p.y - b.y, b.y + b.height - (p.y + p.height));
}

const aspectKept = (p: Placement, w: number, h: number) => near(p.width / p.height, w / h);
const fitsBox = (p: Placement, margin: number) => p.width <= box(p, margin).width + 1e-6 && p.height <= box(p, margin).height + 1e-6;
const touchesOneAxis = (p: Placement, margin: number) => near(p.width, box(p, margin).width) || near(p.height, box(p, margin).height);

describe("a page of the image's own size (no page size given)", () => {
  test.each(IMAGES)("%i×%i: one pixel per point (fewer past 200 inches), plus the margins; fit and orientation do not apply", (w, h) => {
    const own = ownSize(w, h);
    expect(Math.max(own.width, own.height)).toBeLessThanOrEqual(MAX_PAGE_POINTS);
    const page = placeImage(w, h, IMAGE_PAGE);
    expect(page).toEqual({ pageWidth: own.width, pageHeight: own.height, x: 0, y: 0, width: own.width, height: own.height });
    for (const fit of FITS) {
      for (const orientation of ORIENTATIONS) {
        const margined = placeImage(w, h, { fit, orientation, margin: 36 });
        if (Math.max(own.width, own.height) + 72 <= MAX_PAGE_POINTS) {
          expect(margined).toEqual({ pageWidth: own.width + 72, pageHeight: own.height + 72, x: 36, y: 36, width: own.width, height: own.height });
        } else {
          // Image and margins would exceed the largest page: the image gives way, its aspect kept.
          expect(Math.max(margined.pageWidth, margined.pageHeight)).toBeCloseTo(MAX_PAGE_POINTS, 6);
          expect([margined.x, margined.y]).toEqual([36, 36]);
          expect(near(margined.pageWidth, margined.width + 72) && near(margined.pageHeight, margined.height + 72)).toBe(true);
          expect(aspectKept(margined, w, h)).toBe(true);
        }
      }
    }
  });

  test("a 1000×500 image is a 1000×500-point page; a 20,000-pixel-wide one is 14,400 points wide (100 dpi)", () => {
    expect(placeImage(1000, 500, IMAGE_PAGE)).toMatchObject({ pageWidth: 1000, pageHeight: 500, width: 1000, height: 500 });
    expect(placeImage(20_000, 5_000, IMAGE_PAGE)).toMatchObject({ pageWidth: 14_400, pageHeight: 3_600 });
  });
});

describe("a page of a given size", () => {
  const cases = Object.entries(SIZES).flatMap(([name, size]) =>
    FITS.flatMap((fit) => ORIENTATIONS.flatMap((orientation) => MARGINS.flatMap((margin) => IMAGES.map(([w, h]) => ({ name, size, fit, orientation, margin, w, h }))))),
  );

  test.each(cases)("$name, $fit, $orientation, margin $margin: $w×$h", ({ size, fit, orientation, margin, w, h }) => {
    const layout: PageLayout = { size, fit, orientation, margin };
    const p = placeImage(w, h, layout);

    // The page is the size, turned as asked (auto: landscape for an image wider than tall).
    expect([p.pageWidth, p.pageHeight].sort((a, b) => a - b)).toEqual([size.width, size.height].sort((a, b) => a - b));
    const landscape = orientation === "landscape" || (orientation === "auto" && w > h);
    expect(landscape ? p.pageWidth >= p.pageHeight : p.pageWidth <= p.pageHeight).toBe(true);

    expect(centred(p, margin)).toBe(true);
    const b = box(p, margin);
    const own = ownSize(w, h);
    switch (fit) {
      case "into":
        expect(aspectKept(p, w, h) && fitsBox(p, margin) && touchesOneAxis(p, margin)).toBe(true);
        expect(p.clip).toBeUndefined();
        break;
      case "fill": {
        // Covers the box, touching it on one axis; clipped to the box exactly when it overflows.
        expect(aspectKept(p, w, h) && touchesOneAxis(p, margin)).toBe(true);
        expect(p.width >= b.width - 1e-6 && p.height >= b.height - 1e-6).toBe(true);
        const overflows = !near(p.width, b.width) || !near(p.height, b.height);
        expect(p.clip).toEqual(overflows ? b : undefined);
        break;
      }
      case "exact":
        expect([p.x, p.y, p.width, p.height]).toEqual([b.x, b.y, b.width, b.height]);
        expect(p.clip).toBeUndefined();
        break;
      case "shrink": {
        expect(aspectKept(p, w, h) && fitsBox(p, margin)).toBe(true);
        const into = placeImage(w, h, { ...layout, fit: "into" });
        // Never larger than the image's own size: the own size when that fits, else what `into` makes of it.
        if (own.width <= b.width && own.height <= b.height) expect([p.width, p.height]).toEqual([own.width, own.height]);
        else expect([p.width, p.height]).toEqual([into.width, into.height]);
        expect(p.clip).toBeUndefined();
        break;
      }
    }
  });

  test("worked by hand: a 300×200 image on A4 into 36-point margins turns the page and fills its width", () => {
    const p = placeImage(300, 200, { size: PAGE_SIZES.a4, fit: "into", margin: 36, orientation: "auto" });
    expect([p.pageWidth, p.pageHeight]).toEqual([841.89, 595.276]);
    // The box is 769.89 × 523.276; 300×200 scaled by 769.89/300 is 769.89 × 513.26, 5.008 points from top and bottom.
    expect(p.x).toBe(36);
    expect(p.width).toBeCloseTo(769.89, 9);
    expect(p.height).toBeCloseTo(513.26, 9);
    expect(p.y).toBeCloseTo(36 + 5.008, 9);
  });

  test("worked by hand: shrink leaves a 100×100 image its size, centred on a Letter page", () => {
    expect(placeImage(100, 100, { size: PAGE_SIZES.letter, fit: "shrink", margin: 0, orientation: "auto" })).toEqual({
      pageWidth: 612,
      pageHeight: 792,
      x: 256,
      y: 346,
      width: 100,
      height: 100,
    });
  });

  test("worked by hand: fill on a 400×300 landscape page with 20-point margins crops a tall image to the box", () => {
    const p = placeImage(100, 200, { size: { width: 300, height: 400 }, fit: "fill", margin: 20, orientation: "landscape" });
    // Box 360 × 260: the width decides (3.6×), 360 × 720, centred on the box's middle (y = 150).
    expect(p).toEqual({ pageWidth: 400, pageHeight: 300, x: 20, y: 150 - 360, width: 360, height: 720, clip: { x: 20, y: 20, width: 360, height: 260 } });
  });
});
