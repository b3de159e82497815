/**
 * The documents' links hold: every relative link in the project's Markdown names a file that exists, and every
 * anchor a heading of that file (GitHub's slugs: lower case, punctuation dropped, spaces as hyphens).
 */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, normalize } from "node:path";
import { execFileSync } from "node:child_process";
import { ROOT } from "../../scripts/lib/system.js";
import { headingSlugs } from "../support/markdown.js";

const markdown = execFileSync("git", ["ls-files", "*.md"], { cwd: ROOT, encoding: "utf8" })
  .split("\n")
  .filter((file) => file && !file.startsWith("node_modules/"));

test("the project has its documents", () => {
  expect(markdown).toEqual(expect.arrayContaining(["README.md", "docs/security.md", "docs/api.md", "bench/README.md"]));
});

test.each(markdown)("%s: every relative link and anchor resolves", (file) => {
  const text = readFileSync(join(ROOT, file), "utf8").replace(/```[\s\S]*?```/g, "").replace(/`[^`\n]*`/g, "");
  const broken: string[] = [];
  for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
    if (/^[a-z]+:/i.test(target!)) continue;
    const [path, anchor] = target!.split("#", 2) as [string, string | undefined];
    const resolved = path ? normalize(join(dirname(file), path)) : file;
    if (!existsSync(join(ROOT, resolved))) broken.push(`${target} (no such file)`);
    else if (anchor && resolved.endsWith(".md") && !headingSlugs(resolved).has(anchor)) broken.push(`${target} (no such heading)`);
  }
  expect(broken).toEqual([]);
});
