/**
 * Change notifications of conversions, for WatchConversion without polling: every state change sends
 * `NOTIFY mcsv_conversion_changed, '<conversion id>'` in its own transaction, and each process keeps ONE dedicated
 * connection LISTENing on the channel, fanning notifications out to its in-process subscribers. The connection is
 * re-established when lost; since notifications sent meanwhile are gone, every subscriber is then told to re-read.
 */
import pg from "pg";
import { describeError } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import type { Queryable } from "./outbox.js";

export const CONVERSION_CHANGED_CHANNEL = "mcsv_conversion_changed";

/** Sends the notification; inside a transaction it is delivered at commit, and not at all on rollback. */
export async function notifyConversionChanged(db: Queryable, conversionId: string): Promise<void> {
  await db.query("select pg_notify($1, $2)", [CONVERSION_CHANGED_CHANNEL, conversionId]);
}

export class ConversionChanges {
  private client: pg.Client | undefined;
  private readonly subscribers = new Map<string, Set<() => void>>();
  private closed = false;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private failures = 0;

  constructor(
    private readonly databaseUrl: string,
    private readonly logger: Logger,
  ) {}

  /** Connects and listens; fails when Postgres cannot be reached now (start-up needs it anyway). */
  async start(): Promise<void> {
    await this.connect();
  }

  /** Whether the LISTEN connection is up (readiness). */
  get listening(): boolean {
    return this.client !== undefined;
  }

  /** Calls `onChange` whenever conversion `id` may have changed; returns the unsubscribe function. */
  subscribe(id: string, onChange: () => void): () => void {
    let set = this.subscribers.get(id);
    if (!set) this.subscribers.set(id, (set = new Set()));
    set.add(onChange);
    return () => {
      set.delete(onChange);
      if (set.size === 0 && this.subscribers.get(id) === set) this.subscribers.delete(id);
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.reconnectTimer);
    const client = this.client;
    this.client = undefined;
    await client?.end().catch(() => undefined);
  }

  private emit(id: string): void {
    for (const onChange of [...(this.subscribers.get(id) ?? [])]) onChange();
  }

  private emitAll(): void {
    for (const id of [...this.subscribers.keys()]) this.emit(id);
  }

  private async connect(): Promise<void> {
    const client = new pg.Client({ connectionString: this.databaseUrl, keepAlive: true, application_name: "user-svc-listen", connectionTimeoutMillis: 5_000 });
    client.on("notification", (message) => {
      if (message.channel === CONVERSION_CHANGED_CHANNEL && message.payload) this.emit(message.payload);
    });
    client.on("error", (error) => this.lost(client, error));
    client.on("end", () => this.lost(client, new Error("connection ended")));
    try {
      await client.connect();
      await client.query(`listen ${CONVERSION_CHANGED_CHANNEL}`);
    } catch (error) {
      await client.end().catch(() => undefined);
      throw error;
    }
    if (this.closed) {
      await client.end().catch(() => undefined);
      return;
    }
    const reconnected = this.failures > 0;
    this.client = client;
    this.failures = 0;
    if (reconnected) {
      this.logger.info("listening for conversion changes again");
      this.emitAll();
    }
  }

  private lost(client: pg.Client, error: unknown): void {
    if (this.client !== client) return;
    this.client = undefined;
    void client.end().catch(() => undefined);
    if (this.closed) return;
    this.logger.warn("lost the connection that listens for conversion changes; reconnecting", { error: describeError(error) });
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.closed) return;
    this.failures++;
    const delay = Math.min(10_000, 250 * 2 ** Math.min(this.failures - 1, 6));
    this.reconnectTimer = setTimeout(() => {
      this.connect().catch((error) => {
        this.logger.warn("reconnecting the conversion-change listener failed", { error: describeError(error), retryInMs: delay });
        this.scheduleReconnect();
      });
    }, delay);
    this.reconnectTimer.unref();
  }
}
