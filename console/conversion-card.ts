/** One conversion started on this page: its image, each state as it arrives, its PDF and its trace. */
import type { Conversion, ConversionState } from "@mcsv/sdk";
import { announce, el } from "./dom.js";
import { pdfView, stateLabel, stateName, traceView } from "./conversion-view.js";

export class ConversionCard {
  readonly element: HTMLLIElement;
  private readonly states = el("ol", { class: "states", "aria-label": "States" });
  private readonly pdf = el("dd", {}, el("span", { class: "muted" }, "not ready"));
  private readonly trace = el("dd", {}, el("span", { class: "muted" }, "unknown"));
  private readonly problem = el("p", { class: "error", hidden: "" });
  private last: ConversionState | undefined;

  constructor(private readonly filename: string, previewUrl: string) {
    this.element = el(
      "li",
      { class: "card", "data-conversion": "", "data-state": "SENDING" },
      el("img", { src: previewUrl, alt: "", class: "preview" }),
      el("div", { class: "card-body" },
        el("h3", {}, filename),
        this.states,
        el("dl", {}, el("dt", {}, "PDF"), this.pdf, el("dt", {}, "Trace"), this.trace),
        this.problem,
      ),
    );
    this.states.append(el("li", {}, "Sending"));
  }

  showTrace(traceId: string | undefined, grafanaUrl: string | undefined): void {
    this.trace.replaceChildren(traceView(traceId, grafanaUrl));
  }

  /** A snapshot of the conversion: a new state is added to the list and announced. */
  update(conversion: Conversion): void {
    this.element.dataset["conversionId"] = conversion.id;
    if (conversion.state !== this.last) {
      this.last = conversion.state;
      this.element.dataset["state"] = stateName(conversion.state);
      this.states.append(el("li", {}, stateLabel(conversion.state)));
      announce(`${this.filename}: ${stateLabel(conversion.state).toLowerCase()}`);
    }
    this.pdf.replaceChildren(pdfView(conversion));
    if (conversion.error) this.fail(conversion.error);
  }

  /** Something went wrong for this image (refused, or the watch broke): said once, plainly. */
  fail(message: string): void {
    this.element.classList.add("failed");
    this.problem.hidden = false;
    this.problem.textContent = message;
    announce(`${this.filename}: ${message}`);
  }
}
