#!/usr/bin/env node
/**
 * Container health check: GET <path> (default /health) on the port of the service that SERVICE names; exit 0 on a 2xx
 * answer, 1 otherwise. Plain Node without dependencies, as cheap as a health check should be. The default ports are
 * those of services/shared/topology.ts (test/deploy/docker.test.ts keeps the two in step); <SERVICE>_PORT overrides.
 */
const DEFAULT_PORTS = { user: 8081, job: 8082, email: 8083, image: 8084, client: 8085 };

const service = process.env.SERVICE ?? "";
const port = process.env[`${service.toUpperCase()}_PORT`] || DEFAULT_PORTS[service];
const path = process.argv[2] ?? "/health";
if (!port) {
  console.error(`healthcheck: unknown SERVICE "${service}"`);
  process.exit(2);
}
try {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(4_000) });
  await res.body?.cancel();
  process.exit(res.ok ? 0 : 1);
} catch (error) {
  console.error(`healthcheck: ${path} on port ${port}: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
}
