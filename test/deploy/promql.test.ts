/**
 * test/support/promql.ts on fixed expressions: which metric names a PromQL expression reads, as the real PromQL grammar
 * (@prometheus-io/lezer-promql) sees them, and how expressions are gathered from dashboards and rule files.
 */
import {
  collectExpressions,
  dashboardExpressions,
  interpolateGrafanaVariables,
  metricNamesIn,
  promqlSyntaxErrors,
  recordingRulesIn,
  ruleExpressions,
  variableQueryExpression,
  type Dashboard,
} from "../support/promql.js";

describe("metricNamesIn", () => {
  test.each([
    ["a bare selector", "up", ["up"]],
    ["matchers and a range", 'rate(mcsv_rpc_duration_seconds_count{side="server", code!="ok"}[5m])', ["mcsv_rpc_duration_seconds_count"]],
    [
      "both sides of a binary operation, sorted and without repeats",
      "sum by (service) (rate(b_total[5m])) / on (service) group_left sum by (service) (rate(a_total[5m])) + rate(b_total[1h])",
      ["a_total", "b_total"],
    ],
    ["a histogram quantile", "histogram_quantile(0.95, sum by (le) (rate(x_seconds_bucket[5m])))", ["x_seconds_bucket"]],
    ["offset, @ and a subquery", "max_over_time(rate(a_total[5m] offset 1h)[1h:1m]) - b @ end()", ["a_total", "b"]],
    ["a __name__ matcher", '{__name__="nodejs_heap_size_used_bytes", service="user-svc"}', ["nodejs_heap_size_used_bytes"]],
    ["a UTF-8 quoted metric name", '{"my.metric.total", service="x"}', ["my.metric.total"]],
    ["no selector at all", "vector(1) + time()", []],
    ["strings that look like metric names are not selectors", 'label_replace(up, "dst", "other_total", "src", "(.*)")', ["up"]],
    ["a __name__ regular expression names no particular metric", '{__name__=~"mcsv_.+"}', []],
  ])("%s", (_what, expr, names) => {
    expect(metricNamesIn(expr)).toEqual(names);
  });

  test("leaves recording rules out, and recordingRulesIn reports them", () => {
    const expr = "slo:sli_error:ratio_rate1h / on (slo) group_left () slo:error_budget:ratio > bool 14.4 and raw_total";
    expect(metricNamesIn(expr)).toEqual(["raw_total"]);
    expect(recordingRulesIn(expr)).toEqual(["slo:error_budget:ratio", "slo:sli_error:ratio_rate1h"]);
  });

  test("reads dashboard queries after Grafana's variables are replaced", () => {
    const expr = 'sum by (service) (rate(mcsv_emails_total{service=~"$service", type="${type:regex}"}[$__rate_interval] offset $shift)) / $__range_s';
    expect(metricNamesIn(expr)).toEqual(["mcsv_emails_total"]);
    expect(interpolateGrafanaVariables("rate(x[$__rate_interval]) and y[$window] and z{a=\"[[old]]\"}")).toBe('rate(x[5m]) and y[5m] and z{a="__grafana_variable"}');
    expect(interpolateGrafanaVariables('rate(x{service=~"$service"}[$__rate_interval]) > $min', { service: ".+", __rate_interval: "1m" })).toBe('rate(x{service=~".+"}[1m]) > __grafana_variable');
  });

  test("throws on invalid PromQL instead of returning a partial answer", () => {
    expect(() => metricNamesIn("sum(rate(x[5m])) by (")).toThrow(/invalid PromQL/);
    expect(() => metricNamesIn("rate(x[5m]")).toThrow(/invalid PromQL/);
  });
});

