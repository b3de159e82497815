/** Client service configuration: where it listens and how many recent callbacks it keeps. */
import { z } from "zod";
import { commonEnv, loadConfig, port } from "../shared/config.js";
import { SERVICES } from "../shared/topology.js";

/** Every variable the client service reads (docs/configuration.md is checked against it). */
export const clientEnvShape = {
  ...commonEnv,
  CLIENT_PORT: port(SERVICES.client.port),
  /** Recent events kept in memory; the oldest is forgotten first. A repeat is recognised within this window. */
  CLIENT_MAX_EVENTS: z.coerce.number().int().min(1).max(100_000).default(1000),
};

export function loadClientConfig(env: NodeJS.ProcessEnv = process.env) {
  return loadConfig(SERVICES.client.name, clientEnvShape, env);
}

export type ClientConfig = ReturnType<typeof loadClientConfig>;
