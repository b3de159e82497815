/**
 * Converting the images a person drops or picks: each is sent inline to ConvertImage (up to the gateway's inline
 * limit; larger ones are refused here, as the browser may not PUT to the S3 bucket), then watched through
 * WatchConversion until it ends.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { PdfEngine, Quality } from "@mcsv/sdk";
import { ConversionCard } from "./conversion-card.js";
import { isFinished } from "./conversion-view.js";
import { describeFailure, isAborted, traced, type Gateway } from "./gateway.js";
import type { ConsoleSettings } from "./settings.js";

export interface ConversionRequest {
  userEmail: string;
  quality: Quality;
  engine: PdfEngine;
}

/** Watches that end early (the stream's time limit, a gateway restarting) are started again, this many times. */
const MAX_REWATCHES = 20;
const REWATCH_DELAY_MS = 1_000;

/** `26214400` → `25 MiB`. */
export const mib = (bytes: number) => `${Math.round((bytes / 1024 / 1024) * 10) / 10} MiB`;

/** Converts `file`, showing its progress on `card`; records the conversion's trace id in `traces`. */
export async function convertImage(
  gateway: Gateway,
  settings: ConsoleSettings,
  file: File,
  request: ConversionRequest,
  card: ConversionCard,
  traces: Map<string, string>,
  signal: AbortSignal,
): Promise<void> {
  if (file.size > settings.maxImageBytes) {
    card.fail(`${file.name} is ${mib(file.size)}, over the ${mib(settings.maxImageBytes)} the gateway accepts from the console; send it with the SDK or the CLI (CreateUploadUrl)`);
    return;
  }
  const { contextValues, holder } = traced();
  try {
    const imageData = new Uint8Array(await file.arrayBuffer());
    const { conversion } = await gateway.convertImage(
      {
        userEmail: request.userEmail,
        filename: file.name,
        options: { quality: request.quality, engine: request.engine },
        // A retry of this very request (by the transport or a person) must not convert twice.
        idempotencyKey: crypto.randomUUID(),
        source: { case: "imageData", value: imageData },
      },
      { contextValues, signal },
    );
    card.showTrace(holder.traceId, settings.grafanaUrl);
    if (!conversion) throw new Error("the gateway answered without a conversion");
    if (holder.traceId) traces.set(conversion.id, holder.traceId);
    card.update(conversion);
    if (!isFinished(conversion.state)) await watch(gateway, conversion.id, card, signal);
  } catch (error) {
    if (isAborted(error) || signal.aborted) return;
    card.showTrace(holder.traceId, settings.grafanaUrl);
    card.fail(describeFailure(error));
  }
}

async function watch(gateway: Gateway, conversionId: string, card: ConversionCard, signal: AbortSignal): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      for await (const { conversion } of gateway.watchConversion({ conversionId }, { signal })) {
        if (!conversion) continue;
        card.update(conversion);
        if (isFinished(conversion.state)) return;
      }
    } catch (error) {
      const code = ConnectError.from(error).code;
      if (signal.aborted || (code !== Code.DeadlineExceeded && code !== Code.Unavailable) || attempt >= MAX_REWATCHES) throw error;
    }
    // The stream ended before the conversion did: watch again.
    if (attempt >= MAX_REWATCHES) throw new Error("the conversion's progress could not be followed; reload the history to see it");
    await new Promise((resolve) => setTimeout(resolve, REWATCH_DELAY_MS));
  }
}
