/**
 * Direct uploads: a client that has a large image PUTs it straight to storage through a presigned URL, then names
 * the upload in ConvertImage. The row remembers who asked and for how many bytes, so that the conversion can check
 * the object that actually arrived. An upload belongs to its tenant: no other tenant can convert it.
 */
import { randomUUID } from "node:crypto";
import type { Pool } from "../shared/database.js";
import type { PresignedUrl } from "../shared/storage.js";
import { objectKeys } from "../shared/storage.js";
import type { Originals } from "./originals.js";
import type { UploadRow } from "./records.js";

export interface NewUpload {
  tenant: string;
  userEmail: string;
  filename: string;
  contentType: string;
  size: number;
}

export interface UploadTicket {
  uploadId: string;
  upload: PresignedUrl;
  /** Headers the PUT must carry exactly: the presigned signature covers them. */
  headers: Record<string, string>;
}

export class Uploads {
  constructor(
    private readonly pool: Pool,
    private readonly originals: Originals,
  ) {}

  async create(input: NewUpload): Promise<UploadTicket> {
    const uploadId = randomUUID();
    const upload = await this.originals.presignPut(objectKeys.upload(uploadId), { contentType: input.contentType, contentLength: input.size });
    await this.pool.query(
      `insert into mcsv_user.uploads (id, tenant, user_email, filename, content_type, size, expires_at) values ($1, $2, $3, $4, $5, $6, $7)`,
      [uploadId, input.tenant, input.userEmail, input.filename, input.contentType, input.size, upload.expiresAt],
    );
    return { uploadId, upload, headers: { "Content-Type": input.contentType, "Content-Length": String(input.size) } };
  }

  /** The upload, when it exists and belongs to this tenant and address. */
  async find(tenant: string, uploadId: string, userEmail: string): Promise<UploadRow | undefined> {
    const { rows } = await this.pool.query<UploadRow>(
      `select id, tenant, user_email, filename, content_type, size, expires_at, conversion_id
       from mcsv_user.uploads where id = $1 and tenant = $2 and lower(user_email) = lower($3)`,
      [uploadId, tenant, userEmail],
    );
    return rows[0];
  }
}
