/**
 * The client's plain-HTTP views of the recent events: `GET /` renders them as an HTML page (every value escaped by
 * mustache) and `GET /events?limit=N` returns them as ListEventsResponse JSON. Both show addresses, so both need the
 * operator's credential, in development too: HTTP Basic with it as the password (what a browser prompts for), or a
 * bearer token. Neither carries a PDF link (the inbox keeps none).
 */
import { readFileSync } from "node:fs";
import { create, toJsonString } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { ConnectError } from "@connectrpc/connect";
import { ConversionState, EmailType, ListEventsResponseSchema, type ClientEvent } from "@mcsv/sdk";
import Mustache from "mustache";
import type { AnyRequest, AnyResponse } from "../shared/listener.js";
import type { PageHandler } from "../shared/server.js";
import type { CallbackInbox } from "./inbox.js";
import { validateLimit } from "./validation.js";

const PAGE = readFileSync(new URL("./templates/events.html.mustache", import.meta.url), "utf8");
Mustache.parse(PAGE);

const PAGE_HEADERS = {
  "content-type": "text/html; charset=utf-8",
  // Nothing on the page runs or loads, and nothing leaks through the Referer header.
  "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cache-control": "no-store",
};

function enumName(names: Record<number, string>, value: number): string {
  return (names[value] ?? String(value)).toLowerCase();
}

function rowOf(event: ClientEvent) {
  const receivedAt = event.receivedAt ? timestampDate(event.receivedAt).toISOString() : "";
  if (event.event.case === "pdfReady") {
    const c = event.event.value.conversion!;
    return {
      receivedAt,
      kind: "pdf_ready",
      pdfReady: {
        conversionId: c.id,
        state: enumName(ConversionState, c.state),
        stateClass: c.state === ConversionState.SUCCEEDED ? "ok" : "bad",
        filename: c.filename,
        pdfReady: c.state === ConversionState.SUCCEEDED,
        sizes: c.outputSize > 0n ? `${formatBytes(c.inputSize)} image, ${formatBytes(c.outputSize)} PDF` : c.inputSize > 0n ? `${formatBytes(c.inputSize)} image` : "",
        error: c.error,
      },
    };
  }
  if (event.event.case === "emailSent") {
    const e = event.event.value;
    return {
      receivedAt,
      kind: "email_sent",
      emailSent: {
        outcome: e.success ? "sent" : "not sent",
        stateClass: e.success ? "ok" : "bad",
        emailType: enumName(EmailType, e.emailType),
        recipient: e.userEmail,
        emailId: e.emailId,
        conversionId: e.conversionId,
        message: e.message,
      },
    };
  }
  return { receivedAt, kind: "unknown" };
}

function formatBytes(bytes: bigint): string {
  const n = Number(bytes);
  if (n < 1024) return `${n} B`;
  return n < 1024 * 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function limitOf(req: AnyRequest): number {
  const raw = new URL(req.url ?? "/", "http://localhost").searchParams.get("limit");
  return validateLimit(raw === null ? 0 : /^\d{1,6}$/.test(raw) ? Number(raw) : -1);
}

function send(res: AnyResponse, status: number, headers: Record<string, string>, body: string): void {
  res.writeHead(status, { ...headers, "content-length": Buffer.byteLength(body) });
  res.end(body);
}

export function eventPages(inbox: CallbackInbox, capacity: number): PageHandler {
  return (req, res, caller) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" || (path !== "/" && path !== "/events")) return false;
    if (!caller.operator) {
      // The challenge makes a browser ask; any user name goes, the password is the operator's credential.
      const headers = { "content-type": "application/json", "www-authenticate": 'Basic realm="mcsv client", charset="UTF-8"', "cache-control": "no-store" };
      send(res, 401, headers, JSON.stringify({ code: "unauthenticated", message: "send the operator's credential: HTTP Basic (as the password) or Authorization: Bearer" }));
      return true;
    }
    let limit: number;
    try {
      limit = limitOf(req);
    } catch (error) {
      send(res, 400, { "content-type": "application/json" }, JSON.stringify({ code: "invalid_argument", message: ConnectError.from(error).rawMessage }));
      return true;
    }
    const events = inbox.recent(limit);
    if (path === "/events") {
      send(res, 200, { "content-type": "application/json", "cache-control": "no-store" }, toJsonString(ListEventsResponseSchema, create(ListEventsResponseSchema, { events })));
    } else {
      const view = { events: events.map(rowOf), hasEvents: events.length > 0, count: events.length, held: inbox.size, capacity };
      send(res, 200, PAGE_HEADERS, Mustache.render(PAGE, view));
    }
    return true;
  };
}
