/**
 * The callback allowlist shared by the gateway (when it accepts a callback_url) and the job service (again before it
 * POSTs): address classification (IPv4 inside IPv6: mapped, NAT64, 6to4; Teredo refused), host and port matching,
 * https outside development, what a check returns (the addresses to connect to, resolved once), and the one
 * CALLBACK_ALLOWED_HOSTS definition both services load. Pure: no processes, an injected resolver.
 */
import { CallbackPolicy, embeddedIPv4, ipv6Groups, isPublicAddress, type HostResolver } from "../../services/shared/callback-policy.js";
import { loadJobConfig } from "../../services/job/config.js";
import { loadUserConfig } from "../../services/user/config.js";
import { serviceAuthEnv } from "../support/credentials.js";

/** Public DNS does not exist in the sandbox: hosts resolve through this table, and every lookup is counted. */
const DNS: Record<string, string[]> = {
  "api.example.com": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"],
  "sneaky.example.com": ["93.184.216.34", "10.0.0.7"],
  "metadata.example.com": ["169.254.169.254"],
  "mapped.example.com": ["::ffff:127.0.0.1"],
  "hooks.internal.test": ["10.1.2.3"],
  "nat64.example.com": ["64:ff9b::a9fe:a9fe"],
  "sixtofour.example.com": ["2002:7f00:1::1"],
  "teredo.example.com": ["2001:0:4136:e378:8000:63bf:3fff:fdd2"],
  "nat64-public.example.com": ["64:ff9b::5db8:d822"],
  "hooks.example.net": ["93.184.216.35"],
};
let lookups: string[] = [];
const resolver: HostResolver = async (host) => {
  lookups.push(host);
  const addresses = DNS[host];
  if (!addresses) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: "ENOTFOUND" });
  return addresses;
};
const policy = new CallbackPolicy(["*.example.com", "hooks.internal.test", "127.0.0.1:9", "hooks.example.net:8443"], resolver, { allowHttp: true });

beforeEach(() => {
  lookups = [];
});

test("address classification", () => {
  for (const address of ["93.184.216.34", "8.8.8.8", "2606:4700::1111"]) expect(isPublicAddress(address)).toBe(true);
  for (const address of ["127.0.0.1", "10.2.3.4", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "::1", "::", "fe80::1", "fd00::1", "::ffff:10.0.0.1", "::ffff:7f00:1", "224.0.0.1", "not-an-address"]) {
    expect({ address, public: isPublicAddress(address) }).toEqual({ address, public: false });
  }
});

test("an IPv6 address that carries an IPv4 address is judged by it, however it is written; Teredo is refused", () => {
  const judged: Record<string, boolean> = {
    // NAT64 (64:ff9b::/96): the embedded IPv4 address is the one reached.
    "64:ff9b::127.0.0.1": false,
    "64:ff9b::7f00:1": false,
    "64:ff9b:0:0:0:0:a9fe:a9fe": false, // 169.254.169.254
    "64:ff9b::a00:7": false, // 10.0.0.7
    "64:ff9b::5db8:d822": true, // 93.184.216.34
    "64:ff9b:1::5db8:d822": false, // local-use NAT64: the IPv4 address may sit anywhere
    // 6to4 (2002::/16): bits 16 to 48.
    "2002:7f00:1::1": false,
    "2002:c0a8:101::": false, // 192.168.1.1
    "2002:a9fe:a9fe:1:2:3:4:5": false,
    "2002:5db8:d822::1": true,
    // Teredo (2001::/32): refused whatever it carries.
    "2001:0:4136:e378:8000:63bf:3fff:fdd2": false,
    "2001::5db8:d822": false,
    // IPv4-mapped, -translated and -compatible forms in hex.
    "::ffff:7f00:1": false,
    "0:0:0:0:0:ffff:a9fe:a9fe": false,
    "::ffff:0:7f00:1": false,
    "::7f00:1": false,
    "::ffff:5db8:d822": true,
    // Not to be confused: other 2001: prefixes are ordinary global addresses.
    "2001:4860:4860::8888": true,
    "fe80::1%eth0": false,
  };
  expect(Object.fromEntries(Object.keys(judged).map((address) => [address, isPublicAddress(address)]))).toEqual(judged);
  expect(ipv6Groups("64:ff9b::1.2.3.4")).toEqual([0x64, 0xff9b, 0, 0, 0, 0, 0x102, 0x304]);
  expect(embeddedIPv4(ipv6Groups("2002:5db8:d822::1")!)).toBe("93.184.216.34");
  expect(embeddedIPv4(ipv6Groups("2001:0:4136:e378:8000:63bf:3fff:fdd2")!)).toBe("refused");
  expect(embeddedIPv4(ipv6Groups("2606:4700::1111")!)).toBeUndefined();
});

