/**
 * B3's servers, each its own process: one trivial unary RPC (ClientService.ListEvents answering an empty list),
 * served either through the full mcsv stack (`full`: runService with tracing, logging, metrics and auth
 * interceptors, /metrics and health routes; start it with `--import ./bench/lib/rpc-telemetry.ts` for the
 * OpenTelemetry SDK) or on bare connect-node (`bare`: connectNodeAdapter on node:http, no interceptors; `bare-h2`:
 * the same on node:http2's h2c server, the floor for HTTP/2), or with only some of the shared interceptors
 * (`parts tracing,logs,metrics,refusal,auth`: what each one costs, from runService's own chain). The full stack answers HTTP/1.1 and h2c on its one port;
 * every mode answers Connect, gRPC and gRPC-Web. Prints `listening <url>` once it accepts requests; SIGTERM stops it.
 */
import { createServer } from "node:http";
import { createServer as createH2cServer, type Http2Session } from "node:http2";
import type { AddressInfo } from "node:net";
import type { ConnectRouter, Interceptor } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { ClientService } from "@mcsv/sdk";
import { authPolicy, bearerCredential, hexDigestOf } from "../../services/shared/auth.js";
import { createLogger } from "../../services/shared/logger.js";
import { initMetrics } from "../../services/shared/metrics.js";
import { runService, serverInterceptors } from "../../services/shared/server.js";
import { flushSpans } from "../../services/shared/tracing.js";

const mode = process.argv[2];
const routes = (router: ConnectRouter) => router.service(ClientService, { listEvents: () => ({ events: [] }) });
/** The operator's credential (MCSV_INTERNAL_TOKEN) opens ListEvents, as on every service. */
const policy = () => authPolicy({ internal: { MCSV_OPERATOR_TOKEN_SHA256: hexDigestOf(process.env["MCSV_INTERNAL_TOKEN"] ?? ""), MCSV_SERVICE_TOKEN_SHA256S: {} } });

if (mode === "full") {
  initMetrics("bench-svc");
  const logger = createLogger("bench-svc", { level: "info", format: "json" });
  const running = await runService({ name: "bench-svc", port: 0, host: "127.0.0.1", logger, routes, auth: policy(), readiness: {} });
  process.stdout.write(`listening ${running.url}\n`);
  process.once("SIGTERM", () => void running.shutdown().then(() => flushSpans()).then(() => process.exit(0)));
} else if (mode === "bare" || mode === "parts") {
  // The shared interceptors in runService's order, those named on the command line only.
  const wanted = new Set((process.argv[3] ?? "").split(","));
  if (wanted.has("metrics")) initMetrics("bench-svc");
  // runService's own chain, named; runService authenticates before the body is read (admission.ts), so here the
  // same check runs as an interceptor.
  const auth = policy();
  const available: Array<[string, Interceptor]> = [
    ...serverInterceptors({}),
    [
      "auth",
      (next) => async (req) => {
        await auth.authenticate(bearerCredential(req.header.get("authorization")), req.service.typeName, req.method.name);
        return next(req);
      },
    ],
  ];
  const interceptors = mode === "parts" ? available.filter(([name]) => wanted.has(name)).map(([, interceptor]) => interceptor) : [];
  const handler = connectNodeAdapter({ routes, interceptors });
  const server = createServer({ keepAliveTimeout: 65_000 }, handler);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  process.stdout.write(`listening http://127.0.0.1:${(server.address() as AddressInfo).port}\n`);
  process.once("SIGTERM", () => {
    server.closeAllConnections();
    server.close(() => process.exit(0));
  });
} else if (mode === "bare-h2") {
  const server = createH2cServer(connectNodeAdapter({ routes }));
  const sessions = new Set<Http2Session>();
  server.on("session", (session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  process.stdout.write(`listening http://127.0.0.1:${(server.address() as AddressInfo).port}\n`);
  process.once("SIGTERM", () => {
    for (const session of sessions) session.destroy();
    server.close(() => process.exit(0));
  });
} else {
  process.stderr.write("usage: rpc-server.ts full|bare|bare-h2|parts <tracing,logs,metrics,refusal,auth>\n");
  process.exit(2);
}
