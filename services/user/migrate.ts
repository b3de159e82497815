/**
 * The gateway's migrations alone, then exit: what a pre-deploy job runs (deploy/k8s/migrate-job.yaml) with the role
 * that may change the schema (MIGRATION_DATABASE_URL), while the gateways start with MIGRATE_ON_START=false.
 */
import { commonEnv, databaseEnv, loadConfig } from "../shared/config.js";
import { createLogger } from "../shared/logger.js";
import { runCommand } from "../shared/server.js";
import { SERVICES } from "../shared/topology.js";
import { migrateUserDatabase } from "./service.js";

const config = loadConfig(`${SERVICES.user.name} migrate`, { LOG_LEVEL: commonEnv.LOG_LEVEL, LOG_FORMAT: commonEnv.LOG_FORMAT, ...databaseEnv });
const logger = createLogger(SERVICES.user.name, { level: config.LOG_LEVEL, format: config.LOG_FORMAT });
runCommand(logger, "migrations", () => migrateUserDatabase(config.MIGRATION_DATABASE_URL ?? config.DATABASE_URL, logger));
