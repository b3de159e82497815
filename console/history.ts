/** Past conversions of the signed-in address, a page at a time through ListConversions' page tokens. */
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Conversion } from "@mcsv/sdk";
import { el } from "./dom.js";
import { pdfView, stateLabel, stateName, traceView } from "./conversion-view.js";
import type { Gateway } from "./gateway.js";

const PAGE_SIZE = 10;

export interface HistoryElements {
  rows: HTMLTableSectionElement;
  newer: HTMLButtonElement;
  older: HTMLButtonElement;
  position: HTMLElement;
}

export class ConversionHistory {
  /** The token of each page seen so far (the first page's is empty), so that "Newer" can go back. */
  private readonly tokens = [""];
  private page = 0;

  constructor(
    private readonly gateway: Gateway,
    private readonly userEmail: string,
    /** Trace ids of the conversions started on this page (only the ConvertImage answer names them). */
    private readonly traces: ReadonlyMap<string, string>,
    private readonly grafanaUrl: string | undefined,
    private readonly elements: HistoryElements,
  ) {}

  /** Shows page `page` (0 is the newest); a failed call is thrown and leaves the table as it was. */
  async show(page = this.page): Promise<void> {
    const { conversions, nextPageToken } = await this.gateway.listConversions({ userEmail: this.userEmail, pageSize: PAGE_SIZE, pageToken: this.tokens[page] ?? "" });
    this.page = page;
    this.tokens.length = page + 1;
    if (nextPageToken) this.tokens.push(nextPageToken);
    this.elements.rows.replaceChildren(...(conversions.length > 0 ? conversions.map((c) => this.row(c)) : [el("tr", {}, el("td", { colspan: "5", class: "muted" }, "No conversions yet."))]));
    this.elements.newer.disabled = page === 0;
    this.elements.older.disabled = !nextPageToken;
    this.elements.position.textContent = `Page ${page + 1}`;
  }

  newer(): Promise<void> {
    return this.show(Math.max(0, this.page - 1));
  }

  older(): Promise<void> {
    return this.show(this.page + 1);
  }

  private row(conversion: Conversion): HTMLTableRowElement {
    const created = conversion.createdAt ? timestampDate(conversion.createdAt) : undefined;
    return el(
      "tr",
      { "data-state": stateName(conversion.state) },
      el("td", {}, conversion.filename),
      el("td", {}, stateLabel(conversion.state)),
      el("td", {}, created ? el("time", { datetime: created.toISOString() }, created.toLocaleString()) : ""),
      el("td", {}, pdfView(conversion)),
      el("td", {}, traceView(this.traces.get(conversion.id), this.grafanaUrl)),
    );
  }
}
