/**
 * PromQL as Prometheus itself reads it: the syntax tree of `@prometheus-io/lezer-promql` (the grammar behind the
 * Prometheus UI), used to check the dashboards and rules in this repository against the metrics the services export.
 *
 * - `promqlSyntaxErrors` / `metricNamesIn` work on one expression. Grafana template variables ($service,
 *   $__rate_interval, …) are replaced by harmless stand-ins first, so dashboard queries parse as Prometheus would see
 *   them after Grafana's interpolation.
 * - `collectExpressions` gathers every PromQL expression in grafana/dashboards/*.json (panel targets, annotations,
 *   template-variable queries) and deploy/prometheus/rules/*.yml (recording and alerting rules), each with where it
 *   came from, for a test to check against a live scrape.
 *
 * Names that contain ':' are recording rules (Prometheus' naming convention), not metrics a service exports; they are
 * left out of `metricNamesIn` and reported by `recordingRulesIn`.
 */
import { readdirSync, readFileSync } from "node:fs";
import { basename, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parser } from "@prometheus-io/lezer-promql";
import { parse as parseYaml } from "yaml";

/** A node of the lezer syntax tree (the type @lezer/common exports, reached through the parser). */
type SyntaxNode = ReturnType<typeof parser.parse>["topNode"];

export const ROOT = fileURLToPath(new URL("../..", import.meta.url));
export const DASHBOARDS_DIR = join(ROOT, "grafana/dashboards");
export const RULES_DIR = join(ROOT, "deploy/prometheus/rules");

/** Where an expression lives and what it is. */
export interface PromExpression {
  /** File relative to the repository root. */
  file: string;
  /** Human-readable position inside the file, e.g. `panel 3 "Requests/s" target A`. */
  where: string;
  kind: "panel" | "annotation" | "variable" | "record" | "alert";
  expr: string;
}

export interface PromQLSyntaxError {
  from: number;
  to: number;
  /** The expression with the error position marked, for messages. */
  context: string;
}

/** Grafana's time macros: all become durations (or milliseconds) of the right shape. */
const GRAFANA_DURATION_MACROS = new Set(["__interval", "__rate_interval", "__range", "__auto"]);
const GRAFANA_NUMBER_MACROS = new Set(["__interval_ms", "__range_ms", "__range_s"]);
/** Stands in for any other variable: a valid identifier that no exporter uses (names starting `__` are reserved). */
export const GRAFANA_VARIABLE_STAND_IN = "__grafana_variable";

/**
 * Replaces Grafana template variables (`$name`, `${name}`, `${name:format}`, `[[name]]`) by stand-ins that keep the
 * expression valid PromQL: time macros become `5m`, number macros `60000`, a variable inside `[...]` or after
 * `offset` a duration, and any other variable an identifier (inside a string literal it is just text). `values`
 * gives chosen variables their value instead, as Grafana would (`{ service: ".+", __rate_interval: "1m" }` to run a
 * query against a live Prometheus).
 */
export function interpolateGrafanaVariables(expr: string, values: Record<string, string> = {}): string {
  const variable = /\$\{([A-Za-z0-9_.]+)(?::[^}]*)?\}|\$([A-Za-z0-9_]+)|\[\[([A-Za-z0-9_]+)(?::[^\]]*)?\]\]/g;
  return expr.replace(variable, (match, braced: string | undefined, bare: string | undefined, old: string | undefined, offset: number) => {
    const name = braced ?? bare ?? old ?? "";
    if (Object.hasOwn(values, name)) return values[name]!;
    if (GRAFANA_DURATION_MACROS.has(name)) return "5m";
    if (GRAFANA_NUMBER_MACROS.has(name)) return "60000";
    const before = expr.slice(0, offset).trimEnd();
    if (before.endsWith("[") || /\boffset$/i.test(before) || /^\s*(:|\])/.test(expr.slice(offset + match.length))) return "5m";
    return GRAFANA_VARIABLE_STAND_IN;
  });
}

/** Positions where the PromQL parser found an error; empty for a valid expression. */
export function promqlSyntaxErrors(expr: string): PromQLSyntaxError[] {
  const text = interpolateGrafanaVariables(expr);
  const errors: PromQLSyntaxError[] = [];
  if (text.trim() === "") return [{ from: 0, to: 0, context: "(empty expression)" }];
  parser.parse(text).iterate({
    enter(node) {
      if (node.type.isError) {
        errors.push({ from: node.from, to: node.to, context: `${text.slice(0, node.from)}⟦${text.slice(node.from, node.to)}⟧${text.slice(node.to)}` });
      }
    },
  });
  return errors;
}

