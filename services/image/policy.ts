/**
 * mcsv's ImageMagick security policy at run time, on any machine (not only in the Docker image, which copies it over
 * the system policy): every ImageMagick the service spawns gets MAGICK_CONFIGURE_PATH=<IMAGEMAGICK_POLICY_DIR>, and
 * the service is not ready until it has seen the policy in force.
 *
 * How ImageMagick 6 (6.9.11 checked) combines policy files, and why the check below is needed: it loads policy.xml
 * from every configuration directory, MAGICK_CONFIGURE_PATH first, then the system ones (/etc/ImageMagick-6, …, and
 * ~/.config/ImageMagick). Rights are decided by the LAST matching rule over all files in that order, so a system or
 * user policy that grants a right (say `read` for MSL, or `read|write` for PDF) re-allows what mcsv's policy denies;
 * resource limits come from the FIRST file that names them, i.e. mcsv's. "The most restrictive wins" is not how it
 * works, so the check does not assume it:
 * - `-list policy` must show mcsv's file, and no other file may grant a coder, delegate, filter, module or path
 *   right that mcsv's own rules deny;
 * - the classic attacks must really be refused by the spawned ImageMagick: an `@file` read, the TEXT, MSL, MVG, TXT,
 *   SVG, XC, PDF and PostScript readers, and URL fetches. Each probe is one that ImageMagick without mcsv's policy
 *   may well run (MSL, MVG, TXT, SVG and XC do on a stock Debian), so a policy that is not in force is noticed.
 */
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Code, ConnectError } from "@connectrpc/connect";
import { runImageMagick, type PdfRenderer } from "./imagemagick.js";

/** The policy the repository ships (deploy/imagemagick/policy.xml), also the one the Docker image installs. */
export const DEFAULT_POLICY_DIR = fileURLToPath(new URL("../../deploy/imagemagick", import.meta.url));
export const POLICY_FILE = "policy.xml";

export function policyFile(policyDir: string): string {
  return join(resolve(policyDir), POLICY_FILE);
}

export function hasPolicyFile(policyDir: string): boolean {
  return existsSync(policyFile(policyDir));
}

/** The environment of a spawned ImageMagick: the service's own, with mcsv's policy directory searched first. */
export function imageMagickEnv(policyDir: string, base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  return { ...base, MAGICK_CONFIGURE_PATH: resolve(policyDir) };
}

/** One `<policy/>` as `-list policy` prints it. */
export interface ListedRule {
  /** The file it comes from, or "[built-in]". */
  path: string;
  domain: string;
  rights: Set<"read" | "write" | "execute">;
  pattern?: string;
  name?: string;
  value?: string;
}

/** Parses the output of `convert -list policy` as ImageMagick 6 prints it (`Path:`, then `Policy:` blocks of fields). */
export function parsePolicyListing(listing: string): ListedRule[] {
  const rules: ListedRule[] = [];
  let path = "";
  let rule: ListedRule | undefined;
  for (const line of listing.split("\n")) {
    const trimmed = line.trim();
    const field = /^(\w[\w-]*): ?(.*)$/.exec(trimmed);
    if (!field) continue;
    const [, key = "", value = ""] = field;
    if (key === "Path") {
      path = value.trim();
      rule = undefined;
    } else if (key === "Policy") {
      rule = { path, domain: value.trim().toLowerCase(), rights: new Set() };
      rules.push(rule);
    } else if (rule && key === "rights") {
      for (const right of value.trim().toLowerCase().split(/\s+/)) {
        if (right === "read" || right === "write" || right === "execute") rule.rights.add(right);
      }
    } else if (rule && (key === "pattern" || key === "name" || key === "value")) {
      rule[key] = value.trim();
    }
  }
  return rules;
}

