/**
 * The dashboards and rules against a real Prometheus scraping the five live services, and an alert delivered through a
 * real Alertmanager. Prometheus (Debian's 2.42) gets deploy/prometheus/prometheus.yml's `mcsv` job pointed at this
 * test's services, with a 1 s scrape and evaluation interval, and the shipped rule files (one alert's `for:`
 * shortened in the copy it loads). Alertmanager gets deploy/alertmanager/alertmanager.yml with its webhooks pointed
 * at a server in this test and 1 s group waits.
 *
 * - On a healthy, freshly started system with a little traffic, every dashboard query (panels and variables, Grafana
 *   variables given concrete values) has a value: no "No data" where the truth is 0. The restart annotations are
 *   events: nothing while healthy, something once a service restarts.
 * - With the email service stopped while users sign up, send_email attempts fail, JobAttemptsFailing fires, and its
 *   notification reaches the `page` webhook with its labels and runbook.
 * - Every rule group evaluates without error, and every recording rule has a value.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { ConversionState, Quality, UserService } from "@mcsv/sdk";
import { stringify } from "yaml";
import { SERVICE_KEYS } from "../../services/shared/topology.js";
import { startAlertWebhook, type AlertWebhook, type WebhookNotification } from "../support/alert-webhook.js";
import { headingSlugs } from "../support/markdown.js";
import { photoLikePng } from "../support/pdf.js";
import { startAlertmanager, startPrometheus, type PrometheusProcess, type ToolProcess } from "../support/prometheus-server.js";
import { collectExpressions, interpolateGrafanaVariables } from "../support/promql.js";
import { eventually, startTestSystem, untilIdle, type TestSystem } from "../support/system.js";
import { ROOT, readYaml } from "./support.js";

/** What Grafana would put in for the dashboards' variables: every service, and a rate window of a short dashboard range. */
const GRAFANA_VALUES = { service: ".+", __rate_interval: "1m" };
/** The alert this test makes fire, and its `for:` in the shipped rules (too long for a test; shortened in the copy). */
const FAULT_ALERT = { name: "JobAttemptsFailing", file: "thresholds.yml", shippedFor: "for: 10m", testFor: "for: 1s" };

interface ScrapeJob {
  job_name: string;
  scrape_protocols?: string[];
  static_configs: Array<{ targets: string[]; labels?: Record<string, string> }>;
  authorization?: { type: string; credentials: string };
}
interface RuleFile {
  groups: Array<{ name: string; rules: Array<{ record?: string; alert?: string; labels?: Record<string, string> }> }>;
}
interface AlertmanagerConfig {
  route: { group_wait?: string; group_interval?: string; routes?: Array<{ group_wait?: string; group_interval?: string }> };
  receivers: Array<{ name: string; webhook_configs?: Array<{ url: string }> }>;
}

const RULE_FILES = readdirSync(join(ROOT, "deploy/prometheus/rules")).filter((f) => f.endsWith(".yml")).sort();

let system: TestSystem;
let webhook: AlertWebhook;
let alertmanager: ToolProcess;
let prometheus: PrometheusProcess;
/** When Prometheus held the healthy traffic of the first test (a rule evaluated after it sees that traffic). */
let trafficScraped = Number.POSITIVE_INFINITY;

/** The shipped rule files, with FAULT_ALERT's `for:` shortened and nothing else changed. */
function ruleFilesForTest(): Record<string, string> {
  const files: Record<string, string> = {};
  for (const file of RULE_FILES) {
    let text = readFileSync(join(ROOT, "deploy/prometheus/rules", file), "utf8");
    if (file === FAULT_ALERT.file) {
      const start = text.indexOf(`- alert: ${FAULT_ALERT.name}\n`);
      const next = text.indexOf("- alert:", start + 1);
      const at = text.indexOf(FAULT_ALERT.shippedFor, start);
      if (start < 0 || at < 0 || (next >= 0 && at > next)) throw new Error(`${FAULT_ALERT.name} with ${FAULT_ALERT.shippedFor} not found in ${file}`);
      text = text.slice(0, at) + FAULT_ALERT.testFor + text.slice(at + FAULT_ALERT.shippedFor.length);
    }
    files[`rules/${file}`] = text;
  }
  return files;
}

/** deploy/prometheus/prometheus.yml's `mcsv` job and rule files, aimed at this test's services and Alertmanager. */
function prometheusConfigForTest(alertmanagerUrl: string): string {
  const shipped = readYaml<{ rule_files: string[]; scrape_configs: ScrapeJob[] }>("deploy/prometheus/prometheus.yml");
  const mcsv = shipped.scrape_configs.find((job) => job.job_name === "mcsv")!;
  // Debian's Prometheus 2.42 predates scrape_protocols; it asks for OpenMetrics first all the same.
  const { scrape_protocols: _protocols, ...job } = mcsv;
  return stringify({
    global: { scrape_interval: "1s", scrape_timeout: "1s", evaluation_interval: "1s" },
    rule_files: shipped.rule_files,
    alerting: { alertmanagers: [{ static_configs: [{ targets: [new URL(alertmanagerUrl).host] }] }] },
    scrape_configs: [
      {
        ...job,
        authorization: { type: "Bearer", credentials: system.credentials.operatorToken },
        static_configs: [{ targets: SERVICE_KEYS.map((key) => new URL(system.urls[key]).host), labels: mcsv.static_configs[0]!.labels ?? {} }],
      },
    ],
  });
}

