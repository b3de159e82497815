/** The client service (workflow callbacks) as its own process. */
import { createLogger } from "../shared/logger.js";
import { runMain } from "../shared/server.js";
import { SERVICES } from "../shared/topology.js";
import { loadClientConfig } from "./config.js";
import { startClientService } from "./service.js";

const config = loadClientConfig();
const logger = createLogger(SERVICES.client.name, { level: config.LOG_LEVEL, format: config.LOG_FORMAT });
runMain(logger, () => startClientService(config, { logger }));
