/**
 * Saving a finished PDF: downloaded from its presigned pdf_url into the output directory, named after its image
 * (photo.jpg → photo.pdf) or as --one-pdf names it. An existing file is never replaced silently: the next free name
 * (photo-1.pdf, …) is taken, atomically (O_EXCL), unless --overwrite says otherwise.
 */
import { open, type FileHandle } from "node:fs/promises";
import { basename, extname, join } from "node:path";
import { CliError } from "../errors.js";
import type { Log } from "../trace.js";

export function pdfNameFor(imagePath: string): string {
  const name = basename(imagePath);
  const stem = name.slice(0, name.length - extname(name).length) || name;
  return `${stem}.pdf`;
}

/** Where a PDF is saved: a directory, and the name to take there (or the next free one like it). */
export interface PdfTarget {
  dir: string;
  name: string;
}

async function createFile({ dir, name }: PdfTarget, overwrite: boolean): Promise<{ path: string; handle: FileHandle }> {
  if (overwrite) return { path: join(dir, name), handle: await open(join(dir, name), "w") };
  const extension = extname(name);
  const stem = name.slice(0, name.length - extension.length);
  for (let n = 0; n < 1000; n++) {
    const path = join(dir, n === 0 ? name : `${stem}-${n}${extension}`);
    try {
      return { path, handle: await open(path, "wx") };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    }
  }
  throw new CliError(`no free file name for ${name} in ${dir}`);
}

/** Downloads the PDF and returns where it was saved. */
export async function savePdf(pdfUrl: string, target: PdfTarget, overwrite: boolean, log?: Log): Promise<string> {
  const started = performance.now();
  const response = await fetch(pdfUrl);
  log?.(`GET ${redact(pdfUrl)} ${response.status} ${Math.round(performance.now() - started)} ms`);
  if (!response.ok) throw new CliError(`downloading the PDF failed: HTTP ${response.status}`);
  const bytes = new Uint8Array(await response.arrayBuffer());
  const { path, handle } = await createFile(target, overwrite);
  try {
    await handle.writeFile(bytes);
  } finally {
    await handle.close();
  }
  return path;
}

/** A presigned URL without its query: the signature is a credential, and stays out of logs. */
export function redact(url: string): string {
  const parsed = new URL(url);
  return `${parsed.origin}${parsed.pathname}`;
}
