/**
 * One port for both HTTP versions. Connect and gRPC-Web work over HTTP/1.1, but gRPC, bidirectional streams and
 * server reflection (which `buf curl` and grpcurl use by default) need HTTP/2. Without TLS there is no ALPN to
 * choose, so each new connection is sniffed: a client speaking HTTP/2 with prior knowledge (h2c) opens with the
 * connection preface `PRI * HTTP/2.0`, which no HTTP/1.1 request can start with. With a certificate, ALPN chooses
 * `h2` or `http/1.1` and node's HTTP/2 server answers both.
 */
import { createServer as createHttp1Server, type IncomingMessage, type Server as Http1Server, type ServerResponse } from "node:http";
import {
  createSecureServer,
  createServer as createHttp2Server,
  type Http2Server,
  type Http2ServerRequest,
  type Http2ServerResponse,
  type Http2Session,
  type Http2SecureServer,
} from "node:http2";
import { createServer as createNetServer, type Server as NetServer, type Socket } from "node:net";
import { Duplex } from "node:stream";

export type AnyRequest = IncomingMessage | Http2ServerRequest;
export type AnyResponse = ServerResponse | Http2ServerResponse;
export type RequestHandler = (req: AnyRequest, res: AnyResponse) => void;

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");
/** Enough of the first bytes to tell `PRI ` from every HTTP/1.1 method. */
const SNIFF_BYTES = 4;

export interface TlsFiles {
  cert: string | Buffer;
  key: string | Buffer;
}

export interface Listener {
  /** What listens on the port. */
  server: NetServer | Http2SecureServer;
  /** Open connections (HTTP/1.1 sockets and HTTP/2 sessions). */
  readonly connections: number;
  /** Stops accepting connections; those open stay. */
  stopAccepting(): void;
  /** Tells HTTP/2 clients to open no new streams here (GOAWAY); a session ends once its streams have. */
  goAway(): void;
  /** Closes HTTP/1.1 connections that are between requests, and sends GOAWAY on HTTP/2 sessions. */
  closeIdle(): void;
  /** Closes everything at once. */
  closeAll(): void;
}

export interface ListenerOptions {
  keepAliveTimeout: number;
  tls?: TlsFiles | undefined;
  /** A connection that sends nothing this long after opening is closed. */
  sniffTimeoutMs?: number;
  onClientError?: (error: Error) => void;
}

/** Whether the first bytes a client sent are the HTTP/2 preface (as far as they go). */
export function isHttp2Preface(first: Buffer): boolean {
  const n = Math.min(first.length, PREFACE.length);
  return first.subarray(0, n).equals(PREFACE.subarray(0, n));
}

/**
 * The socket as a stream that first replays the bytes already read from it. node's HTTP/1.1 server reads bytes
 * given back with unshift(), but its HTTP/2 session (in Node 20) reads the socket's handle directly and would miss
 * them; given a stream without a handle, it reads through the stream instead.
 */
function replaying(socket: Socket, head: Buffer): Duplex {
  const stream = new Duplex({
    read: () => void socket.resume(),
    write: (chunk: Buffer, _encoding, done) => void socket.write(chunk, done),
    final: (done) => void socket.end(done),
    destroy: (error, done) => {
      socket.destroy(error ?? undefined);
      done(error);
    },
  });
  // What the HTTP/2 session reports as the peer.
  for (const key of ["remoteAddress", "remotePort", "remoteFamily", "localAddress", "localPort"] as const) {
    Object.defineProperty(stream, key, { get: () => socket[key] });
  }
  stream.push(head);
  socket.on("data", (chunk: Buffer) => {
    if (!stream.push(chunk)) socket.pause();
  });
  socket.once("end", () => stream.push(null));
  socket.once("close", () => stream.destroy());
  return stream;
}

export function createListener(handler: RequestHandler, options: ListenerOptions): Listener {
  const sessions = new Set<Http2Session>();
  const trackSessions = (h2: Http2Server | Http2SecureServer) =>
    h2.on("session", (session: Http2Session) => {
      sessions.add(session);
      session.once("close", () => sessions.delete(session));
    });

  if (options.tls) {
    const secure = createSecureServer({ cert: options.tls.cert, key: options.tls.key, allowHTTP1: true }, handler);
    trackSessions(secure);
    const sockets = new Set<Socket>();
    secure.on("secureConnection", (socket: Socket) => {
      sockets.add(socket);
      socket.once("close", () => sockets.delete(socket));
    });
    return {
      server: secure,
      get connections() {
        return sockets.size;
      },
      stopAccepting: () => secure.close(),
      goAway: () => {
        for (const session of sessions) session.close();
      },
      closeIdle: () => {
        for (const session of sessions) session.close();
      },
      closeAll: () => {
        for (const session of sessions) session.destroy();
        for (const socket of sockets) socket.destroy();
      },
    };
  }

  const http1: Http1Server = createHttp1Server({ keepAliveTimeout: options.keepAliveTimeout }, handler as (req: IncomingMessage, res: ServerResponse) => void);
  const http2 = createHttp2Server(handler as (req: Http2ServerRequest, res: Http2ServerResponse) => void);
  trackSessions(http2);
  const sockets = new Set<Socket>();
  http1.on("clientError", (error: Error, socket: Socket) => {
    options.onClientError?.(error);
    if (socket.writable) socket.end("HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n");
  });

  // node's HTTP servers turn Nagle's algorithm off on the connections they accept themselves, not on those handed to
  // them: without this, small answers wait for the peer's delayed acknowledgement (about 40 ms each).
  const server = createNetServer({ noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    socket.setTimeout(options.sniffTimeoutMs ?? 30_000, () => socket.destroy());
    let first = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      first = Buffer.concat([first, chunk]);
      if (first.length < SNIFF_BYTES) return;
      socket.off("data", onData);
      socket.pause();
      socket.setTimeout(0);
      if (isHttp2Preface(first)) return void http2.emit("connection", replaying(socket, first));
      // Given back, so that the HTTP/1.1 server reads the connection from its first byte.
      socket.unshift(first);
      http1.emit("connection", socket);
      socket.resume();
    };
    socket.on("data", onData);
    socket.on("error", () => socket.destroy());
  });

  return {
    server,
    get connections() {
      return sockets.size;
    },
    stopAccepting: () => server.close(),
    goAway: () => {
      for (const session of sessions) session.close();
    },
    closeIdle: () => {
      http1.closeIdleConnections();
      for (const session of sessions) session.close();
    },
    closeAll: () => {
      http1.closeAllConnections();
      for (const session of sessions) session.destroy();
      for (const socket of sockets) socket.destroy();
    },
  };
}
