/**
 * cleanup_storage: deletes one object (an original whose conversion succeeded), or with `sweep`, every object past
 * its retention: uploads after UPLOAD_RETENTION_HOURS, originals and PDFs after PDF_RETENTION_DAYS. Deleting an
 * object that is already gone succeeds, so a repeated job is harmless. Only objects under the prefixes mcsv writes
 * (uploads/, originals/, pdfs/) are ever deleted: any other key is refused when the job is enqueued, and again here
 * (a permanent error), so that whoever may enqueue cannot have the bucket's other objects deleted.
 */
import { isNotFound, isOwnedObjectKey, objectKeys, type ObjectStore, OWNED_PREFIXES } from "../../shared/storage.js";
import { storageSweptObjects } from "../metrics.js";
import { decodeTaskArgs, STORED, type DecodedPayloads } from "../payloads.js";
import { PermanentJobError, type TaskDefinition } from "./context.js";

/** Deletes in flight at once during a sweep. */
const SWEEP_PARALLELISM = 16;

export interface CleanupStorageDeps {
  store: Pick<ObjectStore, "delete" | "list">;
  uploadMaxAgeMs: number;
  pdfMaxAgeMs: number;
}

async function deleteObject(store: CleanupStorageDeps["store"], key: string): Promise<void> {
  try {
    await store.delete(key);
  } catch (error) {
    if (!isNotFound(error)) throw error;
  }
}

/** Deletes the objects under `prefix` last modified before `cutoff`; returns how many. */
async function sweepPrefix(store: CleanupStorageDeps["store"], prefix: string, cutoff: Date, signal: AbortSignal): Promise<number> {
  let deleted = 0;
  let batch: string[] = [];
  const flush = async () => {
    await Promise.all(batch.map((key) => deleteObject(store, key)));
    deleted += batch.length;
    storageSweptObjects.inc({ prefix: prefix.replace(/\/$/, "") }, batch.length);
    batch = [];
  };
  for await (const object of store.list(prefix)) {
    signal.throwIfAborted();
    if (object.lastModified && object.lastModified < cutoff) batch.push(object.key);
    if (batch.length >= SWEEP_PARALLELISM) await flush();
  }
  await flush();
  return deleted;
}

export function cleanupStorageTask(deps: CleanupStorageDeps): TaskDefinition<DecodedPayloads["cleanup_storage"]> {
  return {
    decode: (args) => decodeTaskArgs("cleanup_storage", args, "args", STORED),
    async run({ target }, ctx) {
      const objectKey = target.case === "objectKey" ? target.value : undefined;
      const sweep = target.case === "sweep" && target.value;
      if (objectKey) {
        if (!isOwnedObjectKey(objectKey)) throw new PermanentJobError(`refused to delete ${JSON.stringify(objectKey)}: not an object key under ${OWNED_PREFIXES.join(", ")}`);
        await deleteObject(deps.store, objectKey);
        ctx.logger.info("object deleted", { object_key: objectKey });
      }
      if (sweep) {
        const now = Date.now();
        const rules = [
          { prefix: objectKeys.upload(""), cutoff: new Date(now - deps.uploadMaxAgeMs) },
          { prefix: objectKeys.original(""), cutoff: new Date(now - deps.pdfMaxAgeMs) },
          { prefix: objectKeys.pdf("").replace(/\.pdf$/, ""), cutoff: new Date(now - deps.pdfMaxAgeMs) },
        ];
        const deleted: Record<string, number> = {};
        for (const { prefix, cutoff } of rules) deleted[prefix] = await sweepPrefix(deps.store, prefix, cutoff, ctx.signal);
        ctx.logger.info("storage swept", { deleted });
      }
    },
  };
}
