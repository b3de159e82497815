/**
 * Production fails closed (secrets.ts): every example secret shipped in this repository, and the usual guessable
 * ones, are refused with NODE_ENV=production; random ones pass; one message lists every problem.
 */
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ConfigError } from "../../services/shared/config.js";
import { secretProblem } from "../../services/shared/secrets.js";
import { loadUserConfig } from "../../services/user/config.js";
import { loadImageConfig } from "../../services/image/config.js";
import { ROOT } from "../../scripts/lib/system.js";
import { serviceAuthEnv, TEST_API_KEY, TEST_INTERNAL_TOKEN, TEST_SERVICE_TOKENS, testAuthEnv } from "../support/credentials.js";

const SECRET_NAME = /TOKEN|KEY|SECRET|PASSWORD/;

/** Every secret-looking value the repository's deployment examples carry, as `file: NAME=value`. */
function exampleSecrets(): [string, string][] {
  const found: [string, string][] = [];
  // The Kubernetes example Secret's values (KEY=VALUE lines; # comments).
  const example = readFileSync(join(ROOT, "deploy/k8s/components/example-secret/secrets.example.env"), "utf8");
  for (const line of example.split("\n")) {
    const match = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (!match || !match[2]) continue;
    const [, name, value] = match as unknown as [string, string, string];
    found.push([`secrets.example.env ${name}`, name === "DATABASE_URL" ? new URL(value).password : value.split(",")[0]!.replace(/^[a-z0-9_.-]+=/, "")]);
  }
  // Compose's `${VAR:-default}` defaults.
  const compose = readFileSync(join(ROOT, "deploy/docker-compose.yml"), "utf8");
  for (const match of compose.matchAll(/\$\{([A-Z0-9_]+):-([^}]+)\}/g)) {
    if (SECRET_NAME.test(match[1]!) && !/SHA256S?$/.test(match[1]!)) found.push([`docker-compose.yml ${match[1]}`, match[2]!.replace(/^[a-z0-9_.-]+=/, "")]);
  }
  return found;
}

test("every example secret in deploy/ is refused as a placeholder", () => {
  const examples = exampleSecrets();
  expect(examples.length).toBeGreaterThanOrEqual(8);
  for (const [where, value] of examples) expect({ where, problem: secretProblem(value) }).toEqual({ where, problem: expect.stringMatching(/placeholder|not random|guessable/) });
});

test("the tests' own credentials and hand-typed or short secrets are refused; random ones pass", () => {
  for (const value of [TEST_API_KEY, TEST_INTERNAL_TOKEN, ...Object.values(TEST_SERVICE_TOKENS), "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "qwertyuiopasdfgh", "Tr0ub4dor&3", "correcthorse"]) {
    expect({ value, problem: secretProblem(value) }).toEqual({ value, problem: expect.any(String) });
  }
  for (let i = 0; i < 200; i++) {
    const value = randomBytes(32).toString(i % 2 ? "base64url" : "hex");
    expect({ value, problem: secretProblem(value) }).toEqual({ value, problem: undefined });
  }
  expect(secretProblem(`re_${randomBytes(24).toString("base64url")}`)).toBeUndefined();
});

test("in production a service refuses to start, listing every problem at once; in development it starts", () => {
  const env = {
    ...serviceAuthEnv("user"),
    DATABASE_URL: "postgres://mcsv:mcsv-local-only@127.0.0.1:5432/mcsv",
    S3_SECRET_ACCESS_KEY: "REPLACE_ME",
  };
  expect(() => loadUserConfig(env)).not.toThrow();
  let message = "";
  try {
    loadUserConfig({ ...env, NODE_ENV: "production", MCSV_OPERATOR_TOKEN_SHA256: "" });
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    message = (error as Error).message;
  }
  expect(message.split("\n").sort()).toEqual(
    [
      "invalid configuration for user-svc:",
      "  - MCSV_OPERATOR_TOKEN_SHA256: is required in production (Prometheus and operators authenticate with it)",
      `  - MCSV_SERVICE_TOKEN: ${secretProblem(TEST_SERVICE_TOKENS.user)}`,
      `  - MCSV_API_KEYS: ${secretProblem(TEST_API_KEY)}`,
      `  - S3_SECRET_ACCESS_KEY: ${secretProblem("REPLACE_ME")}`,
      `  - DATABASE_URL (its password): ${secretProblem("mcsv-local-only")}`,
    ].sort(),
  );
  // Secrets never appear in the message.
  for (const secret of [TEST_API_KEY, TEST_SERVICE_TOKENS.user, "mcsv-local-only"]) expect(message).not.toContain(secret);

  const random = () => randomBytes(32).toString("base64url");
  const good = { ...testAuthEnv, NODE_ENV: "production", MCSV_API_KEYS: `acme=${random()}`, S3_SECRET_ACCESS_KEY: random() };
  expect(() => loadUserConfig({ ...good, MCSV_SERVICE_TOKEN: random(), DATABASE_URL: `postgres://mcsv:${random()}@db:5432/mcsv` })).not.toThrow();
  // A service that calls nobody needs no credential of its own; one that calls others does.
  expect(() => loadImageConfig(good)).not.toThrow();
  expect(() => loadUserConfig({ ...good, DATABASE_URL: "postgres://db/mcsv" })).toThrow(/MCSV_SERVICE_TOKEN: is required/);
});
