/**
 * mcsv's ImageMagick policy at run time (services/image/policy.ts): the image service runs every ImageMagick with
 * MAGICK_CONFIGURE_PATH at deploy/imagemagick, so the installed ImageMagick (IM 6.9.11 here) merges it with the
 * system policy. Under it the service's real arguments still write PDFs for every preset and input encoding, the
 * classic attacks are refused by the spawned process, and the start-up check notices when the policy is not in
 * force: not loaded, undone by a later policy file, or simply too permissive. The service then is not ready and runs
 * no conversion.
 */
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { ImageServiceConvertImageRequestSchema, Quality } from "@mcsv/sdk";
import sharp from "sharp";
import { loadImageConfig } from "../../services/image/config.js";
import { detectImageMagickCommand, pdfArguments, runImageMagick } from "../../services/image/imagemagick.js";
import type { NormalisedImage } from "../../services/image/normalise.js";
import { DEFAULT_POLICY_DIR, imageMagickEnv, policyFile, policyProblems, verifyImageMagickPolicy } from "../../services/image/policy.js";
import { qualityPreset } from "../../services/image/quality.js";
import { createLogger } from "../../services/shared/logger.js";
import { testAuthEnv } from "../support/credentials.js";
import { encodePng, gradientPixels, startImageHarness } from "./support.js";

const command = detectImageMagickCommand();
const env = imageMagickEnv(DEFAULT_POLICY_DIR);
const limits = { memory: "256MiB", map: "512MiB", disk: "1GiB", timeSeconds: 30 };
const run = (args: string[], input: Uint8Array = new Uint8Array(), runEnv = env) => runImageMagick(command, args, input, { timeoutMs: 30_000, maxOutputBytes: 10_000_000, env: runEnv });

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "mcsv-im-runtime-policy-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A policy directory holding `xml` as its policy.xml. */
function policyDir(name: string, xml: string): string {
  const path = join(dir, name);
  mkdirSync(path, { recursive: true });
  writeFileSync(join(path, "policy.xml"), xml);
  return path;
}

test("ImageMagick loads mcsv's policy from MAGICK_CONFIGURE_PATH, and no other policy file grants what it denies", async () => {
  const listing = (await run(["-list", "policy"])).toString("utf8");
  expect(listing).toContain(`Path: ${policyFile(DEFAULT_POLICY_DIR)}`);
  expect(listing).toMatch(/Policy: Coder\s+rights: Write\s+pattern: PDF/);
  expect(policyProblems(listing, policyFile(DEFAULT_POLICY_DIR))).toEqual([]);
  // Without the variable, ImageMagick here reads only the system policy: the service's environment is what adds it.
  const system = (await run(["-list", "policy"], new Uint8Array(), { PATH: process.env["PATH"] })).toString("utf8");
  expect(system).not.toContain(policyFile(DEFAULT_POLICY_DIR));
});

describe("under the policy, the service's real arguments", () => {
  const raw3: NormalisedImage = { encoding: "raw", data: gradientPixels(6, 4, 3), width: 6, height: 4, channels: 3 };
  const raw4: NormalisedImage = { encoding: "raw", data: gradientPixels(6, 4, 4), width: 6, height: 4, channels: 4 };

  test.each([
    ["LOSSLESS", Quality.LOSSLESS],
    ["HIGH", Quality.HIGH],
    ["MEDIUM", Quality.MEDIUM],
    ["LOW", Quality.LOW],
  ])("write the %s preset's PDF from RGB, RGBA and a PNG carrying an ICC profile", async (_name, quality) => {
    // normalise.ts sends an uncompressed PNG with the profile when it keeps one.
    const png = await sharp(gradientPixels(6, 4, 3), { raw: { width: 6, height: 4, channels: 3 } })
      .withIccProfile("srgb")
      .png({ compressionLevel: 0 })
      .toBuffer();
    const pngImage: NormalisedImage = { encoding: "png", data: png, width: 6, height: 4, channels: 3 };
    for (const image of [raw3, raw4, pngImage]) {
      const pdf = await run(pdfArguments(image, qualityPreset(quality)!, limits), image.data);
      expect({ input: `${image.encoding}/${image.channels}`, head: pdf.subarray(0, 5).toString("latin1") }).toEqual({ input: `${image.encoding}/${image.channels}`, head: "%PDF-" });
    }
  });
});

