/** `mcsv users …`: the gateway's users. */
import { Command } from "commander";
import { CreateUserResponseSchema, GetUserResponseSchema, type User } from "@mcsv/sdk";
import { gatewayClient, type GlobalOptions } from "../clients.js";
import { printFields, printMessage, time } from "../output.js";

const showUser = (user: User | undefined) =>
  printFields([
    ["id", user?.id],
    ["name", user?.name],
    ["email", user?.email],
    ["created", time(user?.createdAt)],
  ]);

export function usersCommand(): Command {
  const users = new Command("users").description("users of the gateway (each one gets a welcome e-mail)");
  users
    .command("create")
    .description("register a user and send the welcome e-mail")
    .requiredOption("--name <name>", "display name")
    .requiredOption("-e, --email <address>", "e-mail address (unique)")
    .option("--idempotency-key <key>", "a repeat with the same key returns the same user")
    .action(async (_options: unknown, command: Command) => {
      const options = command.optsWithGlobals<GlobalOptions & { name: string; email: string; idempotencyKey?: string }>();
      const response = await gatewayClient(options).createUser({ name: options.name, email: options.email, idempotencyKey: options.idempotencyKey ?? "" });
      if (options.json) printMessage(CreateUserResponseSchema, response);
      else showUser(response.user);
    });
  users
    .command("get")
    .description("show one user")
    .argument("<id>", "the user's id")
    .action(async (id: string, _options: unknown, command: Command) => {
      const options = command.optsWithGlobals<GlobalOptions>();
      const response = await gatewayClient(options).getUser({ id });
      if (options.json) printMessage(GetUserResponseSchema, response);
      else showUser(response.user);
    });
  return users;
}
