/**
 * Migrations as a pre-deploy step (issue 15): with MIGRATE_ON_START=false a gateway refuses to start on a schema
 * older than its code, naming what is missing; the migrate commands (`services/user/migrate.ts`,
 * `services/job/migrate.ts`, what the Kubernetes job runs) apply them with MIGRATION_DATABASE_URL, as processes of
 * their own; then the gateway starts without migrating, and serves.
 */
import { join } from "node:path";
import { ROOT } from "../../scripts/lib/system.js";
import { run } from "../support/run.js";
import { startGateway, startInfra, type Infra } from "./support.js";

let infra: Infra;

beforeAll(async () => {
  infra = await startInfra();
}, 120_000);

afterAll(async () => {
  await infra?.stop();
});

/** Runs a service's migrate command as the pre-deploy job does: its own process, the DDL role's URL. */
function migrateCommand(service: "user" | "job", env: Record<string, string>) {
  return run(process.execPath, ["--conditions=mcsv-source", "--import", "tsx", join(ROOT, "services", service, "migrate.ts")], {
    cwd: ROOT,
    env: { PATH: process.env["PATH"] ?? "", LOG_FORMAT: "json", ...env },
  });
}

test("a gateway that does not migrate refuses an unmigrated schema; the migrate commands apply it; then it starts", async () => {
  const refused = await startGateway(infra, { MIGRATE_ON_START: "false" }).then(
    async (gateway) => {
      await gateway.service.shutdown("unexpected");
      return "started";
    },
    (error: unknown) => String(error),
  );
  expect(refused).toMatch(/schema mcsv_user lacks \d+ migration\(s\) \(1763700000000_init, .*\): run the migrate command first/);

  // The DDL role's URL is what the command uses: a DATABASE_URL that cannot even connect shows it.
  const unusable = "postgres://nobody:wrong@127.0.0.1:9/none";
  for (const service of ["user", "job"] as const) {
    const result = await migrateCommand(service, { DATABASE_URL: unusable, MIGRATION_DATABASE_URL: infra.postgres.url });
    expect({ service, code: result.code, stderr: result.stderr }).toEqual({ service, code: 0, stderr: "" });
    expect(result.stdout).toMatch(/"message":"migrations: done"/);
  }

  const gateway = await startGateway(infra, { MIGRATE_ON_START: "false" });
  try {
    const { user } = await gateway.client.createUser({ name: "Migrated", email: "migrated@example.com" });
    expect(user?.email).toBe("migrated@example.com");
    // Nothing was left for it to apply: the migrate commands did it all.
    const again = await migrateCommand("user", { DATABASE_URL: infra.postgres.url });
    expect(again.code).toBe(0);
    expect(again.stdout).not.toMatch(/migrations applied/);
  } finally {
    await gateway.service.shutdown("test over");
  }
}, 120_000);

test("a migrate command that cannot reach Postgres exits 1 with one clear line", async () => {
  const result = await migrateCommand("user", { DATABASE_URL: "postgres://nobody:wrong@127.0.0.1:9/none" });
  expect(result.code).toBe(1);
  expect(result.stdout).toMatch(/"message":"migrations failed"/);
  expect(result.stdout).toMatch(/ECONNREFUSED/);
});
