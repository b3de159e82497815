import { createLogger } from "../shared/logger.js";
import { runMain } from "../shared/server.js";
import { SERVICES } from "../shared/topology.js";
import { loadJobConfig } from "./config.js";
import { startJobService } from "./service.js";

const config = loadJobConfig();
const logger = createLogger(SERVICES.job.name, { level: config.LOG_LEVEL, format: config.LOG_FORMAT });
runMain(logger, () => startJobService(config, { logger }));