/** The value of a PromQL string literal ("…", '…' or `…`). */
function unquote(literal: string): string {
  const quote = literal[0];
  const body = literal.slice(1, -1);
  if (quote === "`") return body;
  const escaped = quote === "'" ? body.replace(/\\'/g, "'").replace(/"/g, '\\"') : body;
  return JSON.parse(`"${escaped}"`) as string;
}

function childText(node: SyntaxNode, name: string, text: string): string | undefined {
  const child = node.getChild(name);
  return child ? text.slice(child.from, child.to) : undefined;
}

/** Every selector name in `expr`, recording rules included; throws on a syntax error. */
function selectorNames(expr: string): string[] {
  const text = interpolateGrafanaVariables(expr);
  const errors = promqlSyntaxErrors(expr);
  if (errors.length > 0) throw new Error(`invalid PromQL: ${errors.map((e) => e.context).join("; ")}`);
  const names = new Set<string>();
  const tree = parser.parse(text);
  tree.iterate({
    enter(ref) {
      const node = ref.node;
      if (node.name === "VectorSelector") {
        const identifier = childText(node, "Identifier", text);
        if (identifier) names.add(identifier);
      } else if (node.name === "QuotedLabelName" && node.parent?.name === "LabelMatchers") {
        // UTF-8 syntax: {"metric.name", label="value"}.
        const literal = childText(node, "StringLiteral", text);
        if (literal) names.add(unquote(literal));
      } else if (node.name === "UnquotedLabelMatcher" || node.name === "QuotedLabelMatcher") {
        const labelNode = node.getChild("LabelName") ?? node.getChild("QuotedLabelName")?.getChild("StringLiteral");
        const label = labelNode ? text.slice(labelNode.from, labelNode.to) : "";
        const op = node.getChild("MatchOp")?.firstChild?.name;
        const value = childText(node, "StringLiteral", text);
        if ((label === "__name__" || label === '"__name__"') && op === "EqlSingle" && value) names.add(unquote(value));
      }
    },
  });
  return [...names].filter((name) => name !== GRAFANA_VARIABLE_STAND_IN).sort();
}

/**
 * The metric names `expr` reads: the name of every vector and range selector and every `__name__="…"` matcher,
 * sorted and without repeats. Recording rules (names with ':') are left out. Throws on invalid PromQL.
 */
export function metricNamesIn(expr: string): string[] {
  return selectorNames(expr).filter((name) => !name.includes(":"));
}

/** The recording rules (names with ':') that `expr` reads. Throws on invalid PromQL. */
export function recordingRulesIn(expr: string): string[] {
  return selectorNames(expr).filter((name) => name.includes(":"));
}

interface DashboardTarget {
  refId?: string;
  expr?: string;
  datasource?: { type?: string; uid?: string } | string | null;
  hide?: boolean;
}

interface DashboardPanel {
  id?: number;
  title?: string;
  type?: string;
  datasource?: DashboardTarget["datasource"];
  targets?: DashboardTarget[];
  panels?: DashboardPanel[];
}

export interface Dashboard {
  uid?: string;
  title?: string;
  panels?: DashboardPanel[];
  templating?: { list?: Array<{ name?: string; type?: string; datasource?: DashboardTarget["datasource"]; query?: unknown; definition?: string }> };
  annotations?: { list?: Array<{ name?: string; expr?: string; datasource?: DashboardTarget["datasource"] }> };
}

/** The uid a Grafana datasource reference names (an object with uid, or the old string form). */
export function datasourceUid(ref: DashboardTarget["datasource"]): string | undefined {
  if (!ref) return undefined;
  return typeof ref === "string" ? ref : ref.uid;
}

function isPrometheus(ref: DashboardTarget["datasource"], fallback: DashboardTarget["datasource"]): boolean {
  const effective = ref ?? fallback;
  if (!effective) return true; // the default datasource, which the provisioning makes Prometheus
  if (typeof effective === "string") return effective === "prometheus" || effective === "Prometheus";
  return effective.type === "prometheus" || effective.uid === "prometheus";
}

/** Every panel of a dashboard, rows' nested panels included. */
export function panelsOf(dashboard: Dashboard): DashboardPanel[] {
  const all: DashboardPanel[] = [];
  const walk = (panels: DashboardPanel[] | undefined) => {
    for (const panel of panels ?? []) {
      all.push(panel);
      walk(panel.panels);
    }
  };
  walk(dashboard.panels);
  return all;
}

/**
 * The PromQL inside a Grafana Prometheus variable query: `label_values(selector, label)` → the selector,
 * `query_result(expr)` → expr; label_names(), metrics(regex) and `label_values(label)` read no particular metric.
 */
