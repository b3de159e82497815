/**
 * The callback_url check: the client names a URL that the job service will POST to later, so neither the gateway
 * nor the job service may become a way to reach internal hosts (SSRF). The host must match the configured
 * allowlist, and every address it resolves to must be public, unless the allowlist names that host exactly (a
 * deliberate internal receiver). The gateway checks when it accepts the URL; the job service checks again when it
 * sends, and connects only to the addresses that check returned (DNS may answer differently by then: rebinding).
 *
 * Only https outside development (plain http would let anyone on the path read and alter a callback). Only the
 * scheme's default port, unless the allowlist entry names the port (`hooks.example.com:8443`): an allowed host must
 * not become a way to reach its other services. IPv6 addresses that carry an IPv4 address (mapped, NAT64, 6to4) are
 * judged by that address; Teredo tunnels are refused.
 */
import { lookup } from "node:dns/promises";
import { BlockList, isIP } from "node:net";

/** Resolves a host name to all of its addresses (injectable: tests have no public DNS). */
export type HostResolver = (host: string) => Promise<string[]>;

export const systemResolver: HostResolver = async (host) => (await lookup(host, { all: true, verbatim: true })).map((a) => a.address);

export const MAX_CALLBACK_URL_LENGTH = 2_048;
const RESOLVE_TIMEOUT_MS = 3_000;

/** Loopback, private, link-local, CGNAT, multicast and reserved ranges (IANA special-purpose registries). */
const nonPublic = new BlockList();
for (const [net, prefix] of [
  ["0.0.0.0", 8],
  ["10.0.0.0", 8],
  ["100.64.0.0", 10],
  ["127.0.0.0", 8],
  ["169.254.0.0", 16],
  ["172.16.0.0", 12],
  ["192.0.0.0", 24],
  ["192.0.2.0", 24],
  ["192.168.0.0", 16],
  ["198.18.0.0", 15],
  ["198.51.100.0", 24],
  ["203.0.113.0", 24],
  ["224.0.0.0", 4],
  ["240.0.0.0", 4],
] as const) {
  nonPublic.addSubnet(net, prefix, "ipv4");
}
for (const [net, prefix] of [
  ["::", 128],
  ["::1", 128],
  ["64:ff9b:1::", 48],
  ["100::", 64],
  ["2001:db8::", 32],
  ["fc00::", 7],
  ["fe80::", 10],
  ["ff00::", 8],
] as const) {
  nonPublic.addSubnet(net, prefix, "ipv6");
}

export function isPublicAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 4) return !nonPublic.check(address, "ipv4");
  if (family !== 6) return false;
  const groups = ipv6Groups(address);
  if (!groups) return false;
  const embedded = embeddedIPv4(groups);
  if (embedded === "refused") return false;
  if (embedded !== undefined) return isPublicAddress(embedded);
  return !nonPublic.check(address.replace(/%.*$/, ""), "ipv6");
}

