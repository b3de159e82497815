/**
 * What the kernel knows about our processes, read from /proc (Linux only): CPU time per process and for its reaped
 * children (ImageMagick runs as children of image-svc), resident memory now and at its peak (VmHWM), and resetting
 * that peak (`echo 5 > /proc/<pid>/clear_refs`) so that each benchmark phase measures its own.
 */
import { readdirSync, readFileSync, writeFileSync } from "node:fs";

const TICKS_PER_SECOND = 100;

export interface ProcessStat {
  pid: number;
  ppid: number;
  comm: string;
  /** CPU seconds of the process itself (user + system). */
  cpu: number;
  /** CPU seconds of its children that it has waited for. */
  childrenCpu: number;
  /** Resident set size in bytes. */
  rss: number;
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}

export function stat(pid: number): ProcessStat | undefined {
  const text = readText(`/proc/${pid}/stat`);
  if (!text) return undefined;
  // comm may contain spaces and parentheses: it ends at the last ')'.
  const close = text.lastIndexOf(")");
  const comm = text.slice(text.indexOf("(") + 1, close);
  const fields = text.slice(close + 2).split(" ");
  // fields[0] is state (field 3 of stat(5)); field n is fields[n - 3].
  const num = (n: number) => Number(fields[n - 3]);
  return {
    pid,
    ppid: num(4),
    comm,
    cpu: (num(14) + num(15)) / TICKS_PER_SECOND,
    childrenCpu: (num(16) + num(17)) / TICKS_PER_SECOND,
    rss: num(24) * 4096,
  };
}

export function allProcesses(): ProcessStat[] {
  const out: ProcessStat[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const s = stat(Number(name));
    if (s) out.push(s);
  }
  return out;
}

/** `pid` and every process below it (by parent id, scanned now). */
export function processTree(pid: number, processes = allProcesses()): ProcessStat[] {
  const byParent = new Map<number, ProcessStat[]>();
  for (const p of processes) byParent.set(p.ppid, [...(byParent.get(p.ppid) ?? []), p]);
  const root = processes.find((p) => p.pid === pid);
  if (!root) return [];
  const out = [root];
  for (let i = 0; i < out.length; i++) out.push(...(byParent.get(out[i]!.pid) ?? []));
  return out;
}

/** Peak resident set size in bytes since start or since the last `resetPeakRss`. */
export function peakRss(pid: number): number | undefined {
  const match = /VmHWM:\s+(\d+) kB/.exec(readText(`/proc/${pid}/status`) ?? "");
  return match ? Number(match[1]) * 1024 : undefined;
}

export function resetPeakRss(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, "5");
    return true;
  } catch {
    return false;
  }
}

/** Total CPU seconds of a process tree: every live process plus what the root's reaped children used. */
export function treeCpu(pid: number, processes = allProcesses()): { self: number; children: number } {
  const tree = processTree(pid, processes);
  const root = tree[0];
  if (!root) return { self: 0, children: 0 };
  const liveChildren = tree.slice(1).reduce((sum, p) => sum + p.cpu + p.childrenCpu, 0);
  return { self: root.cpu, children: root.childrenCpu + liveChildren };
}

/**
 * Samples the resident memory of a process tree every `intervalMs` until stopped: the peak of the whole tree (the
 * service and its ImageMagick children together) and the largest single child seen.
 */
export function sampleTreeRss(pid: number, intervalMs = 50): { stop(): { peakTree: number; peakChild: number; samples: number } } {
  let peakTree = 0;
  let peakChild = 0;
  let samples = 0;
  const timer = setInterval(() => {
    const tree = processTree(pid);
    if (tree.length === 0) return;
    samples++;
    peakTree = Math.max(peakTree, tree.reduce((sum, p) => sum + p.rss, 0));
    for (const child of tree.slice(1)) peakChild = Math.max(peakChild, child.rss);
  }, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      return { peakTree, peakChild, samples };
    },
  };
}
