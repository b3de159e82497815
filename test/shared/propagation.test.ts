/**
 * The Connect tracing interceptors carry W3C trace context and baggage in the request headers, for unary calls and
 * server streams: a real mcsv server (runService) and a real service client, in process, with the W3C propagators
 * the SDK registers by default.
 */
import { context, propagation, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { CompositePropagator, W3CBaggagePropagator, W3CTraceContextPropagator } from "@opentelemetry/core";
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { create } from "@bufbuild/protobuf";
import { ClientService, ConversionSchema, UserService } from "@mcsv/sdk";
import { createServiceClient } from "../../services/shared/service-clients.js";
import { createLogger } from "../../services/shared/logger.js";
import { runService, type RunningService } from "../../services/shared/server.js";
import { operatorPolicy, TEST_INTERNAL_TOKEN } from "../support/credentials.js";

const exporter = new InMemorySpanExporter();
let server: RunningService;
/** What the handler saw of the caller's context, per call. */
const seen: { baggage?: string | undefined; traceId?: string | undefined }[] = [];

function observe(): void {
  const active = trace.getActiveSpan();
  seen.push({
    baggage: propagation.getBaggage(context.active())?.getEntry("tenant")?.value,
    traceId: active?.spanContext().traceId,
  });
}

beforeAll(async () => {
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new CompositePropagator({ propagators: [new W3CTraceContextPropagator(), new W3CBaggagePropagator()] }));
  trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }));
  server = await runService({
    name: "propagation-test",
    port: 0,
    host: "127.0.0.1",
    logger: createLogger("propagation-test", { level: "error", format: "json" }),
    auth: operatorPolicy,
    routes: (router) => {
      router.service(ClientService, { notifyEmailSent: () => (observe(), { recorded: true }) });
      router.service(UserService, {
        async *watchConversion() {
          observe();
          yield { conversion: create(ConversionSchema, { id: "c1" }) };
        },
      });
    },
  });
});

afterAll(async () => {
  await server?.shutdown("test over");
  propagation.disable();
  trace.disable();
  context.disable();
});

test("trace context and baggage reach the server, for a unary call and a server stream", async () => {
  const client = createServiceClient(ClientService, server.url, { credential: TEST_INTERNAL_TOKEN });
  const users = createServiceClient(UserService, server.url, { credential: TEST_INTERNAL_TOKEN });
  const tracer = trace.getTracer("test");
  const withBaggage = propagation.setBaggage(context.active(), propagation.createBaggage({ tenant: { value: "acme" } }));
  const rootTraceId = await context.with(withBaggage, () =>
    tracer.startActiveSpan("caller", async (root) => {
      await client.notifyEmailSent({});
      for await (const update of users.watchConversion({ conversionId: "c1" })) expect(update.conversion?.id).toBe("c1");
      root.end();
      return root.spanContext().traceId;
    }),
  );
  expect(seen).toEqual([
    { baggage: "acme", traceId: rootTraceId },
    { baggage: "acme", traceId: rootTraceId },
  ]);
  const spans = exporter.getFinishedSpans();
  const serverSpans = spans.filter((s) => s.kind === 1).map((s) => s.name).sort();
  expect(serverSpans).toEqual(["mcsv.v1.ClientService/NotifyEmailSent", "mcsv.v1.UserService/WatchConversion"]);
  for (const span of spans.filter((s) => s.kind === 1)) {
    const clientSpan = spans.find((s) => s.kind === 2 && s.spanContext().spanId === span.parentSpanContext?.spanId);
    expect(clientSpan?.name).toBe(span.name);
  }
});
