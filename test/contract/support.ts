/** Shared helpers of the contract tests: paths, running commands, and the mcsv.v1 descriptors. */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createFileRegistry, fromBinary, type DescFile, type FileRegistry } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import * as sdk from "@mcsv/sdk";

export const ROOT = fileURLToPath(new URL("../..", import.meta.url));
export const BUF = join(ROOT, "node_modules/.bin/buf");

import { run, type RunResult } from "../support/run.js";

export { run, type RunResult };

/** Like run, but fails with the command's output unless it exits with 0. */
export async function runOk(command: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  const result = await run(command, args, options);
  if (result.code !== 0) {
    throw new Error(`${command} ${args.join(" ")} exited with ${result.code}\n${result.stdout}\n${result.stderr}`);
  }
  return result;
}

/** A fresh temporary directory, and a function that removes it. */
export function tempDir(prefix: string): { dir: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), `mcsv-${prefix}-`));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * The registry that `buf build` makes of proto/ right now, with source info (the comments), which the
 * descriptors embedded in the generated code leave out.
 */
export async function bufRegistry(): Promise<FileRegistry> {
  const temp = tempDir("buf-build");
  try {
    const out = join(temp.dir, "set.binpb");
    await runOk(BUF, ["build", "proto", "--as-file-descriptor-set", "-o", out]);
    return createFileRegistry(fromBinary(FileDescriptorSetSchema, readFileSync(out)));
  } finally {
    temp.remove();
  }
}

/** The mcsv files of a registry, sorted by name. */
export function mcsvFiles(registry: FileRegistry): DescFile[] {
  return [...registry.files].filter((file) => file.name.startsWith("mcsv/")).sort((a, b) => a.name.localeCompare(b.name));
}

/** The file descriptors that @mcsv/sdk exports (file_mcsv_v1_user, ...), sorted by name. */
export function sdkFiles(): DescFile[] {
  return Object.values(sdk)
    .filter((value): value is DescFile => typeof value === "object" && value !== null && (value as { kind?: unknown }).kind === "file")
    .sort((a, b) => a.name.localeCompare(b.name));
}
