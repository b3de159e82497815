/**
 * An HTTP server standing in for Alertmanager's webhook receivers in tests: it keeps every notification with the path
 * it was posted to (one path per receiver), in Alertmanager's webhook format (version 4).
 */
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";

export interface WebhookAlert {
  status: "firing" | "resolved";
  labels: Record<string, string>;
  annotations: Record<string, string>;
  startsAt: string;
}

export interface WebhookNotification {
  /** The path posted to, e.g. `/page`. */
  path: string;
  body: { version: string; status: string; receiver: string; alerts: WebhookAlert[]; groupLabels: Record<string, string>; commonLabels: Record<string, string> };
}

export interface AlertWebhook {
  url: string;
  notifications: WebhookNotification[];
  close(): Promise<void>;
}

export async function startAlertWebhook(): Promise<AlertWebhook> {
  const notifications: WebhookNotification[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      try {
        notifications.push({ path: req.url ?? "", body: JSON.parse(Buffer.concat(chunks).toString("utf8")) as WebhookNotification["body"] });
        res.writeHead(200).end();
      } catch {
        res.writeHead(400).end();
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    notifications,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
