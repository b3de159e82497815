/** Starts a TypeScript entry point as its own Node process, the way the services run, and waits for its URL. */
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { ROOT } from "../../scripts/lib/system.js";

export interface NodeChild {
  child: ChildProcess;
  url: string;
  stop(): Promise<void>;
}

export async function startNodeChild(entry: string, args: string[], options: { env: Record<string, string | undefined>; preload?: string; timeoutMs?: number }): Promise<NodeChild> {
  const child = spawn(
    process.execPath,
    ["--conditions=mcsv-source", "--import", "tsx", ...(options.preload ? ["--import", options.preload] : []), entry, ...args],
    { cwd: ROOT, env: options.env, stdio: ["ignore", "pipe", "pipe"] },
  );
  const stderr: string[] = [];
  createInterface({ input: child.stderr! }).on("line", (line) => stderr.length < 50 && stderr.push(line));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${entry} did not start: ${stderr.join("\n")}`)), options.timeoutMs ?? 30_000);
    createInterface({ input: child.stdout! }).on("line", (line) => {
      const match = /^listening (\S+)/.exec(line);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]!);
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${entry} exited with ${code}: ${stderr.join("\n")}`));
    });
  });
  return {
    child,
    url,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      const killer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(killer);
    },
  };
}
