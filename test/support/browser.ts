/**
 * Real headless Chromium for the tests of pages (Debian's chromium, driven by playwright-core; no browser download).
 */
import { chromium, type Browser } from "playwright-core";

/** Where Debian's package puts it; CHROMIUM_PATH names another. */
const EXECUTABLE = process.env["CHROMIUM_PATH"] ?? "/usr/bin/chromium";

export async function launchChromium(): Promise<Browser> {
  // As root in a container, Chromium's sandbox cannot start.
  return chromium.launch({ executablePath: EXECUTABLE, args: ["--no-sandbox"] });
}
