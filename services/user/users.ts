/**
 * Users: registration with an email unique (case-insensitively) within the tenant, and the welcome email through
 * the outbox, written in the same transaction as the user so that neither exists without the other. Every read is
 * scoped to the caller's tenant: another tenant's user is not found, and its address is free.
 */
import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { EmailType, SendEmailRequestSchema, SendEmailTaskSchema } from "@mcsv/sdk";
import { transaction, type Pool } from "../shared/database.js";
import { jobKeys } from "../shared/tasks.js";
import { usersCreated } from "./metrics.js";
import { addToOutbox, outboxJob, type OutboxRelay } from "./outbox.js";
import type { UserRow } from "./records.js";

export interface NewUser {
  tenant: string;
  name: string;
  email: string;
  idempotencyKey?: string | undefined;
}

const USER_COLUMNS = "id, tenant, name, email, idempotency_key, created_at";

export class Users {
  constructor(
    private readonly pool: Pool,
    private readonly relay: OutboxRelay,
  ) {}

  /**
   * Creates the user, or returns the one a previous request with the same email and idempotency key created
   * (whatever name the repeat carries). Any other request for a taken email is already_exists.
   */
  async create(input: NewUser): Promise<{ user: UserRow; created: boolean }> {
    const existing = await this.byEmail(input.tenant, input.email);
    if (existing) return { user: this.repeatOf(existing, input), created: false };

    const id = randomUUID();
    const outcome = await transaction(this.pool, async (db) => {
      const { rows } = await db.query<UserRow>(
        `insert into mcsv_user.users (id, tenant, name, email, idempotency_key) values ($1, $2, $3, $4, $5)
         on conflict (tenant, (lower(email))) do nothing
         returning ${USER_COLUMNS}`,
        [id, input.tenant, input.name, input.email, input.idempotencyKey ?? null],
      );
      const user = rows[0];
      if (!user) return undefined;
      const outboxIds = await addToOutbox(db, user.tenant, [welcomeEmailJob(user)]);
      return { user, outboxIds };
    });
    if (!outcome) {
      // A concurrent request registered the address first.
      const winner = await this.byEmail(input.tenant, input.email);
      if (!winner) throw new ConnectError("the user could not be created; retry", Code.Aborted);
      return { user: this.repeatOf(winner, input), created: false };
    }
    usersCreated.inc();
    await this.relay.deliverNow(outcome.outboxIds);
    return { user: outcome.user, created: true };
  }

  /** The tenant's user; another tenant's is not found. */
  async get(tenant: string, id: string): Promise<UserRow> {
    const { rows } = await this.pool.query<UserRow>(`select ${USER_COLUMNS} from mcsv_user.users where id = $1 and tenant = $2`, [id, tenant]);
    if (!rows[0]) throw new ConnectError(`user ${id} not found`, Code.NotFound);
    return rows[0];
  }

  /** The tenant's registered user with this address, if any. */
  async byEmail(tenant: string, email: string): Promise<UserRow | undefined> {
    const { rows } = await this.pool.query<UserRow>(`select ${USER_COLUMNS} from mcsv_user.users where tenant = $1 and lower(email) = lower($2)`, [
      tenant,
      email,
    ]);
    return rows[0];
  }

  private repeatOf(existing: UserRow, input: NewUser): UserRow {
    if (input.idempotencyKey !== undefined && existing.idempotency_key === input.idempotencyKey) return existing;
    throw new ConnectError("a user with this email already exists", Code.AlreadyExists);
  }
}

function welcomeEmailJob(user: UserRow) {
  const email = create(SendEmailTaskSchema, {
    request: create(SendEmailRequestSchema, {
      userId: user.id,
      userName: user.name,
      userEmail: user.email,
      emailType: EmailType.WELCOME,
      idempotencyKey: `welcome:${user.id}`,
    }),
  });
  return outboxJob("send_email", jobKeys.welcomeEmail(user.id), email);
}
