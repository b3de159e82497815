/** The email service as its own process. */
import { createLogger } from "../shared/logger.js";
import { runMain } from "../shared/server.js";
import { SERVICES } from "../shared/topology.js";
import { loadEmailConfig } from "./config.js";
import { startEmailService } from "./service.js";

const config = loadEmailConfig();
const logger = createLogger(SERVICES.email.name, { level: config.LOG_LEVEL, format: config.LOG_FORMAT });
runMain(logger, () => startEmailService(config, { logger }));
