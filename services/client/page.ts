/**
 * The client's plain-HTTP views of the recent events: `GET /` renders them as an HTML page (every value escaped by
 * mustache, links only to the http(s) URLs validation let through) and `GET /events?limit=N` returns them as
 * ListEventsResponse JSON.
 */
import { readFileSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { create, toJsonString } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { ConnectError } from "@connectrpc/connect";
import { ConversionState, EmailType, ListEventsResponseSchema, type ClientEvent } from "@mcsv/sdk";
import Mustache from "mustache";
import type { PageHandler } from "../shared/server.js";
import type { CallbackInbox } from "./inbox.js";
import { validateLimit } from "./validation.js";

const PAGE = readFileSync(new URL("./templates/events.html.mustache", import.meta.url), "utf8");
Mustache.parse(PAGE);

const PAGE_HEADERS = {
  "content-type": "text/html; charset=utf-8",
  // Nothing on the page runs or loads; presigned links must not leak through the Referer header.
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
        pdfUrl: c.pdfUrl,
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

function limitOf(req: IncomingMessage): number {
  const raw = new URL(req.url ?? "/", "http://localhost").searchParams.get("limit");
  return validateLimit(raw === null ? 0 : /^\d{1,6}$/.test(raw) ? Number(raw) : -1);
}

function send(res: ServerResponse, status: number, headers: Record<string, string>, body: string): void {
  res.writeHead(status, { ...headers, "content-length": Buffer.byteLength(body) });
  res.end(body);
}

export function eventPages(inbox: CallbackInbox, capacity: number): PageHandler {
  return (req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" || (path !== "/" && path !== "/events")) return false;
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
