/**
 * Converting the images a person drops or picks: each is sent inline to ConvertImage, or all of them together to
 * ConvertDocument as one PDF in the order given (up to the gateway's inline limit, for one image or for all of a
 * document's together; more is refused here, as the browser may not PUT to the S3 bucket), then watched through
 * WatchConversion until it ends.
 */
import { Code, ConnectError, type ContextValues } from "@connectrpc/connect";
import type { Conversion } from "@mcsv/sdk";
import { ConversionCard } from "./conversion-card.js";
import { isFinished } from "./conversion-view.js";
import type { ConversionOptionsInit } from "./convert-form.js";
import { describeFailure, isAborted, traced, type Gateway } from "./gateway.js";
import type { ConsoleSettings } from "./settings.js";

export interface ConversionRequest {
  userEmail: string;
  options: ConversionOptionsInit;
}

/** Where a conversion's progress goes: its card, and the trace ids the history shows. */
export interface ConversionDisplay {
  card: ConversionCard;
  traces: Map<string, string>;
  signal: AbortSignal;
}

/** Watches that end early (the stream's time limit, a gateway restarting) are started again, this many times. */
const MAX_REWATCHES = 20;
const REWATCH_DELAY_MS = 1_000;

/** `26214400` → `25 MiB`. */
export const mib = (bytes: number) => `${Math.round((bytes / 1024 / 1024) * 10) / 10} MiB`;

/** Converts `file`, showing its progress on the card. */
export async function convertImage(gateway: Gateway, settings: ConsoleSettings, file: File, request: ConversionRequest, display: ConversionDisplay): Promise<void> {
  if (file.size > settings.maxImageBytes) {
    display.card.fail(`${file.name} is ${mib(file.size)}, over the ${mib(settings.maxImageBytes)} the gateway accepts from the console; send it with the SDK or the CLI (CreateUploadUrl)`);
    return;
  }
  await startAndFollow(gateway, settings, display, async (contextValues) => {
    const imageData = new Uint8Array(await file.arrayBuffer());
    return gateway.convertImage(
      {
        userEmail: request.userEmail,
        filename: file.name,
        options: request.options,
        // A retry of this very request (by the transport or a person) must not convert twice.
        idempotencyKey: crypto.randomUUID(),
        source: { case: "imageData", value: imageData },
      },
      { contextValues, signal: display.signal },
    );
  });
}

/** Converts `files` into one PDF named `name`, a page each in their order, showing its progress on the card. */
export async function convertDocument(gateway: Gateway, settings: ConsoleSettings, files: readonly File[], name: string, request: ConversionRequest, display: ConversionDisplay): Promise<void> {
  const total = files.reduce((sum, file) => sum + file.size, 0);
  if (total > settings.maxImageBytes) {
    display.card.fail(`the images are ${mib(total)} together, over the ${mib(settings.maxImageBytes)} the gateway accepts from the console; convert them one by one, or send them with the SDK or the CLI (CreateUploadUrl)`);
    return;
  }
  await startAndFollow(gateway, settings, display, async (contextValues) => {
    const images = await Promise.all(files.map(async (file) => ({ source: { case: "imageData" as const, value: new Uint8Array(await file.arrayBuffer()) } })));
    return gateway.convertDocument(
      { userEmail: request.userEmail, filename: name, options: request.options, idempotencyKey: crypto.randomUUID(), images },
      { contextValues, signal: display.signal },
    );
  });
}

/** Makes the call that starts the conversion, then follows it on the card to its end; records its trace id. */
async function startAndFollow(
  gateway: Gateway,
  settings: ConsoleSettings,
  { card, traces, signal }: ConversionDisplay,
  start: (contextValues: ContextValues) => Promise<{ conversion?: Conversion | undefined }>,
): Promise<void> {
  const { contextValues, holder } = traced();
  try {
    const { conversion } = await start(contextValues);
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