/** ImageMagick's GlobExpression as a regular expression: `*`, `?`, `[…]` and `{a,b}` alternatives. */
function globRegExp(pattern: string): RegExp {
  let source = "";
  for (const char of pattern) {
    if (char === "*") source += ".*";
    else if (char === "?") source += ".";
    else if (char === "{") source += "(?:";
    else if (char === "}") source += ")";
    else if (char === ",") source += "|";
    else if (char === "[" || char === "]") source += char;
    else source += char.replace(/[.+^$()|\\/-]/g, "\\$&");
  }
  try {
    return new RegExp(`^${source}$`, "i");
  } catch {
    return /(?!)/; // A pattern ImageMagick would not match either.
  }
}

/** The names a pattern like `{PNG,JPEG}` stands for (each may itself contain wildcards). */
function alternatives(pattern: string): string[] {
  const braces = /^\{(.*)\}$/.exec(pattern);
  return braces ? braces[1]!.split(",") : [pattern];
}

/** Whether `rules` (one file's, in order) leave `right` on `name` granted: the last matching rule decides. */
function grants(rules: readonly ListedRule[], domain: string, name: string, right: "read" | "write" | "execute"): boolean {
  let granted = true; // No rule: ImageMagick's default is to allow.
  for (const rule of rules) {
    if (rule.domain === domain && rule.pattern !== undefined && globRegExp(rule.pattern).test(name)) granted = rule.rights.has(right);
  }
  return granted;
}

const RIGHTS_DOMAINS = new Set(["coder", "delegate", "filter", "module", "path"]);

/**
 * What in the listing undoes mcsv's policy: its file missing, or a rule of another file that grants what mcsv's
 * rules deny (that rule is evaluated after mcsv's and wins). Empty when mcsv's policy decides.
 */
export function policyProblems(listing: string, ourFile: string): string[] {
  const rules = parsePolicyListing(listing);
  const ours = rules.filter((r) => r.path === ourFile);
  if (ours.length === 0) {
    const files = [...new Set(rules.map((r) => r.path))].join(", ") || "none";
    return [`ImageMagick did not load ${ourFile} (policy files in force: ${files})`];
  }
  const problems: string[] = [];
  for (const rule of rules) {
    if (rule.path === ourFile || rule.pattern === undefined || !RIGHTS_DOMAINS.has(rule.domain)) continue;
    for (const right of rule.rights) {
      for (const name of alternatives(rule.pattern)) {
        if (!grants(ours, rule.domain, name, right)) problems.push(`${rule.path} grants ${right} on ${rule.domain} ${name}, which mcsv's policy denies`);
      }
    }
  }
  return problems;
}

/** An input the policy must refuse: ImageMagick is run with `args` then `pdf:-`, with `stdin` on its input. */
interface Probe {
  what: string;
  args: (file: string) => string[];
  stdin: string;
}

export const REFUSAL_PROBES: readonly Probe[] = [
  { what: "an @file read through the TEXT coder", args: (file) => [`text:@${file}`], stdin: "" },
  { what: "a bare @file read", args: (file) => [`@${file}`], stdin: "" },
  { what: "the TEXT coder", args: (file) => [`text:${file}`], stdin: "" },
  { what: "an MSL script", args: () => ["msl:-"], stdin: '<?xml version="1.0"?><image size="1x1"><read filename="xc:white"/></image>' },
  { what: "an MVG drawing", args: () => ["-size", "1x1", "mvg:-"], stdin: "viewbox 0 0 1 1\nfill white\nrectangle 0,0 1,1\n" },
  { what: "ImageMagick's TXT pixel format", args: () => ["txt:-"], stdin: "# ImageMagick pixel enumeration: 1,1,255,srgb\n0,0: (255,255,255)  #FFFFFF  white\n" },
  { what: "an SVG", args: () => ["svg:-"], stdin: '<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>' },
  { what: "a generated canvas (XC)", args: () => ["-size", "1x1", "xc:white"], stdin: "" },
  { what: "reading a PDF (Ghostscript)", args: () => ["pdf:-"], stdin: "%PDF-1.4\n%%EOF\n" },
  { what: "PostScript (Ghostscript)", args: () => ["ps:-"], stdin: "%!PS\nshowpage\n" },
  { what: "an HTTPS fetch", args: () => ["https://127.0.0.1:9/x.png"], stdin: "" },
  { what: "an HTTP fetch", args: () => ["http://127.0.0.1:9/x.png"], stdin: "" },
];