test("an accepted URL comes with the addresses it was checked against, from exactly one lookup", async () => {
  expect(await policy.check("https://API.Example.com./hooks/mcsv?token=x#frag")).toEqual({
    url: "https://api.example.com./hooks/mcsv?token=x",
    host: "api.example.com",
    addresses: ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"],
  });
  expect(lookups).toEqual(["api.example.com"]);
});

test("a host named exactly may resolve to an internal address; an IP literal is not looked up", async () => {
  expect(await policy.check("https://hooks.internal.test/cb")).toMatchObject({ host: "hooks.internal.test", addresses: ["10.1.2.3"] });
  expect(await policy.check("http://127.0.0.1:9/cb")).toMatchObject({ host: "127.0.0.1", addresses: ["127.0.0.1"] });
  expect(await policy.check("https://nat64-public.example.com/cb")).toMatchObject({ addresses: ["64:ff9b::5db8:d822"] });
  expect(lookups).toEqual(["hooks.internal.test", "nat64-public.example.com"]);
});

test("ports: the scheme's default only, unless the allowlist entry names the port", async () => {
  expect(await policy.check("https://api.example.com:443/cb")).toMatchObject({ url: "https://api.example.com/cb" });
  expect(await policy.check("http://api.example.com:80/cb")).toMatchObject({ url: "http://api.example.com/cb" });
  expect(await policy.check("https://hooks.example.net:8443/cb")).toMatchObject({ host: "hooks.example.net" });
  const refusals = {
    "https://api.example.com:8443/cb": "port 8443 is not allowed for host api.example.com",
    "http://api.example.com:443/cb": "port 443 is not allowed", // https's port under http
    "https://hooks.internal.test:22/": "port 22 is not allowed",
    "https://hooks.example.net/cb": "port 443 is not allowed", // the entry names 8443 only
    "http://127.0.0.1/cb": "port 80 is not allowed",
    "http://127.0.0.1:8085/events": "port 8085 is not allowed",
  };
  for (const [url, why] of Object.entries(refusals)) expect({ url, checked: await policy.check(url) }).toEqual({ url, checked: { refusal: "not_allowed", problem: expect.stringContaining(why) } });
});

test("https only unless http is allowed (development); the configured policy refuses http with NODE_ENV=production", async () => {
  const strict = new CallbackPolicy(["*.example.com"], resolver);
  expect(await strict.check("http://api.example.com/cb")).toEqual({ refusal: "invalid", problem: expect.stringContaining("must be an https URL") });
  expect(await strict.check("https://api.example.com/cb")).toMatchObject({ host: "api.example.com" });
  const env = { ...serviceAuthEnv("job"), DATABASE_URL: "postgres://localhost/mcsv", CALLBACK_ALLOWED_HOSTS: "*.example.com" };
  const http = "http://api.example.com/cb";
  const configured = (extra: Record<string, string>) => CallbackPolicy.fromConfig(loadJobConfig({ ...env, ...extra }), resolver).check(http);
  expect(await configured({})).toMatchObject({ host: "api.example.com" });
  expect(await configured({ NODE_ENV: "test" })).toMatchObject({ host: "api.example.com" });
  expect(await configured({ CALLBACK_ALLOW_HTTP: "false" })).toMatchObject({ refusal: "invalid" });
  expect(await CallbackPolicy.fromConfig({ CALLBACK_ALLOWED_HOSTS: ["*.example.com"], NODE_ENV: "production" }, resolver).check(http)).toMatchObject({ refusal: "invalid" });
  expect(await CallbackPolicy.fromConfig({ CALLBACK_ALLOWED_HOSTS: ["*.example.com"], NODE_ENV: "production", CALLBACK_ALLOW_HTTP: true }, resolver).check(http)).toMatchObject({ host: "api.example.com" });
});

