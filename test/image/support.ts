/**
 * Test harness of the image service: a real s3rver, the service in-process on port 0, a Connect client, and the real
 * PDF tools (qpdf, pdfimages, pdftocairo, pdfinfo) to look inside what it writes. Test images are made with sharp.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { create } from "@bufbuild/protobuf";
import { createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { ImageService, ImageServiceConvertImageRequestSchema, Quality, type ImageServiceConvertImageRequest, type PdfEngine } from "@mcsv/sdk";
import sharp from "sharp";
import { freePort, startEmbeddedS3, type EmbeddedS3Handle } from "../../scripts/lib/embedded.js";
import { createLogger } from "../../services/shared/logger.js";
import type { RunningService } from "../../services/shared/server.js";
import { ObjectStore } from "../../services/shared/storage.js";
import { loadImageConfig, type ImageConfig } from "../../services/image/config.js";
import { startImageService, type ImageServiceOverrides } from "../../services/image/service.js";
import { internalAuth, testAuthEnv } from "../support/credentials.js";

const run = promisify(execFile);

export interface ImageHarness {
  client: Client<typeof ImageService>;
  store: ObjectStore;
  service: RunningService;
  config: ImageConfig;
  s3: EmbeddedS3Handle;
  /** Stores `bytes` under `key` and returns a presigned GET URL of it. */
  upload(bytes: Uint8Array, key?: string): Promise<string>;
  convert(init: ConvertInit): Promise<ConvertResult>;
  ready(): Promise<number>;
  stop(): Promise<void>;
}

export interface ConvertInit {
  imageUrl: string;
  inputFormat: string;
  /** Quality defaults to LOSSLESS here. */
  options?: { quality?: Quality; stripMetadata?: boolean; maxWidth?: number; maxHeight?: number; engine?: PdfEngine };
  conversionId?: string;
}

export interface ConvertResult {
  request: ImageServiceConvertImageRequest;
  response: Awaited<ReturnType<Client<typeof ImageService>["convertImage"]>>;
  pdf: Buffer;
}

export async function startImageHarness(env: Record<string, string> = {}, overrides: ImageServiceOverrides = {}): Promise<ImageHarness> {
  const dataDir = mkdtempSync(join(tmpdir(), "mcsv-image-"));
  const s3 = await startEmbeddedS3(join(dataDir, "s3"), await freePort(), ["mcsv"]);
  const config = loadImageConfig({
    ...testAuthEnv,
    IMAGE_PORT: "0",
    HOST: "127.0.0.1",
    S3_ENDPOINT: s3.endpoint,
    S3_ACCESS_KEY_ID: s3.accessKeyId,
    S3_SECRET_ACCESS_KEY: s3.secretAccessKey,
    S3_BUCKET: "mcsv",
    LOG_LEVEL: process.env["MCSV_TEST_VERBOSE"] ? "debug" : "error",
    SHUTDOWN_GRACE_MS: "2000",
    ...env,
  });
  const store = new ObjectStore(config);
  const service = await startImageService(config, { logger: createLogger("image-svc", { level: config.LOG_LEVEL, format: "json" }), ...overrides });
  const client = createClient(ImageService, createConnectTransport({ baseUrl: service.url, httpVersion: "1.1", interceptors: [internalAuth] }));

  return {
    client,
    store,
    service,
    config,
    s3,
    async upload(bytes, key = `uploads/${crypto.randomUUID()}`) {
      await store.put(key, bytes, { contentType: "application/octet-stream" });
      return (await store.presignGet(key)).url;
    },
    async convert({ imageUrl, inputFormat, options, conversionId = crypto.randomUUID() }) {
      const request = create(ImageServiceConvertImageRequestSchema, {
        conversionId,
        imageUrl,
        inputFormat,
        options: { quality: Quality.LOSSLESS, ...options },
      });
      const response = await client.convertImage(request);
      const download = await fetch(response.pdfUrl);
      if (download.status !== 200) throw new Error(`PDF download answered ${download.status}`);
      return { request, response, pdf: Buffer.from(await download.arrayBuffer()) };
    },
    async ready() {
      return (await fetch(`${service.url}/health/ready`)).status;
    },
    async stop() {
      await service.shutdown("test over");
      store.client.destroy();
      await s3.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

// ---- images ----

/** Deterministic pseudo-random bytes (a linear congruential generator), so failures reproduce. */
export function noise(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state >>> 24;
  };
}

/** Raw RGB(A) pixels: gradients, a sine pattern, noise, and (RGBA) a varying alpha. */
export function gradientPixels(width: number, height: number, channels: 3 | 4, seed = 7, noiseAmplitude = 48): Buffer {
  const next = noise(seed);
  const pixels = Buffer.alloc(width * height * channels);
  const clamp = (v: number) => Math.max(0, Math.min(255, Math.round(v)));
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * channels;
      const n = () => ((next() / 255) - 0.5) * noiseAmplitude;
      pixels[i] = clamp((255 * x) / width + n());
      pixels[i + 1] = clamp((255 * y) / height + n());
      pixels[i + 2] = clamp(128 + 100 * Math.sin((x + 2 * y) / 7) + n());
      if (channels === 4) pixels[i + 3] = clamp((255 * (x + y)) / (width + height - 2));
    }
  }
  return pixels;
}

