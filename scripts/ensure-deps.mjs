#!/usr/bin/env node
/**
 * Installs what `npm start` and `npm test` need on a fresh machine, and does nothing when it is all there:
 * - the npm dependencies (again whenever package-lock.json changes);
 * - ImageMagick and Ghostscript, and ocrmypdf with tesseract's English data for the image service's OCR (with --test,
 *   also the PDF and Prometheus tools and the Chromium the tests use; with --bench, poppler and img2pdf, B6's pixel
 *   check and its peer) through apt-get, with sudo when not root; on any other OS it says exactly what to install;
 * - an ImageMagick policy that may write PDF (Debian's forbids it).
 * Plain Node with no dependencies, because it runs before they exist.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { platform } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const forTests = process.argv.includes("--test");
const forBench = process.argv.includes("--bench");

function say(message) {
  process.stderr.write(`[setup] ${message}\n`);
}

function run(command, args, options = {}) {
  const result = spawnSync(command, args, { stdio: "inherit", cwd: root, ...options });
  if (result.status !== 0) {
    throw new Error(`${command} ${args.join(" ")} failed with exit code ${result.status ?? result.signal}`);
  }
}

function has(command) {
  return spawnSync("sh", ["-c", `command -v ${command}`], { stdio: "ignore" }).status === 0;
}

function ensureNpmDependencies() {
  const lock = join(root, "package-lock.json");
  const stamp = join(root, "node_modules", ".mcsv-lock-sha256");
  const want = createHash("sha256").update(readFileSync(lock)).digest("hex");
  if (existsSync(stamp) && readFileSync(stamp, "utf8") === want) return;
  // `npm install` rather than `npm ci`: the registry mirror here serves only this platform's optional
  // packages, so the lock file cannot list every platform's, and `npm ci` refuses such a lock.
  say("installing npm dependencies");
  run("npm", ["install", "--no-audit", "--no-fund"]);
  writeFileSync(stamp, want);
}

/** The real ImageMagick answers `-version` with its name; a missing one (or a stand-in) does not. */
function imageMagickWorks() {
  for (const command of ["magick", "convert"]) {
    const result = spawnSync(command, ["-version"], { encoding: "utf8" });
    if (result.status === 0 && /ImageMagick \d/.test(result.stdout)) {
      // A stand-in that forwards to /usr/bin/convert counts only once that binary exists.
      if (command === "convert" && !existsSync("/usr/bin/convert") && /Stands in/.test(readFileSync(which(command), "utf8"))) {
        return false;
      }
      return true;
    }
  }
  return false;
}

/** ocrmypdf answers `--version` once it and its Python dependencies are installed. */
function ocrMyPdfWorks() {
  return spawnSync("ocrmypdf", ["--version"], { encoding: "utf8" }).status === 0;
}

/** Whether tesseract lists `language` among its installed data (a heading line, then one code a line). */
function hasTesseractLanguage(language) {
  const result = spawnSync("tesseract", ["--list-langs"], { encoding: "utf8" });
  return result.status === 0 && result.stdout.split("\n").slice(1).some((line) => line.trim() === language);
}

function which(command) {
  return execFileSync("sh", ["-c", `command -v ${command}`], { encoding: "utf8" }).trim();
}

function missingSystemPackages() {
  const wanted = [
    { pkg: "imagemagick", ok: imageMagickWorks() },
    { pkg: "ghostscript", ok: has("gs") },
    // OCR (services/image/ocr.ts): ocrmypdf brings tesseract; English is the language the tests recognise.
    { pkg: "ocrmypdf", ok: ocrMyPdfWorks() },
    { pkg: "tesseract-ocr-eng", ok: hasTesseractLanguage("eng") },
  ];
  if (forTests) {
    wanted.push(
      { pkg: "poppler-utils", ok: has("pdfimages") && has("pdftocairo") },
      { pkg: "qpdf", ok: has("qpdf") },
      { pkg: "prometheus", ok: has("promtool") },
      // test/deploy/live-prometheus.test.ts delivers an alert through a real Alertmanager; amtool checks its config.
      { pkg: "prometheus-alertmanager", ok: has("prometheus-alertmanager") },
      // The pages (Swagger UI, the console) are tested in real headless Chromium.
      { pkg: "chromium", ok: has("chromium") },
    );
  }
  if (forBench) {
    wanted.push({ pkg: "poppler-utils", ok: has("pdfimages") }, { pkg: "img2pdf", ok: has("img2pdf") });
  }
  return [...new Set(wanted.filter((w) => !w.ok).map((w) => w.pkg))];
}

