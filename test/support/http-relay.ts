/**
 * A TCP relay in front of an HTTP server that records the request line (method and path, query dropped unless asked)
 * of every HTTP/1.1 request crossing it: a test sees which requests a client made, and through which address.
 */
import { connect, createServer, type Server } from "node:net";
import { freePort } from "../../scripts/lib/embedded.js";

export interface HttpRelay {
  url: string;
  /** Request lines seen so far, in order: `PUT /bucket/key?partNumber=1&…`. */
  requests: string[];
  /** Where the relay forwards to (may be set after it started, before traffic). */
  target: number;
  close(): Promise<void>;
}

export async function startHttpRelay(target = 0): Promise<HttpRelay> {
  const port = await freePort();
  const relay: HttpRelay = { url: `http://127.0.0.1:${port}`, requests: [], target, close: async () => undefined };
  const server: Server = createServer((client) => {
    const upstream = connect(relay.target, "127.0.0.1");
    client.on("data", (chunk: Buffer) => {
      for (const match of chunk.toString("latin1").matchAll(/^(GET|PUT|POST|HEAD|DELETE) (\S+) HTTP\/1\.1\r$/gm)) relay.requests.push(`${match[1]} ${match[2]}`);
    });
    client.pipe(upstream).pipe(client);
    client.on("error", () => upstream.destroy());
    upstream.on("error", () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  relay.close = () => new Promise<void>((resolve) => server.close(() => resolve()));
  return relay;
}
