/**
 * How `convert` shows each file's state as it changes: listr2's live task list on a terminal, one plain line per
 * change otherwise (logs, CI, pipes), nothing with --json (stdout is then the JSON document alone).
 */
import { Listr } from "listr2";
import type { FileOutcome, Progress } from "./convert-file.js";
import type { InputFile } from "./files.js";

export type ConvertOne = (file: InputFile, progress: Progress) => Promise<FileOutcome>;
export type DisplayKind = "live" | "plain" | "silent";

export function displayKind(json: boolean): DisplayKind {
  if (json) return "silent";
  return process.stdout.isTTY ? "live" : "plain";
}

/** Runs every file (the work bounds its own concurrency) and shows their progress; outcomes in input order. */
export async function runWithProgress(kind: DisplayKind, files: InputFile[], convertOne: ConvertOne): Promise<FileOutcome[]> {
  if (kind === "live") return runLive(files, convertOne);
  const plain = kind === "plain";
  return Promise.all(
    files.map(async (file) => {
      let shown = "";
      const outcome = await convertOne(file, (stage) => {
        if (plain && stage !== shown) process.stdout.write(`${file.path}: ${stage}\n`);
        shown = stage;
      });
      if (plain) process.stdout.write(outcome.ok ? `${file.path}: saved ${outcome.pdf}\n` : `${file.path}: failed: ${outcome.error}\n`);
      return outcome;
    }),
  );
}

async function runLive(files: InputFile[], convertOne: ConvertOne): Promise<FileOutcome[]> {
  const outcomes: FileOutcome[] = [];
  const list = new Listr(
    files.map((file, index) => ({
      title: `${file.path}: waiting`,
      task: async (_ctx: unknown, task: { title: string }) => {
        const outcome = await convertOne(file, (stage) => (task.title = `${file.path}: ${stage}`));
        outcomes[index] = outcome;
        if (!outcome.ok) {
          task.title = `${file.path}: failed`;
          throw new Error(outcome.error ?? "failed");
        }
        task.title = `${file.path} → ${outcome.pdf}`;
      },
    })),
    // Every task starts at once and waits for its turn in the work's own bound, so that waiting files show as such.
    { concurrent: true, exitOnError: false, rendererOptions: { collapseErrors: false } },
  );
  await list.run();
  return outcomes;
}
