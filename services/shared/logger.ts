/**
 * winston JSON logs on stdout: timestamp, level, service, message, trace_id and span_id of the active span, and the
 * fields of the current request or job. On a TTY in development the same lines are printed readably.
 * Secrets and raw bytes never reach the output.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { trace } from "@opentelemetry/api";
import winston from "winston";

export type Logger = winston.Logger;
export type LogFields = Record<string, unknown>;

const fieldsStore = new AsyncLocalStorage<LogFields>();

/** Runs `fn` with `fields` added to every log line written inside it (nested calls add to the outer fields). */
export function withLogFields<T>(fields: LogFields, fn: () => T): T {
  return fieldsStore.run({ ...fieldsStore.getStore(), ...fields }, fn);
}

const SECRET_KEY = /authorization|password|secret|token|api[-_]?key|cookie/i;

/** Replaces secrets with a marker and binary data with its length, at any depth. */
export function redact(value: unknown, depth = 0): unknown {
  if (value instanceof Uint8Array) return `<${value.byteLength} bytes>`;
  if (value instanceof Error || value === null || typeof value !== "object" || depth > 6) return value;
  if (Array.isArray(value)) return value.map((v) => redact(v, depth + 1));
  return Object.fromEntries(
    Object.entries(value).map(([key, v]) => [key, SECRET_KEY.test(key) ? "[redacted]" : redact(v, depth + 1)]),
  );
}

const context = winston.format((info) => {
  const span = trace.getActiveSpan()?.spanContext();
  Object.assign(info, redact({ ...fieldsStore.getStore(), ...info }));
  if (span && span.traceId !== "00000000000000000000000000000000") {
    info["trace_id"] = span.traceId;
    info["span_id"] = span.spanId;
  }
  return info;
});

export function createLogger(service: string, options: { level?: string; format?: "json" | "pretty" | "auto" } = {}): Logger {
  const pretty = options.format === "pretty" || (options.format !== "json" && process.stdout.isTTY === true && process.env["NODE_ENV"] !== "production");
  const { combine, timestamp, errors, json, colorize, printf } = winston.format;
  const base = combine(errors({ stack: true }), timestamp(), context());
  const format = pretty
    ? combine(
        base,
        colorize(),
        printf(({ timestamp: at, level, message, service: svc, stack, trace_id: traceId, ...rest }) => {
          const extra = Object.keys(rest).length > 0 ? ` ${JSON.stringify(rest)}` : "";
          const traced = traceId ? ` trace=${String(traceId).slice(0, 8)}` : "";
          return `${String(at)} ${String(svc)} ${level}: ${String(message)}${traced}${extra}${stack ? `\n${String(stack)}` : ""}`;
        }),
      )
    : combine(base, json());
  return winston.createLogger({
    level: options.level ?? "info",
    defaultMeta: { service },
    format,
    transports: [new winston.transports.Console()],
  });
}