/** The eight 16-bit groups of an IPv6 address (a trailing dotted quad and a zone index allowed). */
export function ipv6Groups(address: string): number[] | undefined {
  let text = address.replace(/%.*$/, "");
  const quad = /(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (quad) {
    const [a, b, c, d] = quad.slice(1).map(Number) as [number, number, number, number];
    if ([a, b, c, d].some((n) => n > 255)) return undefined;
    text = `${text.slice(0, quad.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const parse = (part: string | undefined) => (part ? part.split(":").map((group) => (/^[0-9a-f]{1,4}$/i.test(group) ? parseInt(group, 16) : NaN)) : []);
  const head = parse(halves[0]);
  const tail = parse(halves[1]);
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return undefined;
  const groups = [...head, ...Array<number>(halves.length === 1 ? 0 : missing).fill(0), ...tail];
  return groups.every((g) => Number.isInteger(g)) ? groups : undefined;
}

const dottedQuad = (high: number, low: number) => `${high >> 8}.${high & 255}.${low >> 8}.${low & 255}`;

/**
 * The IPv4 address that an IPv6 address reaches, when it carries one: IPv4-mapped (::ffff:0:0/96), IPv4-translated
 * (::ffff:0:0:0/96), IPv4-compatible (::/96), NAT64 (64:ff9b::/96) and 6to4 (2002::/16). Teredo (2001::/32) is
 * "refused": its server and obfuscated client addresses both reach IPv4 hosts, and no receiver needs it.
 */
export function embeddedIPv4(groups: readonly number[]): string | "refused" | undefined {
  const [g0, g1, g2, g3, g4, g5, g6, g7] = groups as [number, number, number, number, number, number, number, number];
  const zeroThrough = (n: number) => groups.slice(0, n).every((g) => g === 0);
  if (zeroThrough(5) && g5 === 0xffff) return dottedQuad(g6, g7);
  if (zeroThrough(4) && g4 === 0xffff && g5 === 0) return dottedQuad(g6, g7);
  if (zeroThrough(6)) return dottedQuad(g6, g7);
  if (g0 === 0x64 && g1 === 0xff9b && g2 === 0 && g3 === 0 && g4 === 0 && g5 === 0) return dottedQuad(g6, g7);
  if (g0 === 0x2002) return dottedQuad(g1, g2);
  if (g0 === 0x2001 && g1 === 0) return "refused";
  return undefined;
}

/** Why a callback URL is refused; only `unresolvable` may pass with time (a DNS failure). */
export type CallbackRefusal = "invalid" | "not_allowed" | "unresolvable" | "non_public";

/** An accepted URL with the addresses that passed the check (connect to these, never resolve again). */
export interface AcceptedCallback {
  url: string;
  /** Lower case, without IPv6 brackets or a trailing dot. */
  host: string;
  addresses: string[];
}

export type CallbackCheck = AcceptedCallback | { problem: string; refusal: CallbackRefusal };

/** One CALLBACK_ALLOWED_HOSTS entry: a host (or `*.` suffix), with the one port it allows when it names one. */
interface AllowedHost {
  host: string;
  wildcard: boolean;
  port?: number;
}

/** `host`, `*.host`, `host:port`, `1.2.3.4:port`, `::1` or `[::1]:port`. */
export function parseAllowedHost(entry: string): AllowedHost {
  let host = entry.trim();
  let port: number | undefined;
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(host);
  const withPort = /^([^:]+):(\d+)$/.exec(host);
  if (bracketed) [host, port] = [bracketed[1]!, bracketed[2] === undefined ? undefined : Number(bracketed[2])];
  else if (withPort) [host, port] = [withPort[1]!, Number(withPort[2])];
  const wildcard = host.startsWith("*.");
  return { host: normaliseHost(wildcard ? host.slice(2) : host), wildcard, ...(port === undefined ? {} : { port }) };
}

export interface CallbackPolicyOptions {
  /** Accept plain http URLs (development); otherwise only https. */
  allowHttp?: boolean;
}

export const DEFAULT_PORTS: Record<string, number> = { "https:": 443, "http:": 80 };

export class CallbackPolicy {
  private readonly allowed: AllowedHost[];
  private readonly allowHttp: boolean;

  /** The policy of a service's configuration: http is allowed unless NODE_ENV=production or CALLBACK_ALLOW_HTTP says. */
  static fromConfig(
    config: { CALLBACK_ALLOWED_HOSTS: readonly string[]; CALLBACK_ALLOW_HTTP?: boolean | undefined; NODE_ENV?: string | undefined },
    resolve: HostResolver = systemResolver,
  ): CallbackPolicy {
    return new CallbackPolicy(config.CALLBACK_ALLOWED_HOSTS, resolve, { allowHttp: config.CALLBACK_ALLOW_HTTP ?? config.NODE_ENV !== "production" });
  }

  constructor(
    allowedHosts: readonly string[],
    private readonly resolve: HostResolver = systemResolver,
    options: CallbackPolicyOptions = {},
  ) {
    this.allowed = allowedHosts.map(parseAllowedHost);
    this.allowHttp = options.allowHttp ?? false;
  }

  /**
   * The normalised URL and the addresses to connect to when it may be called back, else what is wrong with it.
   * The host is resolved exactly once per check.
   */
  async check(raw: string): Promise<CallbackCheck> {
    if (raw.length > MAX_CALLBACK_URL_LENGTH) return { problem: `must be at most ${MAX_CALLBACK_URL_LENGTH} characters`, refusal: "invalid" };
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      return { problem: "must be an absolute http(s) URL", refusal: "invalid" };
    }
    if (url.protocol !== "https:" && url.protocol !== "http:") return { problem: "must be an https or http URL", refusal: "invalid" };
    if (url.protocol === "http:" && !this.allowHttp) return { problem: "must be an https URL (plain http is accepted in development only)", refusal: "invalid" };
    if (url.username || url.password) return { problem: "must not carry credentials", refusal: "invalid" };
    const host = normaliseHost(url.hostname);
    const entries = this.allowed.filter((entry) => (entry.wildcard ? host.endsWith(`.${entry.host}`) : host === entry.host));
    if (entries.length === 0) return { problem: `host ${host} is not allowed for callbacks`, refusal: "not_allowed" };
    const port = url.port ? Number(url.port) : DEFAULT_PORTS[url.protocol]!;
    const matching = entries.filter((entry) => (entry.port ?? DEFAULT_PORTS[url.protocol]) === port);
    if (matching.length === 0) {
      return { problem: `port ${port} is not allowed for host ${host} (only the scheme's default, unless the allowlist names ${host}:${port})`, refusal: "not_allowed" };
    }
    const named = matching.some((entry) => !entry.wildcard);
    let addresses: string[];
    try {
      addresses = isIP(host) ? [host] : await withTimeout(this.resolve(host), RESOLVE_TIMEOUT_MS);
    } catch {
      return { problem: `host ${host} cannot be resolved`, refusal: "unresolvable" };
    }
    if (addresses.length === 0) return { problem: `host ${host} cannot be resolved`, refusal: "unresolvable" };
    // An internal address is only reachable when an operator listed the host by name.
    if (!named && !addresses.every(isPublicAddress)) return { problem: `host ${host} resolves to a non-public address`, refusal: "non_public" };
    url.hash = "";
    return { url: url.toString(), host, addresses: [...addresses] };
  }
}

/** Lower case, without the brackets of an IPv6 literal and without a trailing dot. */
export function normaliseHost(host: string): string {
  return host.toLowerCase().replace(/^\[(.*)\]$/, "$1").replace(/\.$/, "");
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error("timed out")), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