describe("the spawned ImageMagick refuses", () => {
  /** ImageMagick's stderr for a probe, or "wrote a PDF". */
  const outcome = async (args: string[], stdin: string, runEnv: NodeJS.ProcessEnv) =>
    run([...args, "pdf:-"], Buffer.from(stdin), runEnv).then(
      () => "wrote a PDF",
      (e: unknown) => ConnectError.from(e).rawMessage,
    );
  /** ImageMagick with the machine's own policy files only: mcsv's policy not in force. */
  const withoutPolicy = { PATH: process.env["PATH"] };
  const policyRefused = (message: string, target: string) => message.includes(`not allowed by the security policy \`${target}'`);

  // A probe counts as refused only when ImageMagick names the policy and what it refused. A coder whose module the
  // policy keeps from loading is reported as "no decode delegate", which a missing delegate would say as well: those
  // probes must also come out differently when mcsv's policy is not in force.
  test.each([
    ["text: of a file", ["text:/etc/hostname"], "", "TEXT"],
    ["text:@file", ["text:@/etc/hostname"], "", "TEXT"],
    ["a bare @file", ["@/etc/hostname"], "", "@/etc/hostname"],
    ["https: (a fetch)", ["https://127.0.0.1:9/x.png"], "", "HTTPS"],
    ["http: (a fetch)", ["http://127.0.0.1:9/x.png"], "", "HTTP"],
    ["svg:", ["svg:-"], '<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>', "SVG"],
    ["ps: (Ghostscript)", ["ps:-"], "%!PS\nshowpage\n", "PS"],
    ["pdf: reading (Ghostscript)", ["pdf:-"], "%PDF-1.4\n%%EOF\n", "PDF"],
    ["xc: (any coder not on the allow list)", ["-size", "1x1", "xc:white"], "", "XC"],
  ])("%s, by name", async (_what, args, stdin, target) => {
    expect(policyRefused(await outcome(args, stdin, env), target)).toBe(true);
  });

  test.each([
    ["msl: (a script that would draw a canvas)", ["msl:-"], '<?xml version="1.0"?><image size="1x1"><read filename="xc:white"/></image>'],
    ["mvg: (a drawing)", ["-size", "1x1", "mvg:-"], "viewbox 0 0 1 1\nfill white\nrectangle 0,0 1,1\n"],
    ["txt: (ImageMagick's pixel enumeration)", ["txt:-"], "# ImageMagick pixel enumeration: 1,1,255,srgb\n0,0: (255,255,255)  #FFFFFF  white\n"],
  ])("%s, by keeping its module from loading (and only under mcsv's policy)", async (_what, args, stdin) => {
    const under = await outcome(args, stdin, env);
    expect(under).toMatch(/no decode delegate for this image format/);
    expect(await outcome(args, stdin, withoutPolicy)).not.toMatch(/no decode delegate for this image format/);
  });

  test("while the same MVG drawing runs when the policy is not in force (the probes are meaningful here)", async () => {
    expect(await outcome(["-size", "1x1", "mvg:-"], "viewbox 0 0 1 1\nfill white\nrectangle 0,0 1,1\n", withoutPolicy)).toBe("wrote a PDF");
  });
});