export function encodePng(pixels: Buffer, width: number, height: number, channels: 3 | 4): Promise<Buffer> {
  return sharp(pixels, { raw: { width, height, channels } }).png().toBuffer();
}

/** Raw pixels of an encoded image (sharp converts to sRGB unless told to ignore the profile). */
export async function decode(image: Uint8Array | string, options: { ignoreIcc?: boolean } = {}): Promise<{ data: Buffer; width: number; height: number; channels: number }> {
  const { data, info } = await sharp(image, options).raw().toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height, channels: info.channels };
}

/** Keeps the first three of four interleaved channels, or only the fourth. */
export function splitAlpha(rgba: Buffer): { rgb: Buffer; alpha: Buffer } {
  const count = rgba.length / 4;
  const rgb = Buffer.alloc(count * 3);
  const alpha = Buffer.alloc(count);
  for (let i = 0; i < count; i++) {
    rgb[i * 3] = rgba[i * 4]!;
    rgb[i * 3 + 1] = rgba[i * 4 + 1]!;
    rgb[i * 3 + 2] = rgba[i * 4 + 2]!;
    alpha[i] = rgba[i * 4 + 3]!;
  }
  return { rgb, alpha };
}

export function meanAbsoluteError(a: Buffer, b: Buffer): number {
  if (a.length !== b.length) throw new Error(`lengths differ: ${a.length} vs ${b.length}`);
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += Math.abs(a[i]! - b[i]!);
  return sum / a.length;
}

// ---- PDF tools ----

async function withPdf<T>(pdf: Uint8Array, work: (file: string, dir: string) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), "mcsv-pdf-"));
  try {
    const file = join(dir, "in.pdf");
    writeFileSync(file, pdf);
    return await work(file, dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** `qpdf --check`; rejects (non-zero exit) on a damaged file. */
export const qpdfCheck = (pdf: Uint8Array) => withPdf(pdf, async (file) => (await run("qpdf", ["--check", file])).stdout);

export interface ListedImage {
  type: string;
  width: number;
  height: number;
  color: string;
  bpc: number;
  enc: string;
  objectId: number;
}

/** The rows of `pdfimages -list`. */
export const listImages = (pdf: Uint8Array) =>
  withPdf(pdf, async (file): Promise<ListedImage[]> => {
    const { stdout } = await run("pdfimages", ["-list", file]);
    return stdout
      .split("\n")
      .slice(2)
      .map((line) => line.trim().split(/\s+/))
      .filter((cols) => cols.length >= 11)
      .map((c) => ({ type: c[2]!, width: Number(c[3]), height: Number(c[4]), color: c[5]!, bpc: Number(c[7]), enc: c[8]!, objectId: Number(c[10]) }));
  });

/** Every embedded image (and soft mask) as written by `pdfimages -png`, in order. */
export const extractImages = (pdf: Uint8Array) =>
  withPdf(pdf, async (file, dir) => {
    await run("pdfimages", ["-png", file, join(dir, "img")]);
    return readdirSync(dir)
      .filter((f) => f.startsWith("img"))
      .sort()
      .map((f) => readFileSync(join(dir, f)));
  });

/** The first page rendered by poppler at 72 dpi (one pixel per point), on white. */
export const renderPage = (pdf: Uint8Array) =>
  withPdf(pdf, async (file, dir) => {
    await run("pdftocairo", ["-png", "-r", "72", "-singlefile", file, join(dir, "page")]);
    return readFileSync(join(dir, "page.png"));
  });

/** The page size in points, from pdfinfo. */
export const pageSize = (pdf: Uint8Array) =>
  withPdf(pdf, async (file) => {
    const { stdout } = await run("pdfinfo", [file]);
    const match = /Page size:\s+([\d.]+) x ([\d.]+) pts/.exec(stdout);
    if (!match) throw new Error(`no page size in pdfinfo output: ${stdout}`);
    return { width: Number(match[1]), height: Number(match[2]) };
  });

/** One object's stream, decoded (`qpdf --filtered-stream-data`): the exact samples, with no colour management. */
export const streamData = (pdf: Uint8Array, objectId: number) =>
  withPdf(pdf, async (file) => {
    const { stdout } = await run("qpdf", [`--show-object=${objectId}`, "--filtered-stream-data", file], { encoding: "buffer", maxBuffer: 256 * 1024 * 1024 });
    return stdout;
  });

/** The whole file with its streams uncompressed (`qpdf --qdf`), as latin1 text to search. */
export const uncompressed = (pdf: Uint8Array) =>
  withPdf(pdf, async (file) => {
    const { stdout } = await run("qpdf", ["--qdf", "--object-streams=disable", file, "-"], { encoding: "buffer", maxBuffer: 256 * 1024 * 1024 });
    return stdout.toString("latin1");
  });
