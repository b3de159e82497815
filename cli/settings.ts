/**
 * Where the CLI connects and with which credentials: flags first, then the environment, then the dev credentials
 * file that `npm start` keeps (`.data/credentials.json` under the repository, or MCSV_DATA_DIR), found without asking.
 */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { SERVICES } from "../services/shared/topology.js";
import { CliError } from "./errors.js";

export const DEFAULT_GATEWAY_URL = `http://localhost:${SERVICES.user.port}`;
export const DEFAULT_JOB_URL = `http://localhost:${SERVICES.job.port}`;

/** What `npm start` keeps in credentials.json that the CLI uses (scripts/lib/system.ts, DevCredentials). */
interface DevCredentialsFile {
  apiKey?: string;
  internalToken?: string;
}

/** The dev credentials file: MCSV_DATA_DIR's, else the nearest `.data/credentials.json` from the working directory up. */
export function findCredentialsFile(env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): string | undefined {
  if (env["MCSV_DATA_DIR"]) {
    const file = join(resolve(cwd, env["MCSV_DATA_DIR"]), "credentials.json");
    return existsSync(file) ? file : undefined;
  }
  for (let dir = resolve(cwd); ; dir = dirname(dir)) {
    const file = join(dir, ".data", "credentials.json");
    if (existsSync(file)) return file;
    if (dirname(dir) === dir) return undefined;
  }
}

function readCredentialsFile(file: string): DevCredentialsFile {
  try {
    return JSON.parse(readFileSync(file, "utf8")) as DevCredentialsFile;
  } catch (error) {
    throw new CliError(`cannot read ${file}: ${error instanceof Error ? error.message : String(error)}`);
  }
}

/** A credential from a flag, the environment or the dev file; `missing` says how to give one. */
function credential(flag: string | undefined, envName: string, field: keyof DevCredentialsFile, missing: string): string {
  const given = flag ?? process.env[envName];
  if (given) return given;
  const file = findCredentialsFile();
  const kept = file ? readCredentialsFile(file)[field] : undefined;
  if (kept) return kept;
  throw new CliError(missing);
}

export function gatewayUrl(flag: string | undefined): string {
  return checkedUrl(flag ?? process.env["MCSV_URL"] ?? DEFAULT_GATEWAY_URL, "--url");
}

export function jobUrl(flag: string | undefined): string {
  return checkedUrl(flag ?? process.env["MCSV_JOB_URL"] ?? DEFAULT_JOB_URL, "--job-url");
}

export function apiKey(flag: string | undefined): string {
  return credential(flag, "MCSV_API_KEY", "apiKey", "no API key: pass --api-key or set MCSV_API_KEY (`npm start` keeps one in .data/credentials.json)");
}

export function internalToken(flag: string | undefined): string {
  return credential(
    flag,
    "MCSV_INTERNAL_TOKEN",
    "internalToken",
    "no operator credential: pass --internal-token or set MCSV_INTERNAL_TOKEN (`npm start` keeps one in .data/credentials.json)",
  );
}

function checkedUrl(value: string, flag: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new CliError(`${flag} ${value} is not a URL; give one like ${DEFAULT_GATEWAY_URL}`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new CliError(`${flag} ${value} must be an http or https URL`);
  return value.replace(/\/+$/, "");
}
