/** The SDK clients the commands use: Connect over HTTP/1.1, with the credential and the trace interceptor. */
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { JobService, UserService } from "@mcsv/sdk";
import { bearerInterceptor } from "../services/shared/auth.js";
import type { Endpoint } from "./errors.js";
import * as settings from "./settings.js";
import { traceInterceptor, type Log } from "./trace.js";

/** The options every command takes (main.ts). */
export interface GlobalOptions {
  url?: string;
  apiKey?: string;
  json?: boolean;
  verbose?: boolean;
}

/** The job service's options (jobs commands). */
export interface JobOptions {
  jobUrl?: string;
  internalToken?: string;
}

/** --verbose lines go to stderr, so that stdout stays the command's output (and --json stays parseable). */
export function verboseLog(options: GlobalOptions): Log | undefined {
  return options.verbose ? (line) => process.stderr.write(`mcsv: ${line}\n`) : undefined;
}

function transport(baseUrl: string, interceptors: Interceptor[]) {
  return createConnectTransport({ baseUrl, httpVersion: "1.1", interceptors });
}

export function gatewayEndpoint(options: GlobalOptions): Endpoint {
  return { url: settings.gatewayUrl(options.url), credentialHint: "pass --api-key or set MCSV_API_KEY" };
}

export function jobEndpoint(options: JobOptions): Endpoint {
  return { url: settings.jobUrl(options.jobUrl), credentialHint: "pass --internal-token or set MCSV_INTERNAL_TOKEN" };
}

/** UserService, the public gateway, with the tenant's API key. */
export function gatewayClient(options: GlobalOptions): Client<typeof UserService> {
  const { url } = gatewayEndpoint(options);
  return createClient(UserService, transport(url, [bearerInterceptor(settings.apiKey(options.apiKey)), traceInterceptor(verboseLog(options))]));
}

/** JobService, with the operator's credential. */
export function jobClient(options: GlobalOptions & JobOptions): Client<typeof JobService> {
  const { url } = jobEndpoint(options);
  return createClient(JobService, transport(url, [bearerInterceptor(settings.internalToken(options.internalToken)), traceInterceptor(verboseLog(options))]));
}
