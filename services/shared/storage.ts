/**
 * S3 storage through @aws-sdk/client-s3, for AWS S3 or any S3-compatible server (MinIO, the embedded s3rver).
 * Object keys are deterministic, so a retried write overwrites instead of duplicating; the bucket is private and
 * every URL handed out is presigned, short-lived and names one object.
 */
import type { Readable } from "node:stream";
import {
  CreateBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
} from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import { NodeHttpHandler } from "@smithy/node-http-handler";

export interface StorageConfig {
  S3_ENDPOINT?: string | undefined;
  S3_PUBLIC_ENDPOINT?: string | undefined;
  S3_REGION: string;
  S3_ACCESS_KEY_ID?: string | undefined;
  S3_SECRET_ACCESS_KEY?: string | undefined;
  S3_BUCKET: string;
  S3_TIMEOUT_MS: number;
  PRESIGN_TTL_SECONDS: number;
}

export interface PresignedUrl {
  url: string;
  expiresAt: Date;
}

export interface StoredObject {
  key: string;
  size: number;
  contentType?: string | undefined;
  lastModified?: Date | undefined;
}

function s3Client(config: StorageConfig, endpoint: string | undefined): S3Client {
  return new S3Client({
    region: config.S3_REGION,
    ...(endpoint ? { endpoint, forcePathStyle: true } : {}),
    ...(config.S3_ACCESS_KEY_ID && config.S3_SECRET_ACCESS_KEY
      ? { credentials: { accessKeyId: config.S3_ACCESS_KEY_ID, secretAccessKey: config.S3_SECRET_ACCESS_KEY } }
      : {}),
    // S3-compatible servers store streamed uploads corrupted when the SDK adds its default checksums.
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
    maxAttempts: 3,
    requestHandler: new NodeHttpHandler({
      connectionTimeout: Math.min(config.S3_TIMEOUT_MS, 5_000),
      requestTimeout: config.S3_TIMEOUT_MS,
    }),
  });
}

/** The part size of putStream's multipart uploads: what it holds of a body at once (S3 needs at least 5 MiB; fewer, larger parts cost less). */
export const PART_BYTES = 16 * 1024 * 1024;

export class ObjectStore {
  readonly client: S3Client;
  readonly bucket: string;
  readonly endpoint: string | undefined;
  private readonly presigner: S3Client;

  constructor(private readonly config: StorageConfig) {
    this.client = s3Client(config, config.S3_ENDPOINT);
    this.presigner = config.S3_PUBLIC_ENDPOINT ? s3Client(config, config.S3_PUBLIC_ENDPOINT) : this.client;
    this.bucket = config.S3_BUCKET;
    this.endpoint = config.S3_ENDPOINT;
  }