test.each([
  ["https://evil.com/cb", "not_allowed", "not allowed"],
  ["https://example.com/cb", "not_allowed", "not allowed"], // the wildcard names subdomains only
  ["https://example.com.evil.com/cb", "not_allowed", "not allowed"],
  ["http://169.254.169.254/latest/meta-data", "not_allowed", "not allowed"],
  ["http://[::1]/cb", "not_allowed", "not allowed"],
  ["https://sneaky.example.com/cb", "non_public", "non-public"], // one public and one private address
  ["https://metadata.example.com/latest", "non_public", "non-public"],
  ["https://mapped.example.com/", "non_public", "non-public"],
  ["https://nat64.example.com/", "non_public", "non-public"], // 64:ff9b::169.254.169.254
  ["https://sixtofour.example.com/", "non_public", "non-public"], // 6to4 of 127.0.0.1
  ["https://teredo.example.com/", "non_public", "non-public"],
  ["https://[64:ff9b::7f00:1]/", "not_allowed", "not allowed"],
  ["https://nowhere.example.com/", "unresolvable", "cannot be resolved"],
  ["ftp://api.example.com/cb", "invalid", "https or http"],
  ["https://user:secret@api.example.com/cb", "invalid", "credentials"],
  ["/relative/path", "invalid", "absolute"],
])("refuses %s (%s)", async (url, refusal, why) => {
  const checked = await policy.check(url);
  expect(checked).toEqual({ refusal, problem: expect.stringContaining(why) });
});

test("refuses a URL longer than 2048 characters", async () => {
  expect(await policy.check(`https://api.example.com/${"a".repeat(2_048)}`)).toEqual({ refusal: "invalid", problem: "must be at most 2048 characters" });
  expect(lookups).toEqual([]);
});

test("CALLBACK_ALLOWED_HOSTS is one definition, lower-cased, that the gateway and the job service both load", () => {
  const env = { ...serviceAuthEnv("job"), DATABASE_URL: "postgres://localhost/mcsv", CALLBACK_ALLOWED_HOSTS: " Hooks.Example.COM, *.Clients.example.org ,10.0.0.1, hooks.example.com:8443, [::1]:9443, fd00::1, 10.0.0.2:80" };
  const expected = ["hooks.example.com", "*.clients.example.org", "10.0.0.1", "hooks.example.com:8443", "[::1]:9443", "fd00::1", "10.0.0.2:80"];
  expect(loadUserConfig(env).CALLBACK_ALLOWED_HOSTS).toEqual(expected);
  expect(loadJobConfig(env).CALLBACK_ALLOWED_HOSTS).toEqual(expected);
  expect(loadJobConfig({ ...env, CALLBACK_ALLOWED_HOSTS: "" }).CALLBACK_ALLOWED_HOSTS).toEqual([]);
  expect(() => loadJobConfig({ ...env, CALLBACK_ALLOWED_HOSTS: "hooks.example.com,https://x/" })).toThrow(/CALLBACK_ALLOWED_HOSTS.*must be host names/);
  for (const bad of ["hooks.example.com:", "hooks.example.com:0", "hooks.example.com:70000", "::1:8443x", "hooks.example.com:8443:1"]) {
    expect(() => loadJobConfig({ ...env, CALLBACK_ALLOWED_HOSTS: bad })).toThrow(/CALLBACK_ALLOWED_HOSTS/);
  }
});
