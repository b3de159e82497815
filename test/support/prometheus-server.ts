/**
 * Real Prometheus and Alertmanager processes for tests (Debian's `prometheus` and `prometheus-alertmanager`), each on
 * a free port with its own data directory, and what a test asks them through their HTTP APIs. The caller writes the
 * configuration; `stop()` ends the process and removes its directory.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { freePort } from "../../scripts/lib/embedded.js";
import { eventually } from "./eventually.js";

/** Found on PATH; Debian names Alertmanager's binary prometheus-alertmanager (`node scripts/ensure-deps.mjs --test`). */
export const PROMETHEUS_BINARY = "prometheus";
export const ALERTMANAGER_BINARY = existsSync("/usr/bin/prometheus-alertmanager") ? "/usr/bin/prometheus-alertmanager" : "alertmanager";

export interface ToolProcess {
  url: string;
  /** The directory holding the configuration and the data; the caller may write more files into it. */
  dir: string;
  /** Everything the process wrote, for failure messages. */
  output(): string;
  stop(): Promise<void>;
}

/** One sample of an instant query; `value` as Prometheus sends it ("0.25", "NaN", …). */
export interface PromSample {
  metric: Record<string, string>;
  value: [number, string];
}

export interface ScrapeTarget {
  scrapeUrl: string;
  health: string;
  lastError: string;
  /** RFC 3339. */
  lastScrape: string;
  labels: Record<string, string>;
}

export interface RuleGroupState {
  name: string;
  file: string;
  rules: Array<{ name: string; type: "recording" | "alerting"; health: string; lastError?: string; lastEvaluation: string; query: string; labels?: Record<string, string> }>;
}

export interface PrometheusProcess extends ToolProcess {
  /** An instant query's vector; throws on an error answer (a query Prometheus refuses). */
  query(expr: string): Promise<PromSample[]>;
  targets(): Promise<ScrapeTarget[]>;
  ruleGroups(): Promise<RuleGroupState[]>;
}

async function startTool(binary: string, args: (port: number, dir: string) => string[], dir: string, port: number): Promise<ToolProcess> {
  const child: ChildProcess = spawn(binary, args(port, dir), { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  let failed: Error | undefined;
  child.once("error", (error) => {
    failed = error;
    output += `\n${String(error)}`;
  });
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (!failed && child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await eventually(async () => {
      if (failed) throw failed;
      if (child.exitCode !== null) throw new Error(`${binary} exited with ${child.exitCode}`);
      const res = await fetch(`${url}/-/ready`, { signal: AbortSignal.timeout(1_000) });
      await res.body?.cancel();
      return res.ok ? true : undefined;
    }, `${binary} to be ready`, 20_000);
  } catch (error) {
    await stop();
    throw new Error(`${String(error)}\n${output}`);
  }
  return { url, dir, output: () => output, stop };
}

async function api<T>(url: string, init?: RequestInit): Promise<T> {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(10_000) });
  const body = (await res.json()) as { status: string; data: T; error?: string };
  if (body.status !== "success") throw new Error(`${url}: ${body.error ?? res.status}`);
  return body.data;
}

/**
 * Prometheus with `config` (prometheus.yml text) in a fresh directory; `files` (path relative to that directory →
 * text) are written first: the rule files, which the config names relative to it.
 */
export async function startPrometheus(config: string, files: Record<string, string> = {}): Promise<PrometheusProcess> {
  const dir = mkdtempSync(join(tmpdir(), "mcsv-prometheus-"));
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, name)), { recursive: true });
    writeFileSync(join(dir, name), text);
  }
  writeFileSync(join(dir, "prometheus.yml"), config);
  const port = await freePort();
  const tool = await startTool(
    PROMETHEUS_BINARY,
    (p, d) => [`--config.file=${join(d, "prometheus.yml")}`, `--storage.tsdb.path=${join(d, "data")}`, `--web.listen-address=127.0.0.1:${p}`, "--enable-feature=exemplar-storage", "--log.level=warn"],
    dir,
    port,
  );
  return {
    ...tool,
    async query(expr) {
      const data = await api<{ resultType: string; result: PromSample[] }>(`${tool.url}/api/v1/query`, { method: "POST", body: new URLSearchParams({ query: expr }) });
      if (data.resultType !== "vector") throw new Error(`expected a vector from ${expr}, got ${data.resultType}`);
      return data.result;
    },
    async targets() {
      return (await api<{ activeTargets: ScrapeTarget[] }>(`${tool.url}/api/v1/targets`)).activeTargets;
    },
    async ruleGroups() {
      return (await api<{ groups: RuleGroupState[] }>(`${tool.url}/api/v1/rules`)).groups;
    },
  };
}

/** Alertmanager with `config` (alertmanager.yml text), clustering off. */
export async function startAlertmanager(config: string): Promise<ToolProcess> {
  const dir = mkdtempSync(join(tmpdir(), "mcsv-alertmanager-"));
  writeFileSync(join(dir, "alertmanager.yml"), config);
  const port = await freePort();
  return startTool(
    ALERTMANAGER_BINARY,
    (p, d) => [`--config.file=${join(d, "alertmanager.yml")}`, `--storage.path=${join(d, "data")}`, `--web.listen-address=127.0.0.1:${p}`, "--cluster.listen-address=", "--log.level=warn"],
    dir,
    port,
  );
}
