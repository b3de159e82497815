/** The image service as its own process (with --import ./services/image/telemetry.ts for tracing). */
import { createLogger } from "../shared/logger.js";
import { runMain } from "../shared/server.js";
import { SERVICES } from "../shared/topology.js";
import { loadImageConfig } from "./config.js";
import { startImageService } from "./service.js";

const config = loadImageConfig();
const logger = createLogger(SERVICES.image.name, { level: config.LOG_LEVEL, format: config.LOG_FORMAT });
runMain(logger, () => startImageService(config, { logger }));
