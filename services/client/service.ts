/** Wires the client service: the in-memory event log, the Connect routes and the events page. */
import { ClientService, type ClientEvent } from "@mcsv/sdk";
import { createLogger, type Logger } from "../shared/logger.js";
import { initMetrics } from "../shared/metrics.js";
import { authPolicy } from "../shared/auth.js";
import { serverSettings } from "../shared/config.js";
import { runService, type RunningService } from "../shared/server.js";
import { SERVICES } from "../shared/topology.js";
import type { ClientConfig } from "./config.js";
import { EventLog } from "./event-log.js";
import { createClientHandlers } from "./handlers.js";
import { CallbackInbox } from "./inbox.js";
import { eventPages } from "./page.js";

export interface ClientServiceOverrides {
  logger?: Logger;
  now?: () => Date;
}

export async function startClientService(config: ClientConfig, overrides: ClientServiceOverrides = {}): Promise<RunningService> {
  const name = SERVICES.client.name;
  initMetrics(name);
  const logger = overrides.logger ?? createLogger(name, { level: config.LOG_LEVEL, format: config.LOG_FORMAT });
  const inbox = new CallbackInbox(new EventLog<ClientEvent>(config.CLIENT_MAX_EVENTS), overrides.now);
  return runService({
    name,
    port: config.CLIENT_PORT,
    ...serverSettings(config),
    logger,
    routes: (router) => router.service(ClientService, createClientHandlers({ inbox, logger })),
    auth: authPolicy({ internal: config }),
    pages: eventPages(inbox, config.CLIENT_MAX_EVENTS),
    // Everything is in memory: ready as soon as it listens.
    readiness: {},
    readMaxBytes: 256 * 1024,
  });
}
