/**
 * The floor's ImageMagick: the same command the service runs, with the same arguments (services/image/imagemagick.ts
 * `pdfArguments`) under the same security policy (services/image/policy.ts, which also caps its resources), reading
 * the original file itself, as `convert photo.jpg … photo.pdf` would.
 */
import { execFileSync } from "node:child_process";
import { existsSync, openSync, readSync, closeSync } from "node:fs";
import { Quality } from "@mcsv/sdk";
import { detectImageMagickCommand, pdfArguments, runImageMagick, type ImageMagickLimits } from "../../services/image/imagemagick.js";
import { DEFAULT_POLICY_DIR, imageMagickEnv } from "../../services/image/policy.js";
import { qualityPreset } from "../../services/image/quality.js";
import type { TestImage } from "./images.js";

/** The service's defaults (services/image/config.ts). */
export const DEFAULT_LIMITS: ImageMagickLimits = { memory: "1GiB", map: "2GiB", disk: "4GiB", timeSeconds: 50 };

function startsWithShebang(path: string): boolean {
  const fd = openSync(path, "r");
  try {
    const head = Buffer.alloc(2);
    readSync(fd, head, 0, 2, 0);
    return head.toString("latin1") === "#!";
  } finally {
    closeSync(fd);
  }
}

/**
 * The ImageMagick binary to benchmark: IMAGEMAGICK_COMMAND when set, else what the service would pick. Some
 * machines put a script in front of the real binary on PATH (a sandbox's stand-in that passes calls on to
 * /usr/bin/convert, paying an interpreter's start-up on every call); the benchmark then names the real binary for
 * both the service and the floor, and says so.
 */
export function resolveImageMagick(env: NodeJS.ProcessEnv = process.env): { command: string; note?: string } {
  if (env["IMAGEMAGICK_COMMAND"]) return { command: env["IMAGEMAGICK_COMMAND"] };
  const name = detectImageMagickCommand();
  let path: string;
  try {
    path = execFileSync("sh", ["-c", `command -v ${name}`], { encoding: "utf8" }).trim();
  } catch {
    return { command: name };
  }
  const real = `/usr/bin/${name}`;
  if (path !== real && startsWithShebang(path) && existsSync(real)) {
    return { command: real, note: `${path} is a script in front of ImageMagick; ${real} used instead` };
  }
  return { command: path };
}

export function imageMagickVersion(command: string): string {
  try {
    return /ImageMagick [^\s]+( Q\d+)?/.exec(execFileSync(command, ["-version"], { encoding: "utf8" }))?.[0] ?? "unknown";
  } catch {
    return "unknown";
  }
}

/** The quality each test image is converted with: RGB photos the default (HIGH, JPEG in the PDF), RGBA LOSSLESS. */
export function qualityFor(image: TestImage): Quality {
  return image.channels === 4 ? Quality.LOSSLESS : Quality.HIGH;
}

/** The service's argument list for this image, reading the original (`jpeg:-`, `png:-`) instead of raw pixels. */
export function floorArguments(image: TestImage, limits: ImageMagickLimits = DEFAULT_LIMITS): string[] {
  const preset = qualityPreset(qualityFor(image))!;
  const args = pdfArguments({ encoding: "png", width: image.size.width, height: image.size.height, channels: image.channels }, preset, limits);
  return args.map((arg) => (arg === "png:-" ? `${image.format}:-` : arg));
}

/** The environment of the service's ImageMagick (its default policy directory first on MAGICK_CONFIGURE_PATH). */
export const POLICY_ENV = imageMagickEnv(DEFAULT_POLICY_DIR);

/** One bare conversion: the original on stdin, the PDF on stdout. */
export function bareConvert(command: string, image: TestImage): Promise<Buffer> {
  return runImageMagick(command, floorArguments(image), image.bytes, { timeoutMs: 120_000, maxOutputBytes: 1024 * 1024 * 1024, env: POLICY_ENV });
}
