/**
 * One conversion started on this page: its image (a document's first), each state as it arrives, page by page
 * progress ("Page 1 of 2"), its PDF with its page count and the words OCR recognised, and its trace.
 */
import { ConversionState, type Conversion } from "@mcsv/sdk";
import { announce, el } from "./dom.js";
import { pdfView, stateLabel, stateName, traceView } from "./conversion-view.js";

const counted = (n: number, thing: string) => `${n} ${thing}${n === 1 ? "" : "s"}`;

/** "Page 1 of 2" while pages are being done, "2 pages" before and after; nothing from a gateway that counts no pages. */
function pagesText(c: Conversion): string | undefined {
  if (c.pageCount === 0) return undefined;
  if (c.state === ConversionState.PROCESSING && c.pagesDone > 0) return `Page ${c.pagesDone} of ${c.pageCount}`;
  if (c.state === ConversionState.FAILED && c.pagesDone > 0) return `${c.pagesDone} of ${counted(c.pageCount, "page")} done`;
  return counted(c.pageCount, "page");
}

/** "12 words recognised (eng)", once OCR added a text layer. */
const textLayerText = (c: Conversion) => (c.text ? `${counted(c.text.wordCount, "word")} recognised (${c.text.languages.join("+")})` : undefined);

export class ConversionCard {
  readonly element: HTMLLIElement;
  private readonly states = el("ol", { class: "states", "aria-label": "States" });
  private readonly pdf = el("dd", {}, el("span", { class: "muted" }, "not ready"));
  private readonly pagesTerm = el("dt", { hidden: "" }, "Pages");
  private readonly pages = el("dd", { hidden: "", "data-pages": "" });
  private readonly textTerm = el("dt", { hidden: "" }, "Text");
  private readonly text = el("dd", { hidden: "", "data-text": "" });
  private readonly trace = el("dd", {}, el("span", { class: "muted" }, "unknown"));
  private readonly problem = el("p", { class: "error", hidden: "" });
  private last: ConversionState | undefined;

  /** `images`: a document's images, in page order, named under its title. */
  constructor(private readonly filename: string, previewUrl: string, images: readonly string[] = []) {
    this.element = el(
      "li",
      { class: "card", "data-conversion": "", "data-state": "SENDING" },
      el("img", { src: previewUrl, alt: "", class: "preview" }),
      el("div", { class: "card-body" },
        el("h3", {}, filename),
        ...(images.length > 0 ? [el("p", { class: "hint card-images" }, `${counted(images.length, "image")}: ${images.join(", ")}`)] : []),
        this.states,
        el("dl", {}, el("dt", {}, "PDF"), this.pdf, this.pagesTerm, this.pages, this.textTerm, this.text, el("dt", {}, "Trace"), this.trace),
        this.problem,
      ),
    );
    this.states.append(el("li", {}, "Sending"));
  }

  showTrace(traceId: string | undefined, grafanaUrl: string | undefined): void {
    this.trace.replaceChildren(traceView(traceId, grafanaUrl));
  }

  /** A snapshot of the conversion: a new state is added to the list and announced; pages and text as they are now. */
  update(conversion: Conversion): void {
    this.element.dataset["conversionId"] = conversion.id;
    if (conversion.state !== this.last) {
      this.last = conversion.state;
      this.element.dataset["state"] = stateName(conversion.state);
      this.states.append(el("li", {}, stateLabel(conversion.state)));
      announce(`${this.filename}: ${stateLabel(conversion.state).toLowerCase()}`);
    }
    this.pdf.replaceChildren(pdfView(conversion));
    this.show(this.pagesTerm, this.pages, pagesText(conversion));
    this.show(this.textTerm, this.text, textLayerText(conversion));
    if (conversion.error) this.fail(conversion.error);
  }

  /** Something went wrong for this image (refused, or the watch broke): said once, plainly. */
  fail(message: string): void {
    this.element.classList.add("failed");
    this.problem.hidden = false;
    this.problem.textContent = message;
    announce(`${this.filename}: ${message}`);
  }

  /** A row of the card's list, shown with its value, or hidden without one. */
  private show(term: HTMLElement, value: HTMLElement, text: string | undefined): void {
    term.hidden = value.hidden = text === undefined;
    value.textContent = text ?? "";
  }
}
