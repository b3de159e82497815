/** Starts the email service in-process on a free port with a test configuration, and a Connect client for it. */
import type { Client } from "@connectrpc/connect";
import { EmailService } from "@mcsv/sdk";
import { createServiceClient } from "../../services/shared/service-clients.js";
import { createLogger } from "../../services/shared/logger.js";
import type { RunningService } from "../../services/shared/server.js";
import { loadEmailConfig } from "../../services/email/config.js";
import { startEmailService } from "../../services/email/service.js";
import { TEST_INTERNAL_TOKEN, testAuthEnv } from "../support/credentials.js";

export interface EmailUnderTest {
  service: RunningService;
  client: Client<typeof EmailService>;
  close(): Promise<void>;
}

export async function startEmail(env: Record<string, string>): Promise<EmailUnderTest> {
  const config = loadEmailConfig({ ...testAuthEnv, EMAIL_PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "error", LOG_FORMAT: "json", ...env });
  const service = await startEmailService(config, { logger: createLogger("email-svc", { level: "error", format: "json" }) });
  return {
    service,
    client: createServiceClient(EmailService, service.url, { timeoutMs: 10_000, credential: TEST_INTERNAL_TOKEN }),
    close: () => service.shutdown("test over"),
  };
}
