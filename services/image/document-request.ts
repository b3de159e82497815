/** The contract's page layout and document metadata in the terms of the layout and the document writer. */
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { PageFit, PageOrientation, type ConversionOptions } from "@mcsv/sdk";
import { pageSizeOf } from "../shared/document-options.js";
import type { PageFit as Fit, PageLayout, PageOrientation as Orientation } from "./page-layout.js";
import type { DocumentMetadata } from "./pdf-document.js";

const FITS: Record<PageFit, Fit> = {
  [PageFit.UNSPECIFIED]: "into",
  [PageFit.INTO]: "into",
  [PageFit.FILL]: "fill",
  [PageFit.EXACT]: "exact",
  [PageFit.SHRINK]: "shrink",
};

const ORIENTATIONS: Record<PageOrientation, Orientation> = {
  [PageOrientation.UNSPECIFIED]: "auto",
  [PageOrientation.AUTO]: "auto",
  [PageOrientation.PORTRAIT]: "portrait",
  [PageOrientation.LANDSCAPE]: "landscape",
};

/** The layout of checked options (checkDocumentOptions): unknown values were refused there. */
export function pageLayoutOf(options: ConversionOptions): PageLayout {
  const layout = options.layout;
  return {
    size: pageSizeOf(options),
    fit: FITS[layout?.fit ?? PageFit.UNSPECIFIED] ?? "into",
    margin: layout?.margin ?? 0,
    orientation: ORIENTATIONS[layout?.orientation ?? PageOrientation.UNSPECIFIED] ?? "auto",
  };
}

export function documentMetadataOf(options: ConversionOptions): DocumentMetadata {
  const metadata = options.metadata;
  if (!metadata) return {};
  return {
    ...(metadata.title ? { title: metadata.title } : {}),
    ...(metadata.author ? { author: metadata.author } : {}),
    ...(metadata.subject ? { subject: metadata.subject } : {}),
    ...(metadata.keywords.length > 0 ? { keywords: [...metadata.keywords] } : {}),
    ...(metadata.createdAt ? { createdAt: timestampDate(metadata.createdAt) } : {}),
  };
}
