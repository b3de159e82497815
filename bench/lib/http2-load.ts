/**
 * runLoad (http-load.ts) over HTTP/2 with prior knowledge (h2c), as connect-node's HTTP/2 transport calls: the
 * `concurrency` loops share `sessions` sessions (default 1, as createServiceClient's one session per peer), each
 * loop sending one request at a time on its own stream. Same options and result as runLoad.
 */
import { connect, constants, type ClientHttp2Session, type IncomingHttpHeaders, type OutgoingHttpHeaders } from "node:http2";
import { answerError, closedLoop, type LoadOptions, type LoadResult, type RpcProtocol } from "./http-load.js";

export interface H2LoadOptions extends LoadOptions {
  /** h2c sessions the loops share (loop i uses session i mod sessions); default 1. */
  sessions?: number;
}

function openSession(origin: string): Promise<ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const session = connect(origin);
    session.once("connect", () => {
      session.off("error", reject);
      // A session error after connecting fails the streams in flight; they count as errors.
      session.on("error", () => undefined);
      resolve(session);
    });
    session.once("error", reject);
  });
}

function post(session: ClientHttp2Session, headers: OutgoingHttpHeaders, body: Uint8Array, protocol: RpcProtocol): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const stream = session.request(headers);
    let responseHeaders: IncomingHttpHeaders | undefined;
    let trailers: IncomingHttpHeaders | undefined;
    const chunks: Buffer[] | undefined = protocol === "grpc-web" ? [] : undefined;
    stream.on("response", (h) => (responseHeaders = h));
    stream.on("trailers", (t) => (trailers = t));
    stream.on("data", (chunk: Buffer) => chunks?.push(chunk));
    stream.on("error", reject);
    // 'close' comes after the trailers and the end of the body.
    stream.on("close", () => {
      if (stream.rstCode !== undefined && stream.rstCode !== constants.NGHTTP2_NO_ERROR) return reject(new Error(`stream reset (${stream.rstCode})`));
      if (!responseHeaders) return reject(new Error("no response headers"));
      resolve(answerError(protocol, Number(responseHeaders[":status"] ?? 0), responseHeaders, trailers, chunks && Buffer.concat(chunks)));
    });
    stream.end(body);
  });
}

export async function runLoadH2(options: H2LoadOptions): Promise<LoadResult> {
  const url = new URL(options.url);
  const protocol = options.protocol ?? "connect";
  const sessions = await Promise.all(Array.from({ length: Math.max(1, options.sessions ?? 1) }, () => openSession(url.origin)));
  const headers: OutgoingHttpHeaders = {
    ...options.headers,
    ":method": "POST",
    ":path": `${url.pathname}${url.search}`,
    "content-length": String(options.body.byteLength),
  };
  try {
    return await closedLoop(options, (loop) => post(sessions[loop % sessions.length]!, headers, options.body, protocol));
  } finally {
    for (const session of sessions) session.destroy();
  }
}
