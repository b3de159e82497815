/**
 * Reads V8 .cpuprofile files (see cpu-profiler.mjs) and says where a process spent its time: self time by function
 * and by where the code comes from (a package in node_modules, an mcsv source folder, Node's own internals, or V8's
 * garbage collector and idle time).
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export interface ProfileSummary {
  file: string;
  /** Sampled time in ms, idle excluded. */
  busyMs: number;
  idleMs: number;
  byOrigin: Array<{ origin: string; ms: number; share: number }>;
  /** Time with code of that origin anywhere on the stack (a sample counts once per origin): what it costs in all. */
  inclusiveByOrigin: Array<{ origin: string; ms: number; share: number }>;
  topFunctions: Array<{ fn: string; ms: number; share: number }>;
}

function originOf(url: string, name: string): string {
  if (name === "(garbage collector)") return "V8 garbage collector";
  if (name === "(program)") return "V8/native (program)";
  if (!url) return `native ${name || "(anonymous)"}`.trim();
  const pkg = /node_modules\/((@[^/]+\/)?[^/]+)/.exec(url)?.[1];
  if (pkg) return pkg;
  if (url.startsWith("node:")) return "node internals";
  const src = /\/(services\/[a-z]+|scripts|gen|bench)\//.exec(url)?.[1];
  return src ?? url;
}

export function summariseProfile(path: string, top = 12): ProfileSummary {
  const profile = JSON.parse(readFileSync(path, "utf8")) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  for (let i = 0; i < samples.length; i++) self.set(samples[i]!, (self.get(samples[i]!) ?? 0) + (deltas[i + 1] ?? deltas[i] ?? 0) / 1000);
  let idle = 0;
  let busy = 0;
  const origins = new Map<string, number>();
  const functions = new Map<string, number>();
  for (const [id, ms] of self) {
    const node = byId.get(id)!;
    const { functionName, url, lineNumber } = node.callFrame;
    if (functionName === "(idle)") {
      idle += ms;
      continue;
    }
    busy += ms;
    const origin = originOf(url, functionName);
    origins.set(origin, (origins.get(origin) ?? 0) + ms);
    const fn = `${functionName || "(anonymous)"} ${url ? `${url.replace(/^.*\/(node_modules|services|scripts|bench)\//, "$1/")}:${lineNumber + 1}` : ""}`.trim();
    functions.set(fn, (functions.get(fn) ?? 0) + ms);
  }
  // Inclusive: walk each sampled stack once, crediting every origin on it once.
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const inclusive = new Map<string, number>();
  const stackOrigins = new Map<number, Set<string>>();
  const originsOnStack = (id: number): Set<string> => {
    let found = stackOrigins.get(id);
    if (found) return found;
    const node = byId.get(id)!;
    const up = parent.get(id);
    found = new Set(up === undefined ? [] : originsOnStack(up));
    const { functionName, url } = node.callFrame;
    if (url && functionName !== "(root)") found.add(originOf(url, functionName));
    stackOrigins.set(id, found);
    return found;
  };
  for (const [id, ms] of self) {
    if (byId.get(id)!.callFrame.functionName === "(idle)") continue;
    for (const origin of originsOnStack(id)) inclusive.set(origin, (inclusive.get(origin) ?? 0) + ms);
  }
  const share = (ms: number) => Math.round((1000 * ms) / Math.max(busy, 1)) / 10;
  return {
    file: path,
    busyMs: Math.round(busy),
    idleMs: Math.round(idle),
    byOrigin: [...origins].sort((a, b) => b[1] - a[1]).slice(0, top).map(([origin, ms]) => ({ origin, ms: Math.round(ms), share: share(ms) })),
    inclusiveByOrigin: [...inclusive].sort((a, b) => b[1] - a[1]).slice(0, top).map(([origin, ms]) => ({ origin, ms: Math.round(ms), share: share(ms) })),
    topFunctions: [...functions].sort((a, b) => b[1] - a[1]).slice(0, top).map(([fn, ms]) => ({ fn, ms: Math.round(ms), share: share(ms) })),
  };
}

export function summariseProfiles(dir: string): ProfileSummary[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith(".cpuprofile"))
    .sort()
    .map((f) => summariseProfile(join(dir, f)));
}

export function renderProfiles(summaries: ProfileSummary[]): string {
  const lines: string[] = [];
  for (const s of summaries) {
    lines.push(`### ${s.file.split("/").pop()}: ${(s.busyMs / 1000).toFixed(1)} s busy, ${(s.idleMs / 1000).toFixed(1)} s idle`, "");
    lines.push("| where (self time) | ms | share | | on the stack (inclusive) | ms | share |", "|---|---:|---:|---|---|---:|---:|");
    for (let i = 0; i < Math.max(s.byOrigin.length, s.inclusiveByOrigin.length); i++) {
      const a = s.byOrigin[i];
      const b = s.inclusiveByOrigin[i];
      lines.push(`| ${a ? `${a.origin} | ${a.ms} | ${a.share} %` : " | | "} | | ${b ? `${b.origin} | ${b.ms} | ${b.share} %` : " | | "} |`);
    }
    lines.push("", "| function (self time) | ms | share |", "|---|---:|---:|");
    for (const f of s.topFunctions) lines.push(`| \`${f.fn}\` | ${f.ms} | ${f.share} % |`);
    lines.push("");
  }
  return lines.join("\n");
}