  /** Creates the bucket when it does not exist yet (embedded and dev set-ups). */
  async ensureBucket(): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
    } catch (error) {
      if (!isNotFound(error)) throw error;
      await this.client.send(new CreateBucketCommand({ Bucket: this.bucket }));
    }
  }

  /**
   * Stores what `body` streams, of a length not known in advance, without holding it whole: S3's multipart upload
   * in parts of PART_BYTES, one at a time (a body that fits one part goes as a single PUT). A body that fails
   * aborts the upload, and no object is written.
   */
  async putStream(key: string, body: Readable, options: { contentType: string }): Promise<void> {
    const upload = new Upload({
      client: this.client,
      params: { Bucket: this.bucket, Key: key, Body: body, ContentType: options.contentType },
      partSize: PART_BYTES,
      queueSize: 1,
      leavePartsOnError: false,
    });
    await upload.done();
  }

  async ping(): Promise<void> {
    await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
  }

  async put(key: string, body: Uint8Array | Readable, options: { contentType: string; contentLength?: number; metadata?: Record<string, string> }): Promise<void> {
    await this.client.send(
      new PutObjectCommand({
        Bucket: this.bucket,
        Key: key,
        Body: body,
        ContentType: options.contentType,
        ContentLength: options.contentLength ?? (body instanceof Uint8Array ? body.byteLength : undefined),
        Metadata: options.metadata,
      }),
    );
  }

  /** The object's size and type, or undefined when it does not exist. */
  async head(key: string): Promise<StoredObject | undefined> {
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return { key, size: out.ContentLength ?? 0, contentType: out.ContentType, lastModified: out.LastModified };
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  /** The first `length` bytes of an object (for sniffing its format), or undefined when it does not exist. */
  async readStart(key: string, length: number): Promise<Uint8Array | undefined> {
    try {
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key, Range: `bytes=0-${length - 1}` }));
      return out.Body ? await out.Body.transformToByteArray() : new Uint8Array();
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  async delete(key: string): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
  }

  /** Objects under `prefix`, page by page. */
  async *list(prefix: string): AsyncGenerator<StoredObject> {
    let token: string | undefined;
    do {
      const page = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ContinuationToken: token }));
      for (const item of page.Contents ?? []) {
        if (item.Key) yield { key: item.Key, size: item.Size ?? 0, lastModified: item.LastModified };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  /**
   * A GET URL of one object. It names S3_PUBLIC_ENDPOINT (for people and clients) unless `internal`: a link that only
   * the services open (the image service's fetch of an original) names S3_ENDPOINT, which they can reach. With
   * `signedAt` (not in the future) the link is signed as of then and lives `ttlSeconds` from then: the same
   * arguments give the same link.
   */
  async presignGet(key: string, options: { ttlSeconds?: number; filename?: string; internal?: boolean; signedAt?: Date } = {}): Promise<PresignedUrl> {
    const ttl = options.ttlSeconds ?? this.config.PRESIGN_TTL_SECONDS;
    const signedAt = options.signedAt ?? new Date();
    const command = new GetObjectCommand({
      Bucket: this.bucket,
      Key: key,
      ...(options.filename ? { ResponseContentDisposition: `attachment; filename="${options.filename.replace(/[^\w.-]/g, "_")}"` } : {}),
    });
    const url = await getSignedUrl(options.internal ? this.client : this.presigner, command, { expiresIn: ttl, signingDate: signedAt });
    return { url, expiresAt: new Date(signedAt.getTime() + ttl * 1000) };
  }

  /** A PUT URL for exactly this content type and length. */
  async presignPut(key: string, options: { contentType: string; contentLength: number; ttlSeconds?: number }): Promise<PresignedUrl> {
    const ttl = options.ttlSeconds ?? this.config.PRESIGN_TTL_SECONDS;
    const command = new PutObjectCommand({ Bucket: this.bucket, Key: key, ContentType: options.contentType, ContentLength: options.contentLength });
    const url = await getSignedUrl(this.presigner, command, { expiresIn: ttl, signableHeaders: new Set(["content-type", "content-length"]) });
    return { url, expiresAt: new Date(Date.now() + ttl * 1000) };
  }

  /**
   * Whether `url` is a presigned URL of this store's bucket (the image service fetches from nowhere else).
   * Returns the object key when it is.
   */
  keyOfUrl(url: string): string | undefined {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      return undefined;
    }
    const origins = [this.config.S3_ENDPOINT, this.config.S3_PUBLIC_ENDPOINT]
      .filter((o): o is string => Boolean(o))
      .map((o) => new URL(o).origin);
    if (origins.length > 0) {
      if (!origins.includes(parsed.origin)) return undefined;
      const prefix = `/${this.bucket}/`;
      return parsed.pathname.startsWith(prefix) ? decodeURIComponent(parsed.pathname.slice(prefix.length)) : undefined;
    }
    // AWS virtual-hosted style: https://<bucket>.s3.<region>.amazonaws.com/<key>
    const host = `${this.bucket}.s3.${this.config.S3_REGION}.amazonaws.com`;
    return parsed.protocol === "https:" && parsed.host === host ? decodeURIComponent(parsed.pathname.slice(1)) : undefined;
  }
}

export function isNotFound(error: unknown): boolean {
  return (
    error instanceof S3ServiceException &&
    (error.$metadata.httpStatusCode === 404 || error.name === "NotFound" || error.name === "NoSuchKey" || error.name === "NoSuchBucket")
  );
}

/** Whether S3 could not be reached at all (as opposed to answering with an error). */
export function isUnreachable(error: unknown): boolean {
  if (error instanceof S3ServiceException) return (error.$metadata.httpStatusCode ?? 0) >= 500;
  const code = (error as { code?: string } | undefined)?.code ?? "";
  return ["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EHOSTUNREACH", "ENOTFOUND", "EPIPE"].includes(code) || (error as Error)?.name === "TimeoutError";
}

// The key layout of the bucket: what mcsv writes, and so all it may delete.

/** Object keys are deterministic, so that a retried write overwrites instead of duplicating. */
export const objectKeys = {
  upload: (uploadId: string) => `uploads/${uploadId}`,
  original: (conversionId: string) => `originals/${conversionId}`,
  /** The original of page `index` (from 0) of a document. */
  page: (conversionId: string, index: number) => `originals/${conversionId}.${index + 1}`,
  pdf: (conversionId: string) => `pdfs/${conversionId}.pdf`,
};

/** The prefixes of objectKeys: the only objects mcsv writes, and so the only ones cleanup_storage may delete. */
export const OWNED_PREFIXES = ["uploads/", "originals/", "pdfs/"] as const;

/** One object directly under an owned prefix (no deeper path, no dot segments). */
export function isOwnedObjectKey(key: string): boolean {
  return /^(uploads|originals|pdfs)\/(?!\.\.?$)[\w.-]{1,200}$/.test(key);
}
