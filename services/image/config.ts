/** Configuration of the image service, validated once at start-up. */
import { availableParallelism } from "node:os";
import { z } from "zod";
import { commonEnv, documentEnv, loadConfig, positiveInt, storageEnv, topologyEnv } from "../shared/config.js";
import { PDF_ENGINES } from "./pdf-engine.js";
import { DEFAULT_POLICY_DIR, hasPolicyFile } from "./policy.js";

const MiB = 1024 * 1024;

/** An ImageMagick resource size such as "256MiB" or "1GiB" (passed to `-limit` as is). */
const imageMagickSize = (fallback: string) =>
  z
    .string()
    .regex(/^\d+(\.\d+)?\s*([KMGT]i?B|B)?$/i, 'must be an ImageMagick size such as "256MiB"')
    .default(fallback);

export const imageEnv = {
  /** Largest original accepted, in bytes; uploads go straight to storage, so this can exceed the inline limit. */
  IMAGE_MAX_INPUT_BYTES: positiveInt(100 * MiB),
  /** Largest image accepted, in pixels (width × height), checked from the header before any pixel is decoded. */
  IMAGE_MAX_PIXELS: positiveInt(100_000_000),
  /** Largest PDF written, in bytes; a bigger one is refused rather than held in memory. */
  IMAGE_MAX_OUTPUT_BYTES: positiveInt(1024 * MiB),
  /** Time allowed for downloading the original. */
  IMAGE_FETCH_TIMEOUT_MS: positiveInt(30_000),
  /** Conversions running at once in this process; the rest wait for a slot. */
  IMAGE_CONCURRENCY: positiveInt(availableParallelism()),
  /**
   * Conversions that may wait for a slot; any more are refused as unavailable with retry-after, and the job service
   * tries them again later without using an attempt, so the backlog stays in the queue (Postgres), where every
   * replica can take it. Unset: four per slot (4 × IMAGE_CONCURRENCY).
   */
  IMAGE_MAX_WAITING: z.coerce.number().int().min(0).optional(),
  /**
   * How strictly damaged pixel data is refused (sharp's failOn): "warning" (the default, advised for untrusted
   * input) refuses any decoder warning, "error" only errors and truncation, "truncated" only truncation.
   */
  IMAGE_FAIL_ON: z.enum(["warning", "error", "truncated"]).default("warning"),
  /**
   * The PDF engine of a request that leaves it unspecified: "imagemagick" (decode, normalise, re-encode at the
   * quality preset) or "passthrough" (the original's encoded data as it is when the request needs no pixel change,
   * else ImageMagick; see pdf-engine.ts).
   */
  IMAGE_PDF_ENGINE: z.enum(PDF_ENGINES).default("imagemagick"),
  /** ImageMagick is killed (SIGKILL) after this long. */
  IMAGEMAGICK_TIMEOUT_MS: positiveInt(60_000),
  /** ImageMagick's own resource limits (`-limit`); a site policy.xml may lower them further. */
  IMAGEMAGICK_LIMIT_MEMORY: imageMagickSize("1GiB"),
  IMAGEMAGICK_LIMIT_MAP: imageMagickSize("2GiB"),
  /** Pixel cache spilled to disk; "0" keeps ImageMagick entirely in memory and map. */
  IMAGEMAGICK_LIMIT_DISK: imageMagickSize("4GiB"),
  /** Seconds of ImageMagick processing before it gives up by itself (the SIGKILL above is the backstop). */
  IMAGEMAGICK_LIMIT_TIME_SECONDS: positiveInt(50),
  /** The ImageMagick command; unset means `magick` when on PATH, else ImageMagick 6's `convert`. */
  IMAGEMAGICK_COMMAND: z.string().optional(),
  /**
   * Directory of the ImageMagick security policy (policy.xml) every spawned ImageMagick runs under, through
   * MAGICK_CONFIGURE_PATH; the service is not ready until it has seen the policy in force (policy.ts).
   */
  IMAGEMAGICK_POLICY_DIR: z.string().default(DEFAULT_POLICY_DIR).refine(hasPolicyFile, "must be a directory that holds policy.xml"),
  /** The OCR command (ocrmypdf, which runs tesseract); it is killed (SIGKILL) after OCR_TIMEOUT_MS per page. */
  OCR_COMMAND: z.string().default("ocrmypdf"),
  OCR_TIMEOUT_MS: positiveInt(120_000),
};

/** Every variable the image service reads (docs/configuration.md is checked against it). */
export const imageEnvShape = { ...commonEnv, ...storageEnv, ...topologyEnv, ...documentEnv, ...imageEnv };

export function loadImageConfig(env: NodeJS.ProcessEnv = process.env) {
  return loadConfig("image-svc", imageEnvShape, env);
}

export type ImageConfig = ReturnType<typeof loadImageConfig>;
