/**
 * Postgres access shared by the services: a pg.Pool that survives a Postgres restart (errors on idle clients are
 * logged, not thrown), and migrations by node-pg-migrate: at start-up, under its advisory lock so that N replicas
 * starting together migrate once, or by a pre-deploy job, the services then checking that they were applied.
 */
import { readdir } from "node:fs/promises";
import { basename } from "node:path";
import { runner } from "node-pg-migrate";
import pg from "pg";
import { describeError } from "./errors.js";
import type { Logger } from "./logger.js";

export type Pool = pg.Pool;
export type PoolClient = pg.PoolClient;

export function createPool(url: string, logger: Logger, options: { max?: number; name?: string } = {}): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max: options.max ?? 10,
    connectionTimeoutMillis: 5_000,
    idleTimeoutMillis: 30_000,
    application_name: options.name,
  });
  // Without these, a Postgres restart emits 'error' on idle clients and kills the process.
  pool.on("error", (error) => logger.warn("idle Postgres client lost", { error: describeError(error) }));
  pool.on("connect", (client) => {
    client.on("error", (error) => logger.warn("Postgres client error", { error: describeError(error) }));
  });
  return pool;
}

/**
 * Applies the `.sql` migrations in `dir` (node-pg-migrate's `-- Up Migration` format) to `schema`. Each schema has
 * its own advisory lock, and a replica that finds the lock taken waits for the other to finish instead of failing.
 */
export async function migrate(url: string, options: { dir: string; schema: string; logger: Logger; timeoutMs?: number }): Promise<void> {
  const deadline = Date.now() + (options.timeoutMs ?? 60_000);
  for (let attempt = 1; ; attempt++) {
    try {
      const applied = await runner({
        databaseUrl: url,
        dir: options.dir,
        direction: "up",
        schema: options.schema,
        createSchema: true,
        migrationsTable: "migrations",
        migrationsSchema: options.schema,
        createMigrationsSchema: true,
        checkOrder: true,
        lockValue: lockValueOf(options.schema),
        log: () => undefined,
      });
      if (applied.length > 0) options.logger.info("migrations applied", { schema: options.schema, migrations: applied.map((m) => m.name) });
      return;
    } catch (error) {
      if (!/another migration is already running/i.test(describeError(error)) || Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, Math.min(100 * attempt, 1_000)));
    }
  }
}

/**
 * Resolves when every migration in `dir` has been applied to `schema`; rejects, naming those that are missing, when
 * not. A service that does not migrate at start-up (MIGRATE_ON_START=false) checks this instead, so that it never
 * runs against a schema older than its code.
 */
export async function expectMigrated(url: string, options: { dir: string; schema: string }): Promise<void> {
  const expected = (await readdir(options.dir)).filter((file) => file.endsWith(".sql")).map((file) => basename(file, ".sql"));
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 });
  await client.connect();
  let applied: Set<string>;
  try {
    const table = await client.query<{ found: string | null }>(`select to_regclass($1) as found`, [`${options.schema}.migrations`]);
    applied = table.rows[0]?.found ? new Set((await client.query<{ name: string }>(`select name from ${options.schema}.migrations`)).rows.map((r) => r.name)) : new Set();
  } finally {
    await client.end().catch(() => undefined);
  }
  const missing = expected.filter((name) => !applied.has(name));
  if (missing.length > 0) {
    throw new Error(`the database schema ${options.schema} lacks ${missing.length} migration(s) (${missing.join(", ")}): run the migrate command first (the pre-deploy job), or start with MIGRATE_ON_START=true`);
  }
}

/** A stable advisory-lock key per schema (a signed 32-bit FNV-1a hash of its name). */
function lockValueOf(schema: string): number {
  let hash = 0x811c9dc5;
  for (const char of schema) hash = Math.imul(hash ^ char.charCodeAt(0), 0x01000193);
  return hash | 0;
}

/** Network failures of the connection to Postgres. */
const CONNECTION_ERROR_CODES = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "EHOSTUNREACH", "ENETUNREACH", "ENOTFOUND", "EAI_AGAIN"]);
/** SQLSTATEs of a server that is going away or not taking connections (class 08 is matched by prefix). */
const UNAVAILABLE_SQLSTATES = new Set(["57P01", "57P02", "57P03", "53300"]);
/** pg's own messages for a connection it lost or could not make in time. */
const CONNECTION_LOST = /Connection terminated|timeout exceeded when trying to connect|not queryable|Client was closed/i;

/**
 * Whether `error` means that Postgres could not be reached (down, restarting, failing over, out of connections),
 * as opposed to a query that failed: the first is worth retrying later, the second is a bug or bad input.
 */
export function isDatabaseUnavailable(error: unknown): boolean {
  if (typeof error !== "object" || error === null) return false;
  const { code, message } = error as { code?: unknown; message?: unknown };
  if (typeof code === "string" && (CONNECTION_ERROR_CODES.has(code) || UNAVAILABLE_SQLSTATES.has(code) || /^08/.test(code))) return true;
  return typeof message === "string" && CONNECTION_LOST.test(message);
}

/** The server's dependencyErrors for a service with a database: Postgres out of reach is worth retrying later. */
export function databaseUnavailable(error: unknown): string | undefined {
  return isDatabaseUnavailable(error) ? "the database is unavailable; retry later" : undefined;
}

export function databaseCheck(pool: pg.Pool): () => Promise<unknown> {
  return () => pool.query("select 1");
}

/** Runs `fn` in a transaction, committing on success and rolling back on any error. */
export async function transaction<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query("begin");
    const result = await fn(client);
    await client.query("commit");
    return result;
  } catch (error) {
    await client.query("rollback").catch(() => undefined);
    throw error;
  } finally {
    client.release();
  }
}
