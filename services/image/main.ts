/** The image service's process: `node --conditions=mcsv-source --import tsx services/image/main.ts`. */
import { createLogger } from "../shared/logger.js";
import { runMain } from "../shared/server.js";
import { SERVICES } from "../shared/topology.js";
import { loadImageConfig } from "./config.js";
import { startImageService } from "./service.js";

const config = loadImageConfig();
const logger = createLogger(SERVICES.image.name, { level: config.LOG_LEVEL, format: config.LOG_FORMAT });
runMain(logger, () => startImageService(config, { logger }));
