/** The files a `convert` names: globs expanded (tinyglobby), plain paths kept as given so that a missing one fails alone. */
import { stat } from "node:fs/promises";
import { isAbsolute } from "node:path";
import { glob, isDynamicPattern } from "tinyglobby";
import { CliError } from "../errors.js";

export interface InputFile {
  /** As the user would recognise it: relative to the working directory, or as typed. */
  path: string;
  /** Why it cannot be converted before anything is sent (a glob that matched nothing). */
  problem?: string;
}

export async function expandInputs(patterns: string[]): Promise<InputFile[]> {
  const files: InputFile[] = [];
  const seen = new Set<string>();
  for (const pattern of patterns) {
    if (!isDynamicPattern(pattern)) {
      if (!seen.has(pattern)) files.push({ path: pattern });
      seen.add(pattern);
      continue;
    }
    const matches = (await glob(pattern, { onlyFiles: true, expandDirectories: false, absolute: isAbsolute(pattern) })).sort();
    if (matches.length === 0) files.push({ path: pattern, problem: "matched no files" });
    for (const match of matches) {
      if (!seen.has(match)) files.push({ path: match });
      seen.add(match);
    }
  }
  return files;
}

/** The file's size, once it is known to be a non-empty file; otherwise a CliError that says what is wrong with it. */
export async function sizeOf(input: InputFile): Promise<number> {
  if (input.problem) throw new CliError(input.problem);
  const found = await stat(input.path).catch((error: NodeJS.ErrnoException) => {
    throw error.code === "ENOENT" ? new CliError("no such file") : error;
  });
  if (!found.isFile()) throw new CliError("is not a file");
  if (found.size === 0) throw new CliError("is empty");
  return found.size;
}
