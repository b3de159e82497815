/**
 * The console's entry: signing in and out, the image picker and drop zone (a PDF per image, or one of them all),
 * and the history, wired to the page's elements (index.html). Everything a signed-in session holds (calls, watches,
 * previews, PDF links) goes with it.
 */
import { ConversionCard } from "./conversion-card.js";
import { convertDocument, convertImage, mib, type ConversionDisplay } from "./convert.js";
import { ConvertForm } from "./convert-form.js";
import { byId } from "./dom.js";
import { createGateway, describeFailure, isKeyRefused, type Gateway } from "./gateway.js";
import { ConversionHistory } from "./history.js";
import { currentSession, forgetSession, keepSession, type Session } from "./session.js";
import { loadSettings, type ConsoleSettings } from "./settings.js";

const page = {
  who: byId("who", HTMLElement),
  signOut: byId("sign-out", HTMLButtonElement),
  signInSection: byId("sign-in", HTMLElement),
  signInForm: byId("sign-in-form", HTMLFormElement),
  signInButton: byId("sign-in-button", HTMLButtonElement),
  signInError: byId("sign-in-error", HTMLElement),
  apiKey: byId("api-key", HTMLInputElement),
  email: byId("email", HTMLInputElement),
  workspace: byId("workspace", HTMLElement),
  convertForm: byId("convert-form", HTMLFormElement),
  convertError: byId("convert-error", HTMLElement),
  dropZone: byId("drop-zone", HTMLElement),
  files: byId("files", HTMLInputElement),
  limit: byId("limit", HTMLElement),
  conversions: byId("conversions", HTMLUListElement),
  historyRows: byId("history-rows", HTMLTableSectionElement),
  newer: byId("newer", HTMLButtonElement),
  older: byId("older", HTMLButtonElement),
  refresh: byId("refresh", HTMLButtonElement),
  pagePosition: byId("page-position", HTMLElement),
  historyError: byId("history-error", HTMLElement),
};

/** What a signed-in session holds; dropped whole on sign-out. */
interface SignedIn {
  session: Session;
  gateway: Gateway;
  history: ConversionHistory;
  traces: Map<string, string>;
  /** Aborts the session's calls and watches. */
  calls: AbortController;
  previews: string[];
}

const convertForm = new ConvertForm({
  quality: byId("quality", HTMLSelectElement),
  engine: byId("engine", HTMLSelectElement),
  onePdf: byId("one-pdf", HTMLInputElement),
  pageSize: byId("page-size", HTMLSelectElement),
  fit: byId("fit", HTMLSelectElement),
  margin: byId("margin", HTMLInputElement),
  title: byId("title", HTMLInputElement),
  author: byId("author", HTMLInputElement),
  pdfa: byId("pdfa", HTMLInputElement),
  ocr: byId("ocr", HTMLInputElement),
  ocrLanguages: byId("ocr-languages", HTMLInputElement),
});

let settings: ConsoleSettings;
let signedIn: SignedIn | undefined;

async function signIn(session: Session): Promise<void> {
  const gateway = createGateway(session.apiKey);
  const traces = new Map<string, string>();
  const history = new ConversionHistory(gateway, session.email, traces, settings.grafanaUrl, {
    rows: page.historyRows,
    newer: page.newer,
    older: page.older,
    position: page.pagePosition,
  });
  // The first page of the history is the first call: a refused key shows nothing.
  await history.show(0);
  keepSession(session);
  signedIn = { session, gateway, history, traces, calls: new AbortController(), previews: [] };
  page.who.textContent = session.email;
  page.who.hidden = false;
  page.signOut.hidden = false;
  page.signInSection.hidden = true;
  page.workspace.hidden = false;
  page.apiKey.value = "";
}

function signOut(): void {
  forgetSession();
  if (signedIn) {
    signedIn.calls.abort();
    for (const url of signedIn.previews) URL.revokeObjectURL(url);
  }
  signedIn = undefined;
  page.conversions.replaceChildren();
  page.convertError.textContent = "";
  page.historyRows.replaceChildren();
  page.historyError.textContent = "";
  page.who.hidden = true;
  page.signOut.hidden = true;
  page.workspace.hidden = true;
  page.signInSection.hidden = false;
  page.apiKey.focus();
}

