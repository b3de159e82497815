/**
 * The callback_url check: the client names a URL that the job service will POST to later, so neither the gateway
 * nor the job service may become a way to reach internal hosts (SSRF). The host must match the configured
 * allowlist, and every address it resolves to must be public, unless the allowlist names that host exactly (a
 * deliberate internal receiver). The gateway checks when it accepts the URL; the job service checks again when it
 * sends, and connects only to the addresses that check returned (DNS may answer differently by then: rebinding).
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
  // An IPv4-mapped (::ffff:a.b.c.d) or IPv4-compatible address reaches the IPv4 host.
  const mapped = /^::(ffff:)?(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return isPublicAddress(mapped[2]!);
  const mappedHex = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/i.exec(address);
  if (mappedHex) {
    const high = parseInt(mappedHex[1]!, 16);
    const low = parseInt(mappedHex[2]!, 16);
    return isPublicAddress(`${high >> 8}.${high & 255}.${low >> 8}.${low & 255}`);
  }
  return !nonPublic.check(address, "ipv6");
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

export class CallbackPolicy {
  private readonly exact: Set<string>;
  private readonly suffixes: string[];

  constructor(
    allowedHosts: readonly string[],
    private readonly resolve: HostResolver = systemResolver,
  ) {
    this.exact = new Set(allowedHosts.filter((h) => !h.startsWith("*.")).map(normaliseHost));
    this.suffixes = allowedHosts.filter((h) => h.startsWith("*.")).map((h) => `.${normaliseHost(h.slice(2))}`);
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
    if (url.username || url.password) return { problem: "must not carry credentials", refusal: "invalid" };
    const host = normaliseHost(url.hostname);
    const named = this.exact.has(host);
    if (!named && !this.suffixes.some((suffix) => host.endsWith(suffix))) {
      return { problem: `host ${host} is not allowed for callbacks`, refusal: "not_allowed" };
    }
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
