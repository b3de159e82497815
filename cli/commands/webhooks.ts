/**
 * `mcsv webhooks …`: the calling tenant's webhook signing secret, the one key a tenant manages through the API (API
 * keys themselves are the operator's: `npm run keys`, against Postgres).
 */
import { Command } from "commander";
import { GetWebhookSecretResponseSchema, RotateWebhookSecretResponseSchema } from "@mcsv/sdk";
import { gatewayClient, type GlobalOptions } from "../clients.js";
import { printFields, printMessage, time } from "../output.js";

export function webhooksCommand(): Command {
  const webhooks = new Command("webhooks").description("the secret that signs your callbacks (Standard Webhooks)");
  webhooks
    .command("secret")
    .description("show the current signing secret (whsec_…), to verify callbacks with")
    .action(async (_options: unknown, command: Command) => {
      const options = command.optsWithGlobals<GlobalOptions>();
      const response = await gatewayClient(options).getWebhookSecret({});
      if (options.json) printMessage(GetWebhookSecretResponseSchema, response);
      else printFields([["secret", response.secret], ["created", time(response.createdAt)]]);
    });
  webhooks
    .command("rotate")
    .description("make a new signing secret; the previous one still signs for its grace period")
    .action(async (_options: unknown, command: Command) => {
      const options = command.optsWithGlobals<GlobalOptions>();
      const response = await gatewayClient(options).rotateWebhookSecret({});
      if (options.json) printMessage(RotateWebhookSecretResponseSchema, response);
      else printFields([["secret", response.secret], ["created", time(response.createdAt)], ["previous signs until", time(response.previousExpiresAt)]]);
    });
  return webhooks;
}
