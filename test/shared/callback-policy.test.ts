/**
 * The callback allowlist shared by the gateway (when it accepts a callback_url) and the job service (again before it
 * POSTs): address classification, host matching, what a check returns (the addresses to connect to, resolved once),
 * and the one CALLBACK_ALLOWED_HOSTS definition both services load. Pure: no processes, an injected resolver.
 */
import { CallbackPolicy, isPublicAddress, type HostResolver } from "../../services/shared/callback-policy.js";
import { loadJobConfig } from "../../services/job/config.js";
import { loadUserConfig } from "../../services/user/config.js";
import { testAuthEnv } from "../support/credentials.js";

/** Public DNS does not exist in the sandbox: hosts resolve through this table, and every lookup is counted. */
const DNS: Record<string, string[]> = {
  "api.example.com": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"],
  "sneaky.example.com": ["93.184.216.34", "10.0.0.7"],
  "metadata.example.com": ["169.254.169.254"],
  "mapped.example.com": ["::ffff:127.0.0.1"],
  "hooks.internal.test": ["10.1.2.3"],
};
let lookups: string[] = [];
const resolver: HostResolver = async (host) => {
  lookups.push(host);
  const addresses = DNS[host];
  if (!addresses) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: "ENOTFOUND" });
  return addresses;
};
const policy = new CallbackPolicy(["*.example.com", "hooks.internal.test", "127.0.0.1"], resolver);

beforeEach(() => {
  lookups = [];
});

test("address classification", () => {
  for (const address of ["93.184.216.34", "8.8.8.8", "2606:4700::1111"]) expect(isPublicAddress(address)).toBe(true);
  for (const address of ["127.0.0.1", "10.2.3.4", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "::1", "::", "fe80::1", "fd00::1", "::ffff:10.0.0.1", "::ffff:7f00:1", "224.0.0.1", "not-an-address"]) {
    expect({ address, public: isPublicAddress(address) }).toEqual({ address, public: false });
  }
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
  expect(lookups).toEqual(["hooks.internal.test"]);
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
  const env = { ...testAuthEnv, DATABASE_URL: "postgres://localhost/mcsv", CALLBACK_ALLOWED_HOSTS: " Hooks.Example.COM, *.Clients.example.org ,10.0.0.1" };
  const expected = ["hooks.example.com", "*.clients.example.org", "10.0.0.1"];
  expect(loadUserConfig(env).CALLBACK_ALLOWED_HOSTS).toEqual(expected);
  expect(loadJobConfig(env).CALLBACK_ALLOWED_HOSTS).toEqual(expected);
  expect(loadJobConfig({ ...env, CALLBACK_ALLOWED_HOSTS: "" }).CALLBACK_ALLOWED_HOSTS).toEqual([]);
  expect(() => loadJobConfig({ ...env, CALLBACK_ALLOWED_HOSTS: "hooks.example.com,https://x/" })).toThrow(/CALLBACK_ALLOWED_HOSTS.*must be host names/);
});