/**
 * ImageMagick's words for a refusal: a coder the policy denies, or a module it was not allowed to load, which
 * ImageMagick reports as "no decode delegate", as it does a delegate that is not installed. At run time either
 * way the input is not read, which is what the check must see; test/image/policy.test.ts runs each probe without
 * the policy too, and shows that the policy is what refuses.
 */
const REFUSED = /not allowed by the security policy|no decode delegate for this image format/i;

/** Runs one probe; resolves with a problem when ImageMagick did not refuse it. */
export async function runProbe(command: string, env: NodeJS.ProcessEnv, probe: Probe, file: string): Promise<string | undefined> {
  try {
    const output = await runImageMagick(command, [...probe.args(file), "pdf:-"], Buffer.from(probe.stdin), { timeoutMs: 10_000, maxOutputBytes: 1_000_000, env });
    return `${probe.what} was not refused (it wrote ${output.byteLength} bytes)`;
  } catch (error) {
    const message = error instanceof ConnectError ? error.rawMessage : String(error);
    return REFUSED.test(message) ? undefined : `${probe.what} failed for another reason than the policy: ${message}`;
  }
}

/**
 * Resolves when the spawned ImageMagick runs under mcsv's policy (listed, not undone by a later file, and refusing
 * every probe); rejects with an internal error listing every problem otherwise. When ImageMagick cannot run at all,
 * rejects with that failure as it is.
 */
export async function verifyImageMagickPolicy(command: string, policyDir: string, env: NodeJS.ProcessEnv = imageMagickEnv(policyDir)): Promise<void> {
  const file = policyFile(policyDir);
  const listing = await runImageMagick(command, ["-list", "policy"], new Uint8Array(), { timeoutMs: 10_000, maxOutputBytes: 1_000_000, env });
  const problems = policyProblems(listing.toString("utf8"), file);
  const outcomes = await Promise.all(REFUSAL_PROBES.map((probe) => runProbe(command, env, probe, file)));
  problems.push(...outcomes.filter((problem): problem is string => problem !== undefined));
  if (problems.length > 0) throw new ConnectError(`mcsv's ImageMagick policy (${file}) is not in force: ${problems.join("; ")}`, Code.Internal);
}

/** mcsv's policy for one ImageMagick command: the environment to spawn it with, and the check, cached once passed. */
export class ImageMagickPolicy {
  readonly env: NodeJS.ProcessEnv;
  readonly file: string;
  private verifying: Promise<void> | undefined;

  constructor(
    readonly command: string,
    readonly policyDir: string,
    base: NodeJS.ProcessEnv = process.env,
  ) {
    this.env = imageMagickEnv(policyDir, base);
    this.file = policyFile(policyDir);
  }

  /** A success is kept for good; a failure is checked again on the next call (a fixed machine is picked up). */
  verified(): Promise<void> {
    this.verifying ??= verifyImageMagickPolicy(this.command, this.policyDir, this.env).catch((error: unknown) => {
      this.verifying = undefined;
      throw error;
    });
    return this.verifying;
  }
}

/**
 * A PDF writer that never runs ImageMagick before the policy was seen in force (fails closed), and is ready only
 * when both the writer and the policy are. `renderer` must spawn ImageMagick with `policy.env`.
 */
export function enforcingPolicy(renderer: PdfRenderer, policy: ImageMagickPolicy): PdfRenderer {
  return {
    async streamPdf(image, preset, signal) {
      await policy.verified();
      return renderer.streamPdf(image, preset, signal);
    },
    async encodeImage(image, preset, signal) {
      await policy.verified();
      return renderer.encodeImage(image, preset, signal);
    },
    async ready() {
      await renderer.ready();
      await policy.verified();
    },
  };
}
