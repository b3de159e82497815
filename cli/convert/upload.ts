/** A large image's way to the gateway: CreateUploadUrl, then a presigned PUT straight to storage. */
import type { Client } from "@connectrpc/connect";
import type { UserService } from "@mcsv/sdk";
import { fileTypeFromBuffer } from "file-type";
import { CliError } from "../errors.js";
import type { Log } from "../trace.js";
import { redact } from "./pdf-file.js";

/** MIME types CreateUploadUrl accepts (the gateway sniffs the bytes again). */
const UPLOAD_TYPES = new Set(["image/png", "image/jpeg", "image/webp", "image/tiff", "image/gif", "image/avif"]);

/** CreateUploadUrl, then the PUT with exactly the headers it names; returns the upload id. */
export async function upload(users: Client<typeof UserService>, bytes: Buffer, request: { userEmail: string; filename: string }, log?: Log): Promise<string> {
  const contentType = (await fileTypeFromBuffer(bytes))?.mime;
  if (!contentType || !UPLOAD_TYPES.has(contentType)) {
    throw new CliError(`${contentType ? `${contentType} is` : "is"} not a png, jpeg, webp, tiff, gif or avif image`);
  }
  const ticket = await users.createUploadUrl({ ...request, contentType, size: BigInt(bytes.byteLength) });
  const started = performance.now();
  const response = await fetch(ticket.uploadUrl, { method: "PUT", headers: ticket.headers, body: bytes });
  log?.(`PUT ${redact(ticket.uploadUrl)} ${response.status} ${Math.round(performance.now() - started)} ms`);
  await response.body?.cancel();
  if (!response.ok) throw new CliError(`the upload failed: HTTP ${response.status}`);
  return ticket.uploadId;
}