export function variableQueryExpression(query: string): string | undefined {
  const trimmed = query.trim();
  const labelValues = /^label_values\(\s*(.+)\s*,\s*[A-Za-z_][A-Za-z0-9_]*\s*\)$/s.exec(trimmed);
  if (labelValues) return labelValues[1];
  const queryResult = /^query_result\(\s*(.+)\s*\)$/s.exec(trimmed);
  if (queryResult) return queryResult[1];
  if (/^(label_values|label_names|metrics)\(/.test(trimmed)) return undefined;
  return trimmed || undefined;
}

/** The PromQL expressions of one dashboard: panel targets, annotations, and template-variable queries. */
export function dashboardExpressions(dashboard: Dashboard, file: string): PromExpression[] {
  const found: PromExpression[] = [];
  for (const panel of panelsOf(dashboard)) {
    for (const target of panel.targets ?? []) {
      if (typeof target.expr !== "string" || !isPrometheus(target.datasource, panel.datasource)) continue;
      found.push({ file, where: `panel ${panel.id ?? "?"} "${panel.title ?? ""}" target ${target.refId ?? "?"}`, kind: "panel", expr: target.expr });
    }
  }
  for (const annotation of dashboard.annotations?.list ?? []) {
    if (typeof annotation.expr === "string" && annotation.expr && isPrometheus(annotation.datasource, undefined)) {
      found.push({ file, where: `annotation "${annotation.name ?? ""}"`, kind: "annotation", expr: annotation.expr });
    }
  }
  for (const variable of dashboard.templating?.list ?? []) {
    if (variable.type !== "query" || !isPrometheus(variable.datasource, undefined)) continue;
    const query = typeof variable.query === "string" ? variable.query : (variable.query as { query?: string } | undefined)?.query;
    const expr = query === undefined ? undefined : variableQueryExpression(query);
    if (expr) found.push({ file, where: `variable $${variable.name ?? "?"}`, kind: "variable", expr });
  }
  return found;
}

interface RuleFile {
  groups?: Array<{ name?: string; rules?: Array<{ record?: string; alert?: string; expr?: unknown }> }>;
}

/** The expressions of a Prometheus rule file, each named by its group and rule. */
export function ruleExpressions(rules: RuleFile, file: string): PromExpression[] {
  const found: PromExpression[] = [];
  for (const group of rules.groups ?? []) {
    for (const rule of group.rules ?? []) {
      if (rule.expr === undefined || rule.expr === null) continue;
      const kind = rule.alert ? "alert" : "record";
      found.push({ file, where: `group ${group.name ?? "?"} ${kind} ${rule.alert ?? rule.record ?? "?"}`, kind, expr: String(rule.expr) });
    }
  }
  return found;
}

/** The names that the rule files record. */
export function recordedNames(root = ROOT): string[] {
  const names = new Set<string>();
  for (const file of listFiles(join(root, "deploy/prometheus/rules"), /\.ya?ml$/)) {
    const rules = parseYaml(readFileSync(file, "utf8")) as RuleFile;
    for (const group of rules.groups ?? []) for (const rule of group.rules ?? []) if (rule.record) names.add(rule.record);
  }
  return [...names].sort();
}

function listFiles(dir: string, pattern: RegExp): string[] {
  return readdirSync(dir)
    .filter((name) => pattern.test(name))
    .sort()
    .map((name) => join(dir, name));
}

/** Every PromQL expression of the dashboards and rule files under `root`. */
export function collectExpressions(root = ROOT): PromExpression[] {
  const found: PromExpression[] = [];
  for (const file of listFiles(join(root, "grafana/dashboards"), /\.json$/)) {
    const dashboard = JSON.parse(readFileSync(file, "utf8")) as Dashboard;
    found.push(...dashboardExpressions(dashboard, `grafana/dashboards/${basename(file)}`));
  }
  for (const file of listFiles(join(root, "deploy/prometheus/rules"), /\.ya?ml$/)) {
    const rules = parseYaml(readFileSync(file, "utf8")) as RuleFile;
    found.push(...ruleExpressions(rules, `deploy/prometheus/rules/${basename(file)}`));
  }
  return found;
}

/** Metric name → where it is read, over every expression under `root` (for comparing with a live scrape). */
export function metricUsage(root = ROOT): Map<string, string[]> {
  const usage = new Map<string, string[]>();
  for (const e of collectExpressions(root)) {
    for (const name of metricNamesIn(e.expr)) {
      const places = usage.get(name) ?? [];
      places.push(`${e.file}: ${e.where}`);
      usage.set(name, places);
    }
  }
  return usage;
}
