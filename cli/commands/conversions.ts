/** `mcsv conversions …`: list, show and follow conversions. */
import { toJson } from "@bufbuild/protobuf";
import { Command } from "commander";
import { ConversionSchema, ConversionState, GetConversionResponseSchema, ListConversionsResponseSchema, PageSize, PdfEngine, Quality, type Conversion } from "@mcsv/sdk";
import { gatewayClient, type GlobalOptions } from "../clients.js";
import { pageProgress, pagesSummary, textSummary } from "../conversion-summary.js";
import { CliError } from "../errors.js";
import { enumName, printFields, printMessage, printTable, time } from "../output.js";
import { emailOption, positiveInt } from "./options.js";

const state = (c: Conversion) => enumName(ConversionState, c.state);

/** "quality high, engine imagemagick", and the document options that were asked for: "a4, pdf/a, ocr eng+deu". */
function optionsSummary(c: Conversion): string {
  const options = c.options;
  const layout = options?.layout;
  const size = layout?.size === PageSize.CUSTOM ? `${layout.customWidth}×${layout.customHeight} pt` : layout?.size ? enumName(PageSize, layout.size) : undefined;
  return [
    `quality ${enumName(Quality, options?.quality ?? 0)}`,
    `engine ${enumName(PdfEngine, options?.engine ?? 0)}`,
    size,
    options?.pdfa ? "pdf/a" : undefined,
    options?.ocrLanguages.length ? `ocr ${options.ocrLanguages.join("+")}` : undefined,
  ]
    .filter(Boolean)
    .join(", ");
}

/** "3", or "1/3" while (or where) it stopped short of its last page; "-" from a gateway that counts no pages. */
const pageCell = (c: Conversion) => (c.pageCount === 0 ? "-" : c.state === ConversionState.SUCCEEDED ? String(c.pageCount) : `${c.pagesDone}/${c.pageCount}`);

/** "processing: page 2 of 3", "succeeded: 3 pages, 7 words recognised (eng)", "failed: <why>". */
function watchLine(c: Conversion): string {
  const detail =
    c.state === ConversionState.SUCCEEDED ? [pagesSummary(c), textSummary(c)].filter(Boolean).join(", ") : c.state === ConversionState.FAILED ? c.error : pageProgress(c);
  return detail ? `${state(c)}: ${detail}` : state(c);
}

function showConversion(c: Conversion | undefined): void {
  if (!c) return;
  printFields([
    ["id", c.id],
    ["state", state(c)],
    ["file", c.filename],
    ["email", c.userEmail],
    ["format", c.inputFormat],
    ["options", optionsSummary(c)],
    ["title", c.options?.metadata?.title],
    ["image", c.inputSize > 0n ? `${c.inputSize} bytes` : undefined],
    ["pages", pagesSummary(c)],
    ["pdf", c.outputSize > 0n ? `${c.outputSize} bytes, ${c.width}×${c.height} px${c.pageCount > 1 ? " (first page)" : ""}` : undefined],
    ["text", textSummary(c)],
    ["pdf url", c.pdfUrl],
    ["url expires", time(c.pdfUrlExpiresAt)],
    ["pdf expired", c.pdfExpired ? "yes" : undefined],
    ["error", c.error],
    ["created", time(c.createdAt)],
    ["updated", time(c.updatedAt)],
  ]);
}

export function conversionsCommand(): Command {
  const conversions = new Command("conversions").description("image-to-PDF conversions");
  conversions
    .command("list")
    .description("list an address's conversions, newest first")
    .addOption(emailOption("whose conversions"))
    .option("-n, --limit <n>", "how many (1 to 100)", positiveInt("--limit"), 20)
    .option("--page-token <token>", "the next page, from a previous listing")
    .action(async (_options: unknown, command: Command) => {
      const options = command.optsWithGlobals<GlobalOptions & { email?: string; limit: number; pageToken?: string }>();
      if (!options.email) throw new CliError("--email is required: whose conversions to list (or set MCSV_EMAIL)");
      const response = await gatewayClient(options).listConversions({ userEmail: options.email, pageSize: options.limit, pageToken: options.pageToken ?? "" });
      if (options.json) return printMessage(ListConversionsResponseSchema, response);
      if (response.conversions.length === 0) return void process.stdout.write(`no conversions for ${options.email}\n`);
      printTable(
        ["ID", "STATE", "FILE", "PAGES", "WORDS", "CREATED"],
        response.conversions.map((c) => [c.id, state(c), c.filename, pageCell(c), c.text ? String(c.text.wordCount) : "-", time(c.createdAt)]),
      );
      if (response.nextPageToken) process.stdout.write(`more: --page-token ${response.nextPageToken}\n`);
    });
  conversions
    .command("get")
    .description("show one conversion (with its PDF link once it succeeded)")
    .argument("<id>", "the conversion's id")
    .action(async (id: string, _options: unknown, command: Command) => {
      const options = command.optsWithGlobals<GlobalOptions>();
      const response = await gatewayClient(options).getConversion({ conversionId: id });
      if (options.json) printMessage(GetConversionResponseSchema, response);
      else showConversion(response.conversion);
    });
  conversions
    .command("watch")
    .description("print each change of a conversion's state until it ends (exit status 1 if it failed)")
    .argument("<id>", "the conversion's id")
    .action(async (id: string, _options: unknown, command: Command) => {
      const options = command.optsWithGlobals<GlobalOptions>();
      let last: Conversion | undefined;
      for await (const { conversion } of gatewayClient(options).watchConversion({ conversionId: id })) {
        if (!conversion) continue;
        last = conversion;
        if (options.json) process.stdout.write(`${JSON.stringify(toJson(ConversionSchema, conversion))}\n`);
        else process.stdout.write(`${time(conversion.updatedAt)}  ${watchLine(conversion)}\n`);
      }
      if (last?.state === ConversionState.FAILED) process.exitCode = 1;
    });
  return conversions;
}
