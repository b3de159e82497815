/**
 * Production fails closed: a service with NODE_ENV=production refuses to start on a secret that is missing, a
 * placeholder (REPLACE_ME, or any example value shipped in this repository) or guessable. The check cannot prove a
 * secret random; it refuses what is visibly not, so that a forgotten replacement stops the rollout instead of
 * running with a credential everyone can read.
 */
import { INTERNAL_CALLS } from "./auth.js";
import type { ServiceKey } from "./topology.js";

/** Words that mark an example value, in any case: every example in deploy/, the README and the tests uses one. */
const PLACEHOLDER_MARKERS = ["replace_me", "replace-me", "replaceme", "change-me", "change_me", "changeme", "local-only", "placeholder", "example", "dummy", "insecure", "password", "secret", "test-", "test_", "-test", "xxxxxx"];

/** Fewer estimated bits than this is guessable: 96 bits is 16 random base64 characters. */
const MIN_BITS = 96;

/** Shannon entropy of the value's own characters, times its length: a generous estimate of a random secret's bits. */
export function estimatedBits(value: string): number {
  const counts = new Map<string, number>();
  for (const char of value) counts.set(char, (counts.get(char) ?? 0) + 1);
  const length = [...value].length;
  let perChar = 0;
  for (const count of counts.values()) perChar -= (count / length) * Math.log2(count / length);
  return perChar * length;
}

/** A run of `n` characters each one code point above the last (01234567…), as typed by hand; 8 is long enough that a random hex secret has one about once in a billion. */
function hasSequence(value: string, n = 8): boolean {
  let run = 1;
  for (let i = 1; i < value.length; i++) {
    run = value.charCodeAt(i) === value.charCodeAt(i - 1) + 1 ? run + 1 : 1;
    if (run >= n) return true;
  }
  return false;
}

/** What is wrong with `value` as a production secret, or undefined when nothing visibly is. */
export function secretProblem(value: string): string | undefined {
  const lower = value.toLowerCase();
  const marker = PLACEHOLDER_MARKERS.find((m) => lower.includes(m));
  if (marker) return `is a placeholder (contains "${marker}"): generate a random value`;
  if (hasSequence(value)) return "is not random (it has a typed sequence such as 01234567): generate a random value";
  if (estimatedBits(value) < MIN_BITS) return `is guessable (about ${Math.floor(estimatedBits(value))} bits; at least ${MIN_BITS} needed): use e.g. 32 random bytes in base64`;
  return undefined;
}

function passwordOf(url: string): string | undefined {
  try {
    return decodeURIComponent(new URL(url).password) || undefined;
  } catch {
    return undefined;
  }
}

/**
 * Every production problem of a service's environment (`env`: the variables that are set), for the variables its
 * shape reads. `service` is undefined for a command that is not one of the five services.
 */
export function productionProblems(service: ServiceKey | undefined, env: Record<string, string | undefined>, variables: readonly string[]): string[] {
  const problems: string[] = [];
  const reads = new Set(variables);
  const check = (name: string, value: string | undefined) => {
    const problem = value === undefined ? undefined : secretProblem(value);
    if (problem) problems.push(`${name}: ${problem}`);
  };
  if (reads.has("MCSV_OPERATOR_TOKEN_SHA256") && !env["MCSV_OPERATOR_TOKEN_SHA256"]) {
    problems.push("MCSV_OPERATOR_TOKEN_SHA256: is required in production (Prometheus and operators authenticate with it)");
  }
  if (reads.has("MCSV_SERVICE_TOKEN")) {
    const calls = service !== undefined && Object.keys(INTERNAL_CALLS[service]).length > 0;
    if (calls && !env["MCSV_SERVICE_TOKEN"]) problems.push("MCSV_SERVICE_TOKEN: is required in production (this service calls others)");
    check("MCSV_SERVICE_TOKEN", env["MCSV_SERVICE_TOKEN"]);
  }
  if (reads.has("MCSV_API_KEYS")) {
    for (const entry of (env["MCSV_API_KEYS"] ?? "").split(",").filter((e) => e.trim())) {
      check("MCSV_API_KEYS", entry.slice(entry.indexOf("=") + 1).trim());
    }
  }
  for (const name of ["RESEND_API_KEY", "S3_SECRET_ACCESS_KEY"]) if (reads.has(name)) check(name, env[name]);
  if (reads.has("DATABASE_URL") && env["DATABASE_URL"]) check("DATABASE_URL (its password)", passwordOf(env["DATABASE_URL"]));
  return problems;
}
