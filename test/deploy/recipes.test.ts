/**
 * The TraceQL and LogQL recipes of docs/observability.md parse with Grafana's own grammars (the lezer grammars behind
 * Grafana's query editors for Tempo and Loki). test/e2e/observability.test.ts checks the names they use against the
 * telemetry of real workflows.
 */
import { parser as logqlParser } from "@grafana/lezer-logql";
import { parser as traceqlParser } from "@grafana/lezer-traceql";
import { observabilityRecipes, RECIPES_DOC } from "../support/recipes.js";

/** Where the grammar gave up, if anywhere: the text from the first error node on. */
function syntaxError(parser: typeof traceqlParser | typeof logqlParser, query: string): string | undefined {
  let at: number | undefined;
  parser.parse(query).iterate({
    enter: (node) => {
      if (node.type.isError && at === undefined) at = node.from;
    },
  });
  return at === undefined ? undefined : `error at ${at}: …${query.slice(at, at + 30)}`;
}

const recipes = observabilityRecipes();

test(`${RECIPES_DOC} has TraceQL and LogQL recipes`, () => {
  expect(recipes.filter((r) => r.language === "traceql").length).toBeGreaterThanOrEqual(10);
  expect(recipes.filter((r) => r.language === "logql").length).toBeGreaterThanOrEqual(5);
});

test("every recipe parses with Grafana's grammar for its language", () => {
  const problems = recipes.flatMap((r) => {
    const error = syntaxError(r.language === "traceql" ? traceqlParser : logqlParser, r.query);
    return error ? [`${RECIPES_DOC}:${r.line} ${r.language} ${r.query}: ${error}`] : [];
  });
  expect(problems).toEqual([]);
});

test("the grammars refuse a broken query (the check can fail)", () => {
  expect(syntaxError(traceqlParser, '{ name = "x"')).toBeDefined();
  expect(syntaxError(logqlParser, '{service="image-svc" |')).toBeDefined();
});
