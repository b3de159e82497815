/**
 * mcsv's ImageMagick policy (deploy/imagemagick/policy.xml), which the image copies over the system policy. Statically:
 * well-formed XML that denies every coder but the few mcsv needs, every delegate, and @file reads. For real: the
 * ImageMagick installed here, with the policy bind-mounted over its own in a private mount namespace (needs root and
 * unshare, as on the development and CI machines; skipped with a message otherwise), runs exactly the arguments the
 * image service builds (services/image/imagemagick.ts) for every quality preset and input encoding, and refuses the
 * classic attacks.
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Quality } from "@mcsv/sdk";
import sharp from "sharp";
import { pdfArguments, runImageMagick } from "../../services/image/imagemagick.js";
import type { NormalisedImage } from "../../services/image/normalise.js";
import { qualityPreset } from "../../services/image/quality.js";
import { ROOT, run, which } from "./support.js";

const POLICY = join(ROOT, "deploy/imagemagick/policy.xml");
const text = readFileSync(POLICY, "utf8");

interface Rule {
  domain: string;
  rights?: string;
  pattern?: string;
  name?: string;
  value?: string;
}

/** The <policy/> elements in document order, after a strict check that the document is well-formed. */
function policies(xml: string): Rule[] {
  const body = xml.replace(/^<\?xml[^?]*\?>\s*/, "").replace(/<!--[\s\S]*?-->/g, "");
  const stack: string[] = [];
  const rules: Rule[] = [];
  const tag = /<(\/?)([A-Za-z][\w-]*)((?:\s+[\w-]+="[^"<>]*")*)\s*(\/?)>/g;
  let last = 0;
  for (let match = tag.exec(body); match; match = tag.exec(body)) {
    if (body.slice(last, match.index).trim() !== "") throw new Error(`text outside elements near: ${body.slice(last, match.index).trim().slice(0, 40)}`);
    last = tag.lastIndex;
    const [, closing, name = "", attributes = "", selfClosing] = match;
    if (closing) {
      if (stack.pop() !== name) throw new Error(`mismatched </${name}>`);
      continue;
    }
    if (name === "policy") rules.push(Object.fromEntries([...attributes.matchAll(/([\w-]+)="([^"]*)"/g)].map((a) => [a[1], a[2]])) as unknown as Rule);
    if (!selfClosing) stack.push(name);
  }
  if (body.slice(last).trim() !== "" || stack.length > 0) throw new Error(`unclosed or trailing content: ${stack.join(", ")}`);
  return rules;
}

/** The coder names a pattern like {PNG,JPEG} or PDF covers. */
const names = (pattern = "") => pattern.replace(/^\{|\}$/g, "").split(",");

describe("policy.xml", () => {
  const rules = policies(text);

  test("is well-formed XML with a <policymap> of policies", () => {
    expect(text).toMatch(/^<\?xml version="1.0" encoding="UTF-8"\?>/);
    expect(text).toMatch(/<policymap>[\s\S]*<\/policymap>\s*$/);
    expect(rules.length).toBeGreaterThan(10);
    expect(() => policies("<policymap><policy domain=\"coder\"></policymap>")).toThrow();
  });

  test("denies every coder first, then allows reading a few raster formats and writing PDF, JPEG and PNG only", () => {
    const coders = rules.filter((r) => r.domain === "coder");
    expect(coders[0]).toEqual({ domain: "coder", rights: "none", pattern: "*" });
    const allowed = coders.filter((r) => r.rights !== "none");
    const rights = Object.fromEntries(allowed.flatMap((r) => names(r.pattern).map((n) => [n, r.rights])));
    expect(rights).toEqual({ PNG: "read|write", GIF: "read", WEBP: "read", TIFF: "read", TIF: "read", RGB: "read", RGBA: "read", GRAY: "read", JPEG: "read|write", JPG: "read|write", PDF: "write" });
  });

  test("names the dangerous coders again after the allow list, and blocks delegates, filters and @file reads", () => {
    const coders = rules.filter((r) => r.domain === "coder");
    const denied = names(coders.at(-1)!.pattern);
    expect(coders.at(-1)!.rights).toBe("none");
    expect(denied).toEqual(expect.arrayContaining(["URL", "HTTP", "HTTPS", "MVG", "MSL", "TEXT", "PS", "EPS", "SVG", "XPS"]));
    expect(rules).toEqual(
      expect.arrayContaining([
        { domain: "delegate", rights: "none", pattern: "*" },
        { domain: "filter", rights: "none", pattern: "*" },
        { domain: "path", rights: "none", pattern: "@*" },
      ]),
    );
    const limits = Object.fromEntries(rules.filter((r) => r.domain === "resource").map((r) => [r.name, r.value]));
    expect(Object.keys(limits)).toEqual(expect.arrayContaining(["memory", "map", "disk", "area", "width", "height", "time"]));
  });
});

/** The system policy file ImageMagick reads, e.g. /etc/ImageMagick-6/policy.xml. */
function systemPolicy(command: string): string | undefined {
  const listed = spawnSync(command, ["-list", "policy"], { encoding: "utf8" });
  return /^Path: (\/\S+policy\.xml)$/m.exec(listed.stdout)?.[1];
}

const command = which("magick") ? "magick" : which("convert") ? "convert" : undefined;
const target = command ? systemPolicy(command) : undefined;
/** unshare -m with a bind mount needs root (CAP_SYS_ADMIN); the probe tells. */
const isolated =
  command && target && process.getuid?.() === 0 && which("unshare")
    ? spawnSync("unshare", ["-m", "sh", "-c", `mount --bind "$0" "$1"`, POLICY, target]).status === 0
    : false;
if (!isolated) console.warn("ImageMagick under mcsv's policy not exercised: needs ImageMagick, root and unshare (mount namespaces)");
const describeIsolated = isolated ? describe : describe.skip;

/** `command args` with mcsv's policy bind-mounted over the system one, visible to this process tree only. */
const underPolicy = (args: readonly string[]): [string, string[]] => ["unshare", ["-m", "sh", "-c", 'mount --bind "$0" "$1" && shift && exec "$@"', POLICY, target!, command!, ...args]];

describeIsolated("ImageMagick under mcsv's policy", () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "mcsv-im-policy-"));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test("loads it: ImageMagick lists mcsv's rules as its policy", async () => {
    const [cmd, args] = underPolicy(["-list", "policy"]);
    const result = await run(cmd, args);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain(`Path: ${target}`);
    expect(result.stdout).toMatch(/Policy: Coder\s+rights: Write\s+pattern: PDF/);
    expect(result.stdout).toMatch(/Policy: Path\s+rights: None\s+pattern: @\*/);
  });

  const limits = { memory: "256MiB", map: "512MiB", disk: "1GiB", timeSeconds: 30 };
  const raw3: NormalisedImage = { encoding: "raw", data: Uint8Array.from({ length: 4 * 3 * 3 }, (_, i) => (i * 37) % 256), width: 4, height: 3, channels: 3 };
  const raw4: NormalisedImage = { encoding: "raw", data: Uint8Array.from({ length: 4 * 3 * 4 }, (_, i) => (i * 53) % 256), width: 4, height: 3, channels: 4 };

  test.each([
    ["LOSSLESS", Quality.LOSSLESS],
    ["HIGH", Quality.HIGH],
    ["MEDIUM", Quality.MEDIUM],
    ["LOW", Quality.LOW],
  ])("writes the service's PDF for the %s preset from RGB, RGBA and PNG input", async (_name, quality) => {
    const preset = qualityPreset(quality)!;
    const png = await sharp(Buffer.from(raw4.data), { raw: { width: 4, height: 3, channels: 4 } }).png().toBuffer();
    const pngImage: NormalisedImage = { encoding: "png", data: png, width: 4, height: 3, channels: 4 };
    for (const image of [raw3, raw4, pngImage]) {
      const [cmd, args] = underPolicy(pdfArguments(image, preset, limits));
      const pdf = await runImageMagick(cmd, args, image.data, { timeoutMs: 30_000, maxOutputBytes: 10_000_000 });
      expect({ input: `${image.encoding}/${image.channels}`, head: pdf.subarray(0, 5).toString("latin1") }).toEqual({ input: `${image.encoding}/${image.channels}`, head: "%PDF-" });
    }
  });

  test("writes both kinds of the service's PDF with Ghostscript out of reach: ImageMagick never needs it (only ocrmypdf does)", async () => {
    // A PATH holding only what the run needs: ImageMagick's own PDF writer, never a Ghostscript delegate.
    const bin = join(dir, "no-ghostscript");
    mkdirSync(bin);
    for (const tool of ["sh", "mount", "unshare", command!]) symlinkSync(which(tool)!, join(bin, tool));
    const env = { PATH: bin };
    expect(spawnSync("sh", ["-c", "command -v gs"], { env }).status).not.toBe(0);
    for (const quality of [Quality.LOSSLESS, Quality.HIGH]) {
      const [cmd, args] = underPolicy(pdfArguments(raw3, qualityPreset(quality)!, limits));
      const pdf = await runImageMagick(join(bin, cmd), args, raw3.data, { timeoutMs: 30_000, maxOutputBytes: 10_000_000, env });
      expect({ quality, head: pdf.subarray(0, 5).toString("latin1") }).toEqual({ quality, head: "%PDF-" });
    }
  });

  test.each([
    ["an @file read through the TEXT coder", ["text:@/etc/passwd"]],
    ["a bare @file read", ["@/etc/passwd"]],
    ["an HTTPS fetch", ["https://example.invalid/x.png"]],
    ["an HTTP fetch", ["http://127.0.0.1:9/x.png"]],
    ["an MSL script", ["msl:{dir}/x.msl"]],
    ["an MVG drawing", ["mvg:{dir}/x.mvg"]],
    ["an SVG", ["svg:{dir}/x.svg"]],
    ["PostScript (Ghostscript)", ["ps:{dir}/x.ps"]],
    ["EPS (Ghostscript)", ["eps:{dir}/x.ps"]],
    ["reading a PDF (Ghostscript)", ["pdf:{dir}/x.pdf"]],
    ["a generated canvas", ["-size", "1x1", "xc:white"]],
  ])("refuses %s", async (_what, input) => {
    writeFileSync(join(dir, "x.msl"), '<?xml version="1.0"?><image><read filename="/etc/passwd"/></image>');
    writeFileSync(join(dir, "x.mvg"), "push graphic-context\nviewbox 0 0 1 1\npop graphic-context\n");
    writeFileSync(join(dir, "x.svg"), '<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>');
    writeFileSync(join(dir, "x.ps"), "%!PS\nshowpage\n");
    writeFileSync(join(dir, "x.pdf"), "%PDF-1.4\n%%EOF\n");
    const [cmd, args] = underPolicy([...input.map((a) => a.replace("{dir}", dir)), "png:-"]);
    const result = await run(cmd, args);
    expect({ code: result.code === 0 ? 0 : "failed", stdout: result.stdout, refusal: /not allowed by the security policy/.test(result.stderr) }).toEqual({
      code: "failed",
      stdout: "",
      refusal: true,
    });
  });
});
