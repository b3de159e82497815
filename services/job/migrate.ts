/**
 * The job service's migrations alone (graphile-worker's schema, then the ledger's), then exit: what a pre-deploy job
 * runs (deploy/k8s/migrate-job.yaml) with the role that may change the schema (MIGRATION_DATABASE_URL), while the
 * job services start with MIGRATE_ON_START=false.
 */
import { commonEnv, databaseEnv, loadConfig } from "../shared/config.js";
import { createPool } from "../shared/database.js";
import { createLogger } from "../shared/logger.js";
import { runCommand } from "../shared/server.js";
import { SERVICES } from "../shared/topology.js";
import { migrateJobDatabase } from "./service.js";

const config = loadConfig(`${SERVICES.job.name} migrate`, { LOG_LEVEL: commonEnv.LOG_LEVEL, LOG_FORMAT: commonEnv.LOG_FORMAT, ...databaseEnv });
const logger = createLogger(SERVICES.job.name, { level: config.LOG_LEVEL, format: config.LOG_FORMAT });
const url = config.MIGRATION_DATABASE_URL ?? config.DATABASE_URL;
runCommand(logger, "migrations", async () => {
  const pool = createPool(url, logger, { max: 2, name: `${SERVICES.job.name}-migrate` });
  try {
    await migrateJobDatabase(pool, url, logger);
  } finally {
    await pool.end();
  }
});