/** deploy/alertmanager/alertmanager.yml with every receiver's webhook posting to `<webhook>/<receiver>`, and 1 s waits. */
function alertmanagerConfigForTest(webhookUrl: string): string {
  const config = readYaml<AlertmanagerConfig>("deploy/alertmanager/alertmanager.yml");
  for (const receiver of config.receivers) for (const hook of receiver.webhook_configs ?? []) hook.url = `${webhookUrl}/${receiver.name}`;
  for (const route of [config.route, ...(config.route.routes ?? [])]) {
    if (route.group_wait) route.group_wait = "1s";
    if (route.group_interval) route.group_interval = "1s";
  }
  return stringify(config);
}

/** Resolves once Prometheus has scraped every target `times` times more (and so evaluated the rules after them). */
async function scrapes(times = 2): Promise<void> {
  for (let i = 0; i < times; i++) {
    const mark = Date.now();
    await eventually(prometheus.targets, (targets) => targets.length === SERVICE_KEYS.length && targets.every((t) => Date.parse(t.lastScrape) > mark), 10_000);
  }
  await new Promise((resolve) => setTimeout(resolve, 1_100)); // one more evaluation of the rules
}

/** Both workflows once: two sign-ups, and a conversion that succeeds. */
async function traffic(round: number): Promise<void> {
  const users = system.client(UserService, "user");
  for (const n of [1, 2]) await users.createUser({ name: `Live ${round}.${n}`, email: `live-${round}-${n}@example.com`, idempotencyKey: `live-${round}-${n}` });
  const { conversion } = await users.convertImage({
    userEmail: `live-${round}-1@example.com`,
    filename: "live.png",
    options: { quality: Quality.LOSSLESS },
    idempotencyKey: `live-convert-${round}`,
    source: { case: "imageData", value: await photoLikePng(16, 16) },
  });
  const state = await eventually(async () => {
    const current = (await users.getConversion({ conversionId: conversion!.id })).conversion?.state;
    return current === ConversionState.SUCCEEDED || current === ConversionState.FAILED ? current : undefined;
  }, "the conversion to finish");
  expect(state).toBe(ConversionState.SUCCEEDED);
  await untilIdle(system);
}

const liveQuery = (expr: string) => interpolateGrafanaVariables(expr, GRAFANA_VALUES);

beforeAll(async () => {
  webhook = await startAlertWebhook();
  system = await startTestSystem();
  alertmanager = await startAlertmanager(alertmanagerConfigForTest(webhook.url));
  prometheus = await startPrometheus(prometheusConfigForTest(alertmanager.url), ruleFilesForTest());
  const targets = await eventually(prometheus.targets, (all) => all.length === SERVICE_KEYS.length && all.every((t) => t.health === "up"), 20_000);
  expect(targets.map((t) => t.labels["service"] ?? t.labels["instance"]).length).toBe(SERVICE_KEYS.length);
}, 120_000);

afterAll(async () => {
  await prometheus?.stop();
  await alertmanager?.stop();
  await webhook?.close();
  await system?.close();
});

test("on a healthy, freshly started system every dashboard query has a value, and no restart is annotated", async () => {
  // Round one creates the labelled series; round two, scrapes later, makes their rates non-zero.
  await traffic(1);
  await scrapes();
  await traffic(2);
  await scrapes();
  trafficScraped = Date.now();

  const dashboards = collectExpressions().filter((e) => e.file.startsWith("grafana/"));
  const queries = dashboards.filter((e) => e.kind === "panel" || e.kind === "variable");
  expect(queries.length).toBeGreaterThan(40);
  const empty: string[] = [];
  for (const e of queries) {
    const result = await prometheus.query(liveQuery(e.expr));
    if (!result.some((sample) => Number.isFinite(Number(sample.value[1])))) empty.push(`${e.file}: ${e.where}: ${JSON.stringify(result.map((s) => s.value[1]))}`);
  }
  expect(empty).toEqual([]);

  // Annotations mark events (Grafana draws one for every point returned): a healthy system has none.
  const annotations = dashboards.filter((e) => e.kind === "annotation");
  expect(annotations.map((e) => e.where)).toEqual(['annotation "Restarts"', 'annotation "Restarts"']);
  for (const e of annotations) expect({ where: `${e.file}: ${e.where}`, result: await prometheus.query(liveQuery(e.expr)) }).toEqual({ where: `${e.file}: ${e.where}`, result: [] });
}, 60_000);

