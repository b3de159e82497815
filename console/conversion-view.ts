/** The parts of a conversion shown both live and in the history: its state, its PDF link and its trace. */
import { ConversionState, ConversionStateSchema, type Conversion } from "@mcsv/sdk";
import { enumLabel } from "./contract.js";
import { el } from "./dom.js";
import { grafanaTraceUrl } from "./trace.js";

export const stateLabel = (state: ConversionState) => enumLabel(ConversionStateSchema, state);

/** `SUCCEEDED`: the enum's own name, for styles and tests. */
export const stateName = (state: ConversionState) => ConversionState[state] ?? String(state);

export const isFinished = (state: ConversionState) => state === ConversionState.SUCCEEDED || state === ConversionState.FAILED;

/** `photo.png` → `photo.pdf`: the name the download is saved under. */
const pdfName = (filename: string) => `${filename.replace(/\.[^.]*$/, "") || "conversion"}.pdf`;

/**
 * The presigned PDF link, or why there is none. The URL lives in this element only: nothing keeps it beyond the
 * page. (A cross-origin link opens rather than downloads in most browsers; the name still helps "Save link as".)
 */
export function pdfView(conversion: Conversion): Node {
  if (conversion.pdfExpired) return el("span", { class: "muted" }, "PDF expired");
  if (!conversion.pdfUrl) return el("span", { class: "muted" }, conversion.state === ConversionState.FAILED ? "no PDF" : "not ready");
  return el("a", { href: conversion.pdfUrl, target: "_blank", rel: "noopener noreferrer", download: pdfName(conversion.filename), "data-pdf-link": "" }, "Open the PDF");
}

/** The trace id, and a link to it in Grafana when the gateway knows Grafana. */
export function traceView(traceId: string | undefined, grafanaUrl: string | undefined): Node {
  if (!traceId) return el("span", { class: "muted" }, "unknown");
  const id = el("code", { "data-trace-id": "" }, traceId);
  if (!grafanaUrl) return id;
  return el("span", {}, id, " ", el("a", { href: grafanaTraceUrl(grafanaUrl, traceId), target: "_blank", rel: "noopener noreferrer", "data-grafana-link": "" }, "View in Grafana"));
}