describe("the start-up check (verifyImageMagickPolicy)", () => {
  test("passes under the shipped policy, also when the system policy is a copy of it (the Docker image)", async () => {
    await expect(verifyImageMagickPolicy(command, DEFAULT_POLICY_DIR)).resolves.toBeUndefined();
    const copy = join(dir, "copy");
    mkdirSync(copy, { recursive: true });
    copyFileSync(policyFile(DEFAULT_POLICY_DIR), join(copy, "policy.xml"));
    await expect(verifyImageMagickPolicy(command, DEFAULT_POLICY_DIR, { ...env, MAGICK_CONFIGURE_PATH: `${DEFAULT_POLICY_DIR}:${copy}` })).resolves.toBeUndefined();
  });

  test("notices a policy that ImageMagick did not load", async () => {
    await expect(verifyImageMagickPolicy(command, DEFAULT_POLICY_DIR, { PATH: process.env["PATH"] })).rejects.toThrow(/did not load .*policy\.xml/);
  });

  test("notices a policy file read after mcsv's that grants back a coder (the last matching rule wins)", async () => {
    const lax = policyDir("lax", '<policymap><policy domain="coder" rights="read|write" pattern="{XC,MVG}"/></policymap>');
    const error = await verifyImageMagickPolicy(command, DEFAULT_POLICY_DIR, { ...env, MAGICK_CONFIGURE_PATH: `${DEFAULT_POLICY_DIR}:${lax}` }).catch((e: unknown) => ConnectError.from(e));
    expect(error?.code).toBe(Code.Internal);
    expect(error?.rawMessage).toContain(`${lax}/policy.xml grants read on coder XC, which mcsv's policy denies`);
    expect(error?.rawMessage).toContain(`${lax}/policy.xml grants read on coder MVG, which mcsv's policy denies`);
    // XC really runs again; MVG stays refused all the same, because mcsv's policy also keeps its module unloaded.
    expect(error?.rawMessage).toContain("a generated canvas (XC) was not refused");
    expect(error?.rawMessage).not.toContain("an MVG drawing was not refused");
  });

  test("notices a policy that allows too much (here: one that denies only PDF reading)", async () => {
    const weak = policyDir("weak", '<policymap><policy domain="coder" rights="write" pattern="PDF"/></policymap>');
    const error = await verifyImageMagickPolicy(command, weak).catch((e: unknown) => ConnectError.from(e));
    expect(error?.rawMessage).toMatch(/is not in force: .*an MVG drawing was not refused/);
    expect(error?.rawMessage).toContain("a generated canvas (XC) was not refused");
  });
});

describe("the image service", () => {
  test("refuses to start with a policy directory that holds no policy.xml", () => {
    expect(() => loadImageConfig({ ...testAuthEnv, IMAGEMAGICK_POLICY_DIR: dir })).toThrow(/IMAGEMAGICK_POLICY_DIR: must be a directory that holds policy.xml/);
    expect(loadImageConfig({ ...testAuthEnv }).IMAGEMAGICK_POLICY_DIR).toBe(DEFAULT_POLICY_DIR);
  });

  test("under a policy that is not in force: not ready, says why, and converts nothing", async () => {
    const weak = policyDir("weak-service", '<policymap><policy domain="coder" rights="write" pattern="PDF"/></policymap>');
    const logger = createLogger("image-svc");
    logger.silent = true; // its start-up error is expected here
    const harness = await startImageHarness({ IMAGEMAGICK_POLICY_DIR: weak }, { logger });
    try {
      const readiness = await fetch(`${harness.service.url}/health/ready`);
      const body = (await readiness.json()) as { checks: Record<string, string> };
      expect(readiness.status).toBe(503);
      expect(body.checks["imagemagick"]).toMatch(/ImageMagick policy .* is not in force/);
      const imageUrl = await harness.upload(await encodePng(gradientPixels(4, 4, 3), 4, 4, 3));
      const error = await harness.client
        .convertImage(create(ImageServiceConvertImageRequestSchema, { conversionId: crypto.randomUUID(), imageUrl, inputFormat: "png" }))
        .then(() => undefined, (e: unknown) => ConnectError.from(e));
      expect(error?.code).toBe(Code.Internal);
      expect(error?.rawMessage).toMatch(/ImageMagick policy .* is not in force/);
    } finally {
      await harness.stop();
    }
  });

  test("under the shipped policy (the default): ready, and converts", async () => {
    const harness = await startImageHarness();
    try {
      expect(await harness.ready()).toBe(200);
      const { pdf } = await harness.convert({ imageUrl: await harness.upload(await encodePng(gradientPixels(8, 5, 4), 8, 5, 4)), inputFormat: "png", options: { quality: Quality.MEDIUM } });
      expect(pdf.subarray(0, 5).toString("latin1")).toBe("%PDF-");
    } finally {
      await harness.stop();
    }
  });
});