/** Runs `command` as root, with `extraEnv` set (through env(1) under sudo, which resets the environment). */
function asRoot(command, args, extraEnv = {}) {
  if (process.getuid?.() === 0) return run(command, args, { env: { ...process.env, ...extraEnv } });
  if (!has("sudo")) throw new Error(`run as root (or install sudo) to allow: ${command} ${args.join(" ")}`);
  return run("sudo", ["env", ...Object.entries(extraEnv).map(([k, v]) => `${k}=${v}`), command, ...args]);
}

function ensureSystemPackages() {
  const missing = missingSystemPackages();
  if (missing.length === 0) return;
  if (platform() === "linux" && has("apt-get")) {
    say(`installing ${missing.join(", ")} with apt-get`);
    asRoot("apt-get", ["update", "-qq"]);
    asRoot("apt-get", ["install", "-y", "-qq", "--no-install-recommends", ...missing], { DEBIAN_FRONTEND: "noninteractive" });
    return;
  }
  const hint =
    platform() === "darwin"
      ? "brew install imagemagick ghostscript ocrmypdf tesseract poppler qpdf prometheus alertmanager"
      : "ImageMagick (6 or 7), Ghostscript, ocrmypdf with tesseract and its English data (eng)" +
        (forTests ? ", poppler-utils (pdfimages, pdftocairo), qpdf, Prometheus (prometheus, promtool), Alertmanager (alertmanager, amtool), chromium" : "") +
        (forBench ? ", poppler-utils (pdfimages), img2pdf" : "");
  throw new Error(`missing: ${missing.join(", ")}. Install them first: ${hint}`);
}

/** Debian's policy.xml denies the PDF coder outright; mcsv writes PDFs, so allow writing (never reading) them. */
function ensurePdfWritable() {
  const command = has("magick") ? "magick" : "convert";
  const probe = spawnSync(command, ["-size", "1x1", "xc:white", "pdf:-"], { encoding: "latin1" });
  if (probe.status === 0 && probe.stdout.startsWith("%PDF")) return;
  if (!/security policy/.test(probe.stderr)) throw new Error(`ImageMagick cannot write PDF: ${probe.stderr.trim()}`);
  const policies = ["/etc/ImageMagick-6/policy.xml", "/etc/ImageMagick-7/policy.xml", "/etc/ImageMagick/policy.xml"];
  for (const policy of policies.filter((p) => existsSync(p))) {
    const text = readFileSync(policy, "utf8");
    const allowed = text.replace(/<policy domain="coder" rights="none" pattern="PDF" \/>/g, '<policy domain="coder" rights="write" pattern="PDF" />');
    if (allowed === text) continue;
    say(`allowing ImageMagick to write PDF in ${policy}`);
    const tmp = join(root, ".policy.xml.tmp");
    writeFileSync(tmp, allowed);
    asRoot("cp", [tmp, policy]);
    spawnSync("rm", ["-f", tmp]);
  }
  const again = spawnSync(command, ["-size", "1x1", "xc:white", "pdf:-"], { encoding: "latin1" });
  if (again.status !== 0) throw new Error(`ImageMagick still cannot write PDF: ${again.stderr.trim()}`);
}

try {
  ensureNpmDependencies();
  ensureSystemPackages();
  ensurePdfWritable();
} catch (error) {
  say(`cannot continue: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
}