async function submitSignIn(event: SubmitEvent): Promise<void> {
  event.preventDefault();
  page.signInError.textContent = "";
  const apiKey = page.apiKey.value.trim();
  const email = page.email.value.trim();
  if (!apiKey) return void (page.signInError.textContent = "Enter your API key.");
  if (!email || !page.email.checkValidity()) return void (page.signInError.textContent = "Enter a valid e-mail address.");
  page.signInButton.disabled = true;
  try {
    await signIn({ apiKey, email });
  } catch (error) {
    forgetSession();
    page.signInError.textContent = isKeyRefused(error) ? "Signing in failed: the API key was refused." : `Signing in failed: ${describeFailure(error)}.`;
  } finally {
    page.signInButton.disabled = false;
  }
}

/** A card for a new conversion, first in the list, with the image's preview (kept until sign-out). */
function newCard(session: SignedIn, name: string, preview: File, images?: string[]): ConversionDisplay {
  const url = URL.createObjectURL(preview);
  session.previews.push(url);
  const card = new ConversionCard(name, url, images);
  page.conversions.prepend(card.element);
  return { card, traces: session.traces, signal: session.calls.signal };
}

function convertFiles(files: File[]): void {
  const session = signedIn;
  if (!session || files.length === 0) return;
  const choices = convertForm.read();
  page.convertError.textContent = choices.problem ?? "";
  if (choices.problem !== undefined) return;
  const request = { userEmail: session.session.email, options: choices.options };
  if (choices.onePdf && files.length > 1) {
    const display = newCard(session, choices.documentName, files[0]!, files.map((file) => file.name));
    void convertDocument(session.gateway, settings, files, choices.documentName, request, display).then(() => refreshHistory(session));
    return;
  }
  for (const file of files) {
    void convertImage(session.gateway, settings, file, request, newCard(session, file.name, file)).then(() => refreshHistory(session));
  }
}

/** Shows the history's current page again (a finished conversion, or the Refresh button). */
async function refreshHistory(session: SignedIn, move: (history: ConversionHistory) => Promise<void> = (h) => h.show()): Promise<void> {
  if (signedIn !== session) return;
  try {
    await move(session.history);
    page.historyError.textContent = "";
  } catch (error) {
    if (signedIn === session) page.historyError.textContent = `The history could not be read: ${describeFailure(error)}.`;
  }
}

function wireDropZone(): void {
  page.dropZone.addEventListener("dragover", (event) => {
    event.preventDefault();
    page.dropZone.classList.add("dragging");
  });
  page.dropZone.addEventListener("dragleave", () => page.dropZone.classList.remove("dragging"));
  page.dropZone.addEventListener("drop", (event) => {
    event.preventDefault();
    page.dropZone.classList.remove("dragging");
    convertFiles([...(event.dataTransfer?.files ?? [])]);
  });
  page.files.addEventListener("change", () => {
    convertFiles([...(page.files.files ?? [])]);
    // The same images may be picked again.
    page.files.value = "";
  });
}

async function start(): Promise<void> {
  wireDropZone();
  page.signInForm.addEventListener("submit", (event) => void submitSignIn(event));
  page.convertForm.addEventListener("submit", (event) => event.preventDefault());
  page.signOut.addEventListener("click", signOut);
  page.newer.addEventListener("click", () => signedIn && void refreshHistory(signedIn, (h) => h.newer()));
  page.older.addEventListener("click", () => signedIn && void refreshHistory(signedIn, (h) => h.older()));
  page.refresh.addEventListener("click", () => signedIn && void refreshHistory(signedIn));
  try {
    settings = await loadSettings();
  } catch (error) {
    page.signInError.textContent = `The console cannot start: ${error instanceof Error ? error.message : String(error)}.`;
    return;
  }
  page.limit.textContent = `Up to ${mib(settings.maxImageBytes)} each, or together for one PDF: PNG, JPEG, WebP, TIFF, GIF or AVIF.`;
  page.signInButton.disabled = false;
  const saved = currentSession();
  if (saved) {
    page.email.value = saved.email;
    await signIn(saved).catch((error: unknown) => {
      forgetSession();
      page.signInError.textContent = `Signing in again failed: ${describeFailure(error)}.`;
    });
  }
}

void start();