test("with the email service down while users sign up, JobAttemptsFailing reaches the page webhook with its labels and runbook", async () => {
  const users = system.client(UserService, "user");
  await system.stopService("email");
  let signingUp = true;
  let n = 0;
  const signups = (async () => {
    while (signingUp) {
      n += 1;
      await users.createUser({ name: `Outage ${n}`, email: `outage-${n}@example.com`, idempotencyKey: `outage-${n}` });
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  })();
  let delivered: WebhookNotification;
  try {
    delivered = await eventually(
      () => webhook.notifications.find((note) => note.body.alerts.some((a) => a.status === "firing" && a.labels["alertname"] === FAULT_ALERT.name)),
      `${FAULT_ALERT.name} at the webhook (Prometheus: ${prometheus.output().slice(-500)})`,
      45_000,
    );
    // Meanwhile the panels whose "no error" is a 0 show the errors themselves, and no stand-in 0 beside them.
    await scrapes(1);
    const panel = (title: string) => liveQuery(collectExpressions().find((e) => e.where.includes(`"${title}"`))!.expr);
    const calls = await prometheus.query(panel("Calls to other services: error ratio"));
    expect(calls.find((s) => s.metric["service"] === "job-svc" && s.metric["rpc_method"] === "SendEmail")).toEqual({ metric: expect.anything(), value: [expect.any(Number), expect.stringMatching(/^(0\.\d*[1-9]\d*|1)$/)] });
    const failed = await prometheus.query(panel("Failed attempts/s (retry or discarded)"));
    expect(failed.find((s) => s.metric["task"] === "send_email" && s.metric["outcome"] === "retry")?.value[1]).toMatch(/^\d/);
    expect(Number(failed.find((s) => s.metric["task"] === "send_email" && s.metric["outcome"] === "retry")!.value[1])).toBeGreaterThan(0);
    expect(failed.filter((s) => Object.keys(s.metric).length === 0)).toEqual([]);
  } finally {
    signingUp = false;
    await signups;
    await system.startService("email");
  }
  expect(n).toBeGreaterThan(1);
  // Routed by severity: the `page` receiver's webhook.
  expect({ path: delivered.path, receiver: delivered.body.receiver, version: delivered.body.version }).toEqual({ path: "/page", receiver: "page", version: "4" });
  const alert = delivered.body.alerts.find((a) => a.labels["alertname"] === FAULT_ALERT.name)!;
  expect(alert.labels).toEqual({ alertname: FAULT_ALERT.name, severity: "page", task: "send_email" });
  expect(alert.annotations).toEqual({ summary: expect.stringMatching(/^\d+(\.\d+)?% of send_email attempts fail$/), description: expect.stringContaining("send_email"), runbook: "docs/runbooks.md#jobattemptsfailing" });
  expect(headingSlugs("docs/runbooks.md").has(alert.annotations["runbook"]!.split("#")[1]!)).toBe(true);
  // Nothing else was delivered: the healthy part of the system raised no alert.
  const others = webhook.notifications.flatMap((note) => note.body.alerts.map((a) => a.labels["alertname"])).filter((name) => name !== FAULT_ALERT.name);
  expect(others).toEqual([]);

  // The email service came back as a new process: the restart annotations show it.
  const annotations = collectExpressions().filter((e) => e.kind === "annotation");
  for (const e of annotations) {
    const result = await eventually(() => prometheus.query(liveQuery(e.expr)), (r) => r.length > 0, 15_000);
    expect(result.map((sample) => sample.metric["service"])).toEqual(["email-svc"]);
  }
}, 75_000);

test("every rule group evaluates without error, and every recording rule has a value", async () => {
  // The groups of the longest windows evaluate once a minute (their shipped interval): within a minute of the
  // traffic, they have seen it too.
  const groups = await eventually(
    prometheus.ruleGroups,
    (all) => all.length > 0 && all.every((g) => g.rules.every((r) => Date.parse(r.lastEvaluation) > trafficScraped)),
    70_000,
  );
  const shipped = RULE_FILES.flatMap((file) => readYaml<RuleFile>(`deploy/prometheus/rules/${file}`).groups);
  expect(groups.map((g) => g.name).sort()).toEqual(shipped.map((g) => g.name).sort());
  const unhealthy = groups.flatMap((g) => g.rules.filter((r) => r.health !== "ok" || r.lastError).map((r) => `${g.name}/${r.name}: ${r.health} ${r.lastError ?? ""}`));
  expect(unhealthy).toEqual([]);

  const records = shipped.flatMap((g) => g.rules.filter((r) => r.record).map((r) => ({ group: g.name, record: r.record!, labels: r.labels ?? {} })));
  expect(records.length).toBeGreaterThan(30);
  const empty: string[] = [];
  for (const { group, record, labels } of records) {
    const selector = `${record}{${Object.entries(labels).map(([k, v]) => `${k}="${v}"`).join(", ")}}`;
    const result = await prometheus.query(selector);
    if (!result.some((sample) => Number.isFinite(Number(sample.value[1])))) empty.push(`${group}: ${selector}: ${JSON.stringify(result.map((s) => s.value[1]))}`);
  }
  expect(empty).toEqual([]);
}, 80_000);
