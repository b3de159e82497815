/** The files a `convert` names: globs expanded (tinyglobby), plain paths kept as given so that a missing one fails alone. */
import { isAbsolute } from "node:path";
import { glob, isDynamicPattern } from "tinyglobby";

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
