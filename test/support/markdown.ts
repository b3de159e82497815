/** Markdown as GitHub renders it, enough for link checks: the anchors a document's headings get. */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT } from "./promql.js";

/** The anchors of `file`'s headings (GitHub's slugs: lower case, punctuation dropped, spaces as hyphens); code blocks skipped. */
export function headingSlugs(file: string, root = ROOT): Set<string> {
  const text = readFileSync(join(root, file), "utf8").replace(/```[\s\S]*?```/g, "");
  return new Set([...text.matchAll(/^#{1,6}\s+(.+)$/gm)].map((m) => m[1]!.trim().toLowerCase().replace(/[^\w\- ]/g, "").replace(/ /g, "-")));
}
