/**
 * The Prometheus configuration as code, checked by Prometheus' own promtool: the config (with its rule files) loads,
 * the rules are valid, the promtool unit tests in deploy/prometheus/tests pass, every alert is tested in both
 * directions, and a weakened copy of the rules makes exactly the tests that guard those rules fail (so the tests are
 * real). promtool comes from the Debian `prometheus` package (`node scripts/ensure-deps.mjs --test` installs it).
 */
import { readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { SERVICES } from "../../services/shared/topology.js";
import { headingSlugs } from "../support/markdown.js";
import { ROOT, readYaml, run, tempCopy, which } from "./support.js";

const PROMTOOL = which("promtool");
if (!PROMTOOL) {
  throw new Error("promtool is missing: run `node scripts/ensure-deps.mjs --test` (installs the Debian prometheus package) or install Prometheus' promtool");
}
const promtool = PROMTOOL;

interface ScrapeConfig {
  job_name: string;
  scrape_protocols?: string[];
  metrics_path?: string;
  static_configs?: Array<{ targets: string[] }>;
}
interface PrometheusConfig {
  rule_files?: string[];
  scrape_configs?: ScrapeConfig[];
}
interface RuleFile {
  groups: Array<{
    name: string;
    interval?: string;
    rules: Array<{ alert?: string; record?: string; expr: string; for?: string; labels?: Record<string, string>; annotations?: Record<string, string> }>;
  }>;
}
interface UnitTestFile {
  rule_files: string[];
  tests: Array<{ name: string; alert_rule_test?: Array<{ alertname: string; eval_time: string; exp_alerts?: unknown[] }> }>;
}

const RULE_FILES = readdirSync(join(ROOT, "deploy/prometheus/rules")).filter((f) => f.endsWith(".yml"));
const TEST_FILES = readdirSync(join(ROOT, "deploy/prometheus/tests")).filter((f) => f.endsWith(".yml"));
const PROTOCOLS = ["PrometheusProto", "OpenMetricsText0.0.1", "OpenMetricsText1.0.0", "PrometheusText0.0.4", "PrometheusText1.0.0"];

/** promtool's version, e.g. [2, 42, 0]. */
async function promtoolVersion(): Promise<number[]> {
  const { stdout, stderr } = await run(promtool, ["--version"]);
  const match = /version (\d+)\.(\d+)\.(\d+)/.exec(stdout + stderr);
  if (!match) throw new Error(`cannot read promtool's version from: ${stdout}${stderr}`);
  return match.slice(1).map(Number);
}

/** Names of the unit tests promtool reports as failed. */
function failedTests(output: string): string[] {
  return [...new Set([...output.matchAll(/^\s*name: (.+),\s*$/gm)].map((m) => m[1]!.trim()))].sort();
}

describe("prometheus.yml", () => {
  const config = readYaml<PrometheusConfig>("deploy/prometheus/prometheus.yml");

  test("passes promtool check config, rule files included", async () => {
    // scrape_protocols arrived in Prometheus 2.49; Debian 12's promtool (2.42) rejects the field. Prometheus 3 in the
    // compose stack reads it. With an older promtool, check a copy without it; the field itself is checked below.
    const [major = 0, minor = 0] = await promtoolVersion();
    let dir = join(ROOT, "deploy/prometheus");
    let copy: string | undefined;
    if (major < 2 || (major === 2 && minor < 49)) {
      copy = tempCopy("deploy/prometheus");
      const text = readFileSync(join(copy, "prometheus.yml"), "utf8");
      const stripped = text.replace(/^\s*scrape_protocols:.*\n/gm, "");
      expect(stripped).not.toBe(text);
      writeFileSync(join(copy, "prometheus.yml"), stripped);
      dir = copy;
    }
    try {
      const result = await run(promtool, ["check", "config", "prometheus.yml"], { cwd: dir });
      expect({ code: result.code, output: result.stdout + result.stderr }).toEqual({ code: 0, output: expect.stringContaining("SUCCESS") });
      // The rule files were found and checked too.
      for (const file of RULE_FILES) expect(result.stdout + result.stderr).toContain(file);
    } finally {
      if (copy) rmSync(copy, { recursive: true, force: true });
    }
  });

  test("scrapes the five services at their topology ports, OpenMetrics first (exemplars)", () => {
    const mcsv = config.scrape_configs?.find((job) => job.job_name === "mcsv");
    expect(mcsv).toBeDefined();
    const targets = mcsv!.static_configs!.flatMap((c) => c.targets).sort();
    const expected = Object.entries(SERVICES)
      .map(([key, service]) => `${key}:${service.port}`)
      .sort();
    expect(targets).toEqual(expected);
    expect(mcsv!.metrics_path ?? "/metrics").toBe("/metrics");
    expect(mcsv!.scrape_protocols?.[0]).toBe("OpenMetricsText1.0.0");
    for (const protocol of mcsv!.scrape_protocols ?? []) expect(PROTOCOLS).toContain(protocol);
    expect(config.rule_files).toEqual(["rules/*.yml"]);
  });
});

describe("rules", () => {
  test("pass promtool check rules", async () => {
    const result = await run(promtool, ["check", "rules", ...RULE_FILES], { cwd: join(ROOT, "deploy/prometheus/rules") });
    expect({ code: result.code, output: result.stdout + result.stderr }).toEqual({ code: 0, output: expect.stringContaining("SUCCESS") });
  });

  test("the SLO alerts follow the multi-window, multi-burn-rate pattern with a page and a ticket per SLO", () => {
    const slo = readYaml<RuleFile>("deploy/prometheus/rules/slo.yml");
    const alerts = slo.groups.flatMap((g) => g.rules).filter((r) => r.alert);
    const slos = new Set(alerts.map((a) => /slo="([^"]+)"/.exec(a.expr)?.[1]));
    expect([...slos].sort()).toEqual(["convert-image-availability", "convert-image-latency", "create-user-availability", "create-user-latency"]);
    for (const alert of alerts) {
      const severity = alert.labels?.["severity"];
      const windows = [...alert.expr.matchAll(/ratio_rate(\w+)\{/g)].map((m) => m[1]);
      const factors = [...alert.expr.matchAll(/\(([\d.]+) \* [\d.]+\)/g)].map((m) => m[1]);
      if (severity === "page") {
        expect({ alert: alert.alert, windows, factors }).toEqual({ alert: alert.alert, windows: ["1h", "5m", "6h", "30m"], factors: ["14.4", "14.4", "6", "6"] });
      } else {
        expect({ alert: alert.alert, severity, windows, factors }).toEqual({ alert: alert.alert, severity: "ticket", windows: ["1d", "2h", "3d", "6h"], factors: ["3", "3", "1", "1"] });
      }
    }
  });
});

describe("alerts", () => {
  const alerts = RULE_FILES.flatMap((f) => readYaml<RuleFile>(`deploy/prometheus/rules/${f}`).groups.flatMap((g) => g.rules)).filter((r) => r.alert);

  test("each is a page or a ticket, with a summary, a description and a runbook section of docs/runbooks.md that exists", () => {
    const sections = headingSlugs("docs/runbooks.md");
    for (const alert of alerts) {
      const runbook = alert.annotations?.["runbook"] ?? "";
      const [file, anchor = ""] = runbook.split("#");
      expect({ alert: alert.alert, severity: ["page", "ticket"].includes(alert.labels?.["severity"] ?? ""), summary: Boolean(alert.annotations?.["summary"]), description: Boolean(alert.annotations?.["description"]), file, section: sections.has(anchor) }).toEqual({
        alert: alert.alert,
        severity: true,
        summary: true,
        description: true,
        file: "docs/runbooks.md",
        section: true,
      });
    }
  });

  test("the memory alert divides by the containers' memory limits of deploy/k8s", () => {
    const limits = readYaml<RuleFile>("deploy/prometheus/rules/thresholds.yml")
      .groups.flatMap((g) => g.rules)
      .filter((r) => r.record === "mcsv:process_memory_limit:bytes")
      .map((r) => [r.labels?.["service"], Number(/^vector\((\d+)\)$/.exec(r.expr)?.[1])]);
    const units: Record<string, number> = { Mi: 2 ** 20, Gi: 2 ** 30 };
    const k8s = Object.entries(SERVICES).map(([key, service]) => {
      const text = readFileSync(join(ROOT, `deploy/k8s/${key}.yaml`), "utf8");
      const [, amount, unit] = /limits:\s*\n(?:\s+cpu:.*\n)?\s+memory:\s*(\d+)(Mi|Gi)/.exec(text) ?? [];
      return [service.name, Number(amount) * units[unit ?? ""]!];
    });
    expect(limits.sort()).toEqual(k8s.sort());
  });
});

describe("promtool unit tests", () => {
  test("pass", async () => {
    const result = await run(promtool, ["test", "rules", ...TEST_FILES], { cwd: join(ROOT, "deploy/prometheus/tests") });
    expect({ code: result.code, failed: failedTests(result.stdout + result.stderr) }).toEqual({ code: 0, failed: [] });
    expect((result.stdout + result.stderr).match(/SUCCESS/g)).toHaveLength(TEST_FILES.length);
  });

  test("every alert is expected to fire somewhere and to stay quiet somewhere", () => {
    const alerts = RULE_FILES.flatMap((f) => readYaml<RuleFile>(`deploy/prometheus/rules/${f}`).groups.flatMap((g) => g.rules))
      .map((r) => r.alert)
      .filter((name): name is string => Boolean(name));
    const cases = TEST_FILES.flatMap((f) => readYaml<UnitTestFile>(`deploy/prometheus/tests/${f}`).tests.flatMap((t) => t.alert_rule_test ?? []));
    expect(alerts.length).toBeGreaterThanOrEqual(8);
    for (const alert of alerts) {
      const own = cases.filter((c) => c.alertname === alert);
      expect({ alert, fires: own.some((c) => (c.exp_alerts ?? []).length > 0), quiet: own.some((c) => (c.exp_alerts ?? []).length === 0) }).toEqual({
        alert,
        fires: true,
        quiet: true,
      });
    }
  });

  test("fail, each exactly where expected, when the threshold alerts are weakened", async () => {
    const copy = tempCopy("deploy/prometheus");
    const path = join(copy, "rules", "thresholds.yml");
    const edit = (from: string, to: string) => {
      const text = readFileSync(path, "utf8");
      expect(text).toContain(from);
      writeFileSync(path, text.replace(from, to));
    };
    try {
      // The job replicas' identical counts added up instead of read once.
      edit("sum by (task) (max by (task, state) (mcsv_queue_jobs", "sum by (task) (sum by (task, state) (mcsv_queue_jobs");
      // No minimum number of retries: one job retrying alone pages.
      edit("sum by (task) (increase(mcsv_job_attempts_total{outcome=\"retry\"}[5m])) >= 10", "sum by (task) (increase(mcsv_job_attempts_total{outcome=\"retry\"}[5m])) >= 1");
      // The memory limit ten times too high.
      edit("mcsv:process_memory_limit:bytes\n          > 0.9", "mcsv:process_memory_limit:bytes\n          > 9");
      const result = await run(promtool, ["test", "rules", "thresholds.test.yml"], { cwd: join(copy, "tests") });
      expect(result.code).not.toBe(0);
      expect(failedTests(result.stdout + result.stderr)).toEqual(
        [
          "JobQueueBacklog: 110 convert_image jobs due or retrying; scheduled jobs and the replicas' repeated counts do not add up",
          "JobAttemptsFailing: every send_email attempt fails; a few convert_image retries among successes, and one notify_client job retrying alone, do not page",
          "ProcessMemoryHigh: 95 % of the image service's 1.5 GiB limit for 10 minutes; 78 % of the email service's 256 MiB is fine",
        ].sort(),
      );
    } finally {
      rmSync(copy, { recursive: true, force: true });
    }
  });

  test("fail, each exactly where expected, when the rules are weakened", async () => {
    const copy = tempCopy("deploy/prometheus");
    const edit = (file: string, from: string, to: string) => {
      const path = join(copy, "rules", file);
      const text = readFileSync(path, "utf8");
      expect(text).toContain(from);
      writeFileSync(path, text.replace(from, to));
    };
    try {
      // The 14.4x page threshold ten times too high.
      edit("slo.yml", 'slo:sli_error:ratio_rate1h{slo="create-user-availability"} > (14.4 * 0.005)', 'slo:sli_error:ratio_rate1h{slo="create-user-availability"} > (14.4 * 0.05)');
      // The 6x branch's short window replaced by its long one: the page no longer ends when errors stop.
      edit("slo.yml", 'slo:sli_error:ratio_rate30m{slo="create-user-availability"} > (6 * 0.005)', 'slo:sli_error:ratio_rate6h{slo="create-user-availability"} > (6 * 0.005)');
      // The 3x ticket threshold ten times too high.
      edit("slo.yml", 'slo:sli_error:ratio_rate1d{slo="create-user-availability"} > (3 * 0.005)', 'slo:sli_error:ratio_rate1d{slo="create-user-availability"} > (3 * 0.05)');
      // Prometheus 3 writes le="1" as le="1.0": an exact match finds no bucket, and the latency SLI disappears.
      const slo = join(copy, "rules", "slo.yml");
      writeFileSync(slo, readFileSync(slo, "utf8").replaceAll('le=~"1|1.0"', 'le="1"'));
      // data_loss no longer counted as a server error (the RPC ratios, and the long SLIs that read the histogram).
      for (const file of ["recording.yml", "slo.yml"]) {
        const path = join(copy, "rules", file);
        const text = readFileSync(path, "utf8");
        expect(text).toContain("|data_loss");
        writeFileSync(path, text.replaceAll("|data_loss", ""));
      }

      const result = await run(promtool, ["test", "rules", "slo-page.test.yml", "slo-ticket.test.yml"], { cwd: join(copy, "tests") });
      expect(result.code).not.toBe(0);
      expect(failedTests(result.stdout + result.stderr)).toEqual(
        [
          "CreateUser: a burst after a busy quiet hour pages through the 14.4x branch alone (6h window still under 3 %)",
          "CreateUser: once errors stop, the clean 5m and 30m windows end the page although the 6h window is still over 3 %",
          "CreateUser: the 3x branch alone opens a ticket (1d and 2h over 1.5 %, 6h diluted under 0.5 % by a healthy peak)",
          'CreateUser: 20 % of successful requests slower than 1 s page (14.4 % threshold); Prometheus 3\'s le="1.0" counts',
          "ConvertImage: 2 % server errors open a ticket",
        ].sort(),
      );
    } finally {
      rmSync(copy, { recursive: true, force: true });
    }
  });
});
