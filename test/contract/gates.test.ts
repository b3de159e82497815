/**
 * The contract gates of CI: the protos are linted and formatted, the committed generated code and OpenAPI documents
 * are exactly what the protos generate, and no change breaks the released baseline (proto/baseline/image.binpb,
 * cut with `npm run release:contract`).
 */
import { cpSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { generatedFiles } from "../../scripts/lib/generated-files.js";
import { BUF, ROOT, run, runOk, tempDir } from "./support.js";

const scripts = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { scripts: Record<string, string> }).scripts;

/** The argv of a package.json script that runs buf, with buf resolved to node_modules/.bin/buf. */
function bufScript(name: string): string[] {
  const argv = scripts[name]?.split(/\s+/) ?? [];
  expect(argv[0]).toBe("buf");
  return argv.slice(1);
}

/** The rules that buf's `--error-format json` output names, one JSON object per line. */
function rules(output: string): string[] {
  return output
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => (JSON.parse(line) as { type: string }).type);
}

/** A copy of the buf workspace (buf.yaml and its modules, proto/ and proto-grpc/) in a temporary directory, with one file edited. */
function editedWorkspace(file: string, edit: (source: string) => string): { dir: string; remove: () => void } {
  const temp = tempDir("proto-edit");
  cpSync(join(ROOT, "buf.yaml"), join(temp.dir, "buf.yaml"));
  for (const module of ["proto", "proto-grpc"]) cpSync(join(ROOT, module), join(temp.dir, module), { recursive: true });
  const path = join(temp.dir, "proto", file);
  const before = readFileSync(path, "utf8");
  const after = edit(before);
  expect(after).not.toBe(before); // the fixture still matches the proto
  writeFileSync(path, after);
  return temp;
}

test("buf lint passes", async () => {
  await runOk(BUF, ["lint"]);
});

test("buf format finds nothing to change", async () => {
  const result = await run(BUF, ["format", "--diff", "--exit-code"]);
  expect(result.stdout).toBe("");
  expect(result.code).toBe(0);
});

test("gen/ and openapi/ are what the protos generate (run `npm run generate` if not)", async () => {
  const temp = tempDir("generate");
  try {
    await runOk(join(ROOT, "node_modules/.bin/tsx"), ["scripts/generate.ts", "--out", temp.dir]);
    const fresh = generatedFiles(temp.dir);
    expect(fresh).toEqual(
      expect.arrayContaining(["gen/index.ts", "gen/mcsv/v1/user_pb.ts", "openapi/user.yaml", "services/shared/grpc/gen/grpc/health/v1/health_pb.ts"]),
    );
    expect(generatedFiles(ROOT)).toEqual(fresh);
    const stale = fresh.filter((file) => readFileSync(join(temp.dir, file), "utf8") !== readFileSync(join(ROOT, file), "utf8"));
    expect(stale).toEqual([]);
  } finally {
    temp.remove();
  }
});

test("the protos do not break the released baseline", async () => {
  const args = bufScript("breaking");
  const against = args[args.indexOf("--against") + 1] ?? "";
  expect(existsSync(join(ROOT, against))).toBe(true);
  // release:contract writes the baseline that breaking reads.
  const release = bufScript("release:contract");
  expect(release[release.indexOf("-o") + 1]).toBe(against);
  await runOk(BUF, args);
});

test("deleting a field or changing its type breaks the baseline", async () => {
  const workspace = editedWorkspace("mcsv/v1/common.proto", (source) =>
    source.replace(/^\s*string input_format = 15;\n/m, "\n").replace("int64 input_size = 5;", "string input_size = 5;"),
  );
  try {
    const baseline = join(ROOT, "proto/baseline/image.binpb");
    const result = await run(BUF, ["breaking", "proto", "--against", baseline, "--error-format", "json"], { cwd: workspace.dir });
    expect(result.code).not.toBe(0);
    expect(rules(result.stdout)).toEqual(expect.arrayContaining(["FIELD_NO_DELETE", "FIELD_SAME_TYPE"]));
  } finally {
    workspace.remove();
  }
});

test("an undocumented field fails buf lint (COMMENTS)", async () => {
  const workspace = editedWorkspace("mcsv/v1/common.proto", (source) =>
    source.replace("string input_format = 15;", "string input_format = 15;\n  string undocumented = 99;"),
  );
  try {
    const result = await run(BUF, ["lint", "--error-format", "json"], { cwd: workspace.dir });
    expect(result.code).not.toBe(0);
    expect(rules(result.stdout)).toEqual(["COMMENT_FIELD"]);
  } finally {
    workspace.remove();
  }
});
