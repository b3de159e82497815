/** What the gateway tells the page about itself (services/user/console.ts serves it as config.json). */
export interface ConsoleSettings {
  /** Grafana's base URL, when the gateway knows it: traces link to its Explore view. */
  grafanaUrl?: string;
  /** Largest image ConvertImage accepts inline (GATEWAY_MAX_IMAGE_BYTES). */
  maxImageBytes: number;
}

export async function loadSettings(): Promise<ConsoleSettings> {
  const response = await fetch("config.json", { headers: { accept: "application/json" } });
  if (!response.ok) throw new Error(`the console's settings could not be read (HTTP ${response.status})`);
  const body = (await response.json()) as Partial<ConsoleSettings>;
  if (typeof body.maxImageBytes !== "number") throw new Error("the console's settings lack maxImageBytes");
  return { maxImageBytes: body.maxImageBytes, ...(typeof body.grafanaUrl === "string" ? { grafanaUrl: body.grafanaUrl } : {}) };
}