describe("promqlSyntaxErrors", () => {
  test("is empty for valid PromQL and marks where invalid PromQL goes wrong", () => {
    expect(promqlSyntaxErrors('histogram_quantile(0.95, sum by (le) (rate(x_bucket{a="b"}[5m])))')).toEqual([]);
    const errors = promqlSyntaxErrors("sum(rate(x[5m]) by (a)) +");
    expect(errors.length).toBeGreaterThan(0);
    expect(errors[0]!.context).toContain("⟦");
    expect(promqlSyntaxErrors("  ")).toHaveLength(1);
  });

  test("label_values() is a Grafana function, not PromQL", () => {
    expect(promqlSyntaxErrors("label_values(nodejs_version_info, service)").length).toBeGreaterThan(0);
    expect(variableQueryExpression("label_values(nodejs_version_info{job=\"mcsv\"}, service)")).toBe('nodejs_version_info{job="mcsv"}');
    expect(variableQueryExpression("query_result(topk(5, rate(a_total[5m])))")).toBe("topk(5, rate(a_total[5m]))");
    expect(variableQueryExpression("label_values(service)")).toBeUndefined();
    expect(variableQueryExpression("label_names()")).toBeUndefined();
  });
});

describe("collecting expressions", () => {
  test("from a dashboard: panel targets (rows included), Prometheus annotations and variables; other datasources skipped", () => {
    const dashboard: Dashboard = {
      panels: [
        { id: 1, title: "RPS", datasource: { type: "prometheus", uid: "prometheus" }, targets: [{ refId: "A", expr: "rate(a_total[5m])" }] },
        {
          id: 2,
          type: "row",
          title: "collapsed row",
          panels: [{ id: 3, title: "nested", targets: [{ refId: "B", expr: "b", datasource: { type: "prometheus", uid: "prometheus" } }] }],
        },
        { id: 4, title: "logs", datasource: { type: "loki", uid: "loki" }, targets: [{ refId: "A", expr: '{service="x"} |= "error"' }] },
      ],
      annotations: { list: [{ name: "restarts", expr: "changes(process_start_time_seconds[2m]) > 0", datasource: { type: "prometheus", uid: "prometheus" } }] },
      templating: {
        list: [
          { name: "service", type: "query", datasource: { type: "prometheus", uid: "prometheus" }, query: { query: "label_values(nodejs_version_info, service)" } },
          { name: "old", type: "query", datasource: { type: "prometheus", uid: "prometheus" }, query: "label_values(c_total, code)" },
          { name: "custom", type: "custom", query: "a,b" },
        ],
      },
    };
    const found = dashboardExpressions(dashboard, "d.json");
    expect(found.map((e) => [e.kind, e.where, e.expr])).toEqual([
      ["panel", 'panel 1 "RPS" target A', "rate(a_total[5m])"],
      ["panel", 'panel 3 "nested" target B', "b"],
      ["annotation", 'annotation "restarts"', "changes(process_start_time_seconds[2m]) > 0"],
      ["variable", "variable $service", "nodejs_version_info"],
      ["variable", "variable $old", "c_total"],
    ]);
  });

  test("from a rule file: recording and alerting rules", () => {
    const found = ruleExpressions(
      { groups: [{ name: "g", rules: [{ record: "a:b:rate5m", expr: "rate(b[5m])" }, { alert: "TooMany", expr: "a:b:rate5m > 1" }, { alert: "Constant", expr: 1 }] }] },
      "r.yml",
    );
    expect(found.map((e) => [e.kind, e.where, e.expr])).toEqual([
      ["record", "group g record a:b:rate5m", "rate(b[5m])"],
      ["alert", "group g alert TooMany", "a:b:rate5m > 1"],
      ["alert", "group g alert Constant", "1"],
    ]);
  });

  test("from this repository: the three dashboards and the three rule files, every one named by file and place", () => {
    const found = collectExpressions();
    const files = [...new Set(found.map((e) => e.file))].sort();
    expect(files).toEqual([
      "deploy/prometheus/rules/recording.yml",
      "deploy/prometheus/rules/slo.yml",
      "deploy/prometheus/rules/thresholds.yml",
      "grafana/dashboards/node-runtime.json",
      "grafana/dashboards/overview.json",
      "grafana/dashboards/pipeline.json",
    ]);
    expect(new Set(found.map((e) => e.kind))).toEqual(new Set(["panel", "annotation", "variable", "record", "alert"]));
  });
});
