/**
 * `npm run keys -- create <tenant> | list [tenant] | revoke <prefix>`: the gateway's API keys kept in Postgres
 * (DATABASE_URL), beside MCSV_API_KEYS. Applies the user service's migrations first, as the service does when it
 * starts. `create` prints the key once, alone on stdout (only its digest is kept); gateways stop accepting a
 * revoked key within ~10 s. Runs with `tsx --conditions=mcsv-source`, as the services do (@mcsv/sdk from source).
 */
import { fileURLToPath } from "node:url";
import { loadConfig, databaseEnv } from "../services/shared/config.js";
import { createPool, migrate } from "../services/shared/database.js";
import { createLogger } from "../services/shared/logger.js";
import { ApiKeys, type ApiKeyInfo } from "../services/user/api-keys.js";
import { USER_SCHEMA } from "../services/user/service.js";

const USAGE = "usage: npm run keys -- create <tenant> | list [tenant] | revoke <prefix>";
const MIGRATIONS_DIR = fileURLToPath(new URL("../services/user/migrations", import.meta.url));

function describe(key: ApiKeyInfo): string {
  const state = key.revokedAt ? `revoked ${key.revokedAt.toISOString()}` : "active";
  const used = key.lastUsedAt ? `last used ${key.lastUsedAt.toISOString()}` : "never used";
  return [key.prefix, key.tenant, `created ${key.createdAt.toISOString()}`, state, used].join("\t");
}

async function main(args: string[]): Promise<number> {
  const [command, argument, ...rest] = args;
  const valid = (command === "create" || command === "revoke" ? argument !== undefined : command === "list") && rest.length === 0;
  if (!valid) {
    console.error(USAGE);
    return 2;
  }
  const { DATABASE_URL } = loadConfig("keys", { DATABASE_URL: databaseEnv.DATABASE_URL });
  const logger = createLogger("keys", { level: "error" });
  await migrate(DATABASE_URL, { dir: MIGRATIONS_DIR, schema: USER_SCHEMA, logger });
  const pool = createPool(DATABASE_URL, logger, { max: 1, name: "mcsv-keys" });
  try {
    const keys = new ApiKeys(pool);
    switch (command) {
      case "create": {
        const created = await keys.create(argument!);
        console.log(created.key);
        console.error(`created key ${created.prefix} of tenant ${created.tenant}: it is shown only this once, store it now`);
        return 0;
      }
      case "list": {
        const listed = await keys.list(argument);
        if (listed.length === 0) console.error(argument === undefined ? "no keys" : `no keys of tenant ${argument}`);
        for (const key of listed) console.log(describe(key));
        return 0;
      }
      default: {
        const revoked = await keys.revoke(argument!);
        if (!revoked) {
          console.error(`no key with prefix ${JSON.stringify(argument)}`);
          return 1;
        }
        console.log(describe(revoked));
        return 0;
      }
    }
  } finally {
    await pool.end();
  }
}

main(process.argv.slice(2)).then(
  (code) => (process.exitCode = code),
  (error: unknown) => {
    console.error(error instanceof Error ? error.message : String(error));
    process.exitCode = 1;
  },
);
