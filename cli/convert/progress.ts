/**
 * How `convert` shows each file's (or the one document's) progress as it changes: listr2's live task list on a
 * terminal, one plain line per change otherwise (logs, CI, pipes), nothing with --json (stdout is then the JSON
 * document alone).
 */
import { Listr } from "listr2";
import type { Progress } from "./convert-file.js";

/** What the display needs of an outcome: whether it worked, and where the PDF went or why not. */
export interface ShownOutcome {
  ok: boolean;
  pdf: string | null;
  error: string | null;
}

/** One line of the display: its label (the file's path, or the document's name) and the work it shows. */
export interface ProgressTask<T extends ShownOutcome> {
  label: string;
  run: (progress: Progress) => Promise<T>;
}

export type DisplayKind = "live" | "plain" | "silent";

export function displayKind(json: boolean): DisplayKind {
  if (json) return "silent";
  return process.stdout.isTTY ? "live" : "plain";
}

/** Runs every task (the work bounds its own concurrency) and shows their progress; outcomes in task order. */
export async function runWithProgress<T extends ShownOutcome>(kind: DisplayKind, tasks: Array<ProgressTask<T>>): Promise<T[]> {
  if (kind === "live") return runLive(tasks);
  const plain = kind === "plain";
  return Promise.all(
    tasks.map(async ({ label, run }) => {
      let shown = "";
      const outcome = await run((stage) => {
        if (plain && stage !== shown) process.stdout.write(`${label}: ${stage}\n`);
        shown = stage;
      });
      if (plain) process.stdout.write(outcome.ok ? `${label}: saved ${outcome.pdf}\n` : `${label}: failed: ${outcome.error}\n`);
      return outcome;
    }),
  );
}

async function runLive<T extends ShownOutcome>(tasks: Array<ProgressTask<T>>): Promise<T[]> {
  const outcomes: T[] = [];
  const list = new Listr(
    tasks.map(({ label, run }, index) => ({
      title: `${label}: waiting`,
      task: async (_ctx: unknown, task: { title: string }) => {
        const outcome = await run((stage) => (task.title = `${label}: ${stage}`));
        outcomes[index] = outcome;
        if (!outcome.ok) {
          task.title = `${label}: failed`;
          throw new Error(outcome.error ?? "failed");
        }
        task.title = `${label} → ${outcome.pdf}`;
      },
    })),
    // Every task starts at once and waits for its turn in the work's own bound, so that waiting files show as such.
    { concurrent: true, exitOnError: false, rendererOptions: { collapseErrors: false } },
  );
  await list.run();
  return outcomes;
}
