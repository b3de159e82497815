/**
 * Starts the OpenTelemetry Node SDK. Each service's `telemetry.ts` calls this and is loaded with `--import` before
 * anything else, so that the pg and aws-sdk instrumentations hook those modules (ESM included) as they load.
 * The standard OTEL_* variables apply (endpoint, OTEL_EXPORTER_OTLP_PROTOCOL http/protobuf | http/json | grpc,
 * OTEL_TRACES_SAMPLER, OTEL_TRACES_EXPORTER=none). With no endpoint configured nothing is exported, but spans still
 * exist, so logs keep their trace ids and context still propagates.
 */
import { register } from "node:module";
import { AwsInstrumentation } from "@opentelemetry/instrumentation-aws-sdk";
import { PgInstrumentation } from "@opentelemetry/instrumentation-pg";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { NodeSDK } from "@opentelemetry/sdk-node";
import { NoopSpanProcessor, type SpanProcessor } from "@opentelemetry/sdk-trace-base";
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from "@opentelemetry/semantic-conventions";
import { createAddHookMessageChannel } from "import-in-the-middle";
import { SERVICE_VERSION } from "./topology.js";

export function startTelemetry(serviceName: string, env: NodeJS.ProcessEnv = process.env): NodeSDK {
  const { registerOptions, waitForAllMessagesAcknowledged } = createAddHookMessageChannel();
  register("import-in-the-middle/hook.mjs", import.meta.url, registerOptions);

  // mcsv exports metrics through prom-client and logs through stdout; OTLP carries traces only.
  env["OTEL_METRICS_EXPORTER"] ??= "none";
  env["OTEL_LOGS_EXPORTER"] ??= "none";
  const endpoint = env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] ?? env["OTEL_EXPORTER_OTLP_ENDPOINT"];
  const exporting = Boolean(endpoint) && env["OTEL_TRACES_EXPORTER"] !== "none";
  const silent: SpanProcessor[] = [new NoopSpanProcessor()];

  const sdk = new NodeSDK({
    resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: serviceName, [ATTR_SERVICE_VERSION]: SERVICE_VERSION }),
    instrumentations: [new PgInstrumentation({ requireParentSpan: true }), new AwsInstrumentation({ suppressInternalInstrumentation: true })],
    ...(exporting ? {} : { spanProcessors: silent }),
  });
  sdk.start();
  if (!exporting) {
    const why = endpoint ? "OTEL_TRACES_EXPORTER=none" : "no OTLP endpoint configured (OTEL_EXPORTER_OTLP_ENDPOINT)";
    process.stderr.write(`${JSON.stringify({ level: "info", service: serviceName, message: `tracing: ${why}, spans are not exported`, timestamp: new Date().toISOString() })}\n`);
  }
  void waitForAllMessagesAcknowledged();
  const shutdown = () => void sdk.shutdown().catch(() => undefined);
  process.once("beforeExit", shutdown);
  return sdk;
}
