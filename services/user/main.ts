/** The user service (public gateway) as its own process. */
import { createLogger } from "../shared/logger.js";
import { runMain } from "../shared/server.js";
import { SERVICES } from "../shared/topology.js";
import { loadUserConfig } from "./config.js";
import { startUserService } from "./service.js";

const config = loadUserConfig();
const logger = createLogger(SERVICES.user.name, { level: config.LOG_LEVEL, format: config.LOG_FORMAT });
runMain(logger, () => startUserService(config, { logger }));
