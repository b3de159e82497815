/**
 * The TraceQL and LogQL recipes of docs/observability.md (how users find mcsv's traces in Tempo and its logs in Loki),
 * read from the document itself, for tests that parse them with Grafana's own grammars and check every name they use
 * against real telemetry.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
export const RECIPES_DOC = "docs/observability.md";

export interface Recipe {
  language: "traceql" | "logql";
  /** The query as a user pastes it: the trailing `# …` note dropped, `<trace id>` filled in. */
  query: string;
  line: number;
}

/** A trace id in the shape Tempo and the logs use, for the recipes' `<trace id>` placeholder. */
export const SAMPLE_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";

export function observabilityRecipes(): Recipe[] {
  const lines = readFileSync(join(ROOT, RECIPES_DOC), "utf8").split("\n");
  const recipes: Recipe[] = [];
  let language: Recipe["language"] | undefined;
  lines.forEach((text, index) => {
    const fence = /^```(\w*)\s*$/.exec(text);
    if (fence) {
      language = language ? undefined : fence[1] === "traceql" || fence[1] === "logql" ? fence[1] : undefined;
      return;
    }
    if (!language) return;
    // A note starts with `#` after at least two spaces; neither language has such comments.
    const query = text.replace(/\s{2,}#.*$/, "").trim().replaceAll("<trace id>", SAMPLE_TRACE_ID);
    if (query) recipes.push({ language, query, line: index + 1 });
  });
  return recipes;
}

/** What a TraceQL recipe names: span names, service names and span attribute keys. */
export function traceqlNames(query: string): { spanNames: string[]; services: string[]; spanAttributes: string[] } {
  const all = (pattern: RegExp) => [...query.matchAll(pattern)].map((m) => m[1]!);
  return {
    spanNames: all(/(?<![.\w])name\s*=\s*"([^"]+)"/g),
    services: all(/resource\.service\.name\s*=\s*"([^"]+)"/g),
    spanAttributes: all(/(?<![\w.])span\.([\w.]+)/g),
  };
}

/** What a LogQL recipe names: stream labels (with the values it matches exactly) and fields filtered after `json`. */
export function logqlNames(query: string): { labels: string[]; exactServices: string[]; fields: string[] } {
  const selectors = [...query.matchAll(/\{([^}]*)\}/g)].map((m) => m[1]!);
  const labels = selectors.flatMap((s) => [...s.matchAll(/(\w+)\s*(?:=~|!~|!=|=)/g)].map((m) => m[1]!));
  const exactServices = selectors.flatMap((s) => [...s.matchAll(/\bservice\s*=\s*"([^"]+)"/g)].map((m) => m[1]!));
  const afterSelector = query.replace(/\{[^}]*\}/g, "");
  const fields = [...afterSelector.matchAll(/\|\s*(\w+)\s*(?:=~|!~|!=|=)/g)].map((m) => m[1]!);
  return { labels, exactServices, fields };
}
