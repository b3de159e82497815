/**
 * The Alertmanager configuration as code, checked by Alertmanager's own amtool: it loads, every severity the rules use
 * reaches its own receiver (anything else the default webhook), and the commented PagerDuty and Slack examples are
 * valid once uncommented. amtool comes from the Debian `prometheus-alertmanager` package
 * (`node scripts/ensure-deps.mjs --test` installs it). Delivery itself is tested in live-prometheus.test.ts.
 */
import { readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT, readYaml, run, tempCopy, which } from "./support.js";

const AMTOOL = which("amtool");
if (!AMTOOL) throw new Error("amtool is missing: run `node scripts/ensure-deps.mjs --test` (installs the Debian prometheus-alertmanager package)");
const amtool = AMTOOL;
const CONFIG = join(ROOT, "deploy/alertmanager/alertmanager.yml");

/** The receiver Alertmanager's routing tree picks for an alert with these labels. */
async function receiverFor(config: string, labels: Record<string, string>): Promise<string> {
  const result = await run(amtool, ["config", "routes", "test", `--config.file=${config}`, ...Object.entries(labels).map(([k, v]) => `${k}=${v}`)]);
  expect(result.code).toBe(0);
  return result.stdout.trim();
}

test("passes amtool check-config", async () => {
  const result = await run(amtool, ["check-config", CONFIG]);
  expect({ code: result.code, output: result.stdout + result.stderr }).toEqual({ code: 0, output: expect.stringContaining("SUCCESS") });
});

test("routes each severity the rules use to its own receiver, and anything else to the default webhook", async () => {
  const severities = new Set<string>();
  for (const file of readdirSync(join(ROOT, "deploy/prometheus/rules")).filter((f) => f.endsWith(".yml"))) {
    const rules = readYaml<{ groups: Array<{ rules: Array<{ alert?: string; labels?: Record<string, string> }> }> }>(`deploy/prometheus/rules/${file}`);
    for (const rule of rules.groups.flatMap((g) => g.rules)) if (rule.alert) severities.add(rule.labels?.["severity"] ?? "(none)");
  }
  expect([...severities].sort()).toEqual(["page", "ticket"]);
  expect(await receiverFor(CONFIG, { alertname: "JobAttemptsFailing", severity: "page", task: "send_email" })).toBe("page");
  expect(await receiverFor(CONFIG, { alertname: "JobsDiscarded", severity: "ticket", task: "send_email" })).toBe("ticket");
  expect(await receiverFor(CONFIG, { alertname: "Unlabelled" })).toBe("webhook");
  const config = readYaml<{ receivers: Array<{ name: string; webhook_configs?: Array<{ url: string }> }> }>("deploy/alertmanager/alertmanager.yml");
  for (const receiver of config.receivers) expect({ receiver: receiver.name, webhooks: receiver.webhook_configs?.length ?? 0 }).toEqual({ receiver: receiver.name, webhooks: 1 });
});

test("the commented PagerDuty and Slack receivers are valid configuration once uncommented", async () => {
  const copy = tempCopy("deploy/alertmanager");
  try {
    const text = readFileSync(join(copy, "alertmanager.yml"), "utf8");
    const uncommented = text.replace(/^(\s+)# ((?:pagerduty_configs|slack_configs):|  )/gm, "$1$2");
    expect(uncommented).toContain("\n    pagerduty_configs:\n");
    expect(uncommented).toContain("\n    slack_configs:\n");
    writeFileSync(join(copy, "alertmanager.yml"), uncommented);
    const result = await run(amtool, ["check-config", join(copy, "alertmanager.yml")]);
    expect({ code: result.code, output: result.stdout + result.stderr }).toEqual({ code: 0, output: expect.stringContaining("SUCCESS") });
  } finally {
    rmSync(copy, { recursive: true, force: true });
  }
});
