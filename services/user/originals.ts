/**
 * The gateway's use of object storage: originals and uploads. Storage failures become `unavailable` at once (the
 * store has a short timeout here), so a client retries instead of waiting; a missing object is `undefined`.
 */
import { CopyObjectCommand } from "@aws-sdk/client-s3";
import { Code, ConnectError } from "@connectrpc/connect";
import { describeError } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import { type ObjectStore, type PresignedUrl, type StoredObject } from "../shared/storage.js";

export class Originals {
  constructor(
    private readonly store: ObjectStore,
    private readonly logger: Logger,
  ) {}

  async put(key: string, bytes: Uint8Array, contentType: string): Promise<void> {
    await this.guard("put", () => this.store.put(key, bytes, { contentType }));
  }

  /** Server-side copy (the bytes do not pass through the gateway). */
  async copy(fromKey: string, toKey: string, contentType: string): Promise<void> {
    await this.guard("copy", () =>
      this.store.client.send(
        new CopyObjectCommand({
          Bucket: this.store.bucket,
          Key: toKey,
          CopySource: `${this.store.bucket}/${fromKey.split("/").map(encodeURIComponent).join("/")}`,
          ContentType: contentType,
          MetadataDirective: "REPLACE",
        }),
      ),
    );
  }

  async head(key: string): Promise<StoredObject | undefined> {
    return this.guard("head", () => this.store.head(key));
  }

  async readStart(key: string, length: number): Promise<Uint8Array | undefined> {
    return this.guard("read", () => this.store.readStart(key, length));
  }

  /** Best effort: a leftover object is removed by the storage sweep later. */
  async deleteQuietly(key: string): Promise<void> {
    await this.store.delete(key).catch((error) => this.logger.warn("could not delete object; the sweep will", { key, error: describeError(error) }));
  }

  presignGet(key: string, options: { ttlSeconds?: number; filename?: string } = {}): Promise<PresignedUrl> {
    return this.store.presignGet(key, options);
  }

  presignPut(key: string, options: { contentType: string; contentLength: number }): Promise<PresignedUrl> {
    return this.store.presignPut(key, options);
  }

  private async guard<T>(operation: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (error) {
      this.logger.warn("object storage failed", { operation, error: describeError(error) });
      throw new ConnectError("object storage is unavailable; retry later", Code.Unavailable);
    }
  }
}
