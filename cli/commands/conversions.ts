/** `mcsv conversions …`: list, show and follow conversions. */
import { toJson } from "@bufbuild/protobuf";
import { Command } from "commander";
import { ConversionSchema, ConversionState, GetConversionResponseSchema, ListConversionsResponseSchema, PdfEngine, Quality, type Conversion } from "@mcsv/sdk";
import { gatewayClient, type GlobalOptions } from "../clients.js";
import { CliError } from "../errors.js";
import { enumName, printFields, printMessage, printTable, time } from "../output.js";
import { emailOption, positiveInt } from "./options.js";

const state = (c: Conversion) => enumName(ConversionState, c.state);

function showConversion(c: Conversion | undefined): void {
  if (!c) return;
  printFields([
    ["id", c.id],
    ["state", state(c)],
    ["file", c.filename],
    ["email", c.userEmail],
    ["format", c.inputFormat],
    ["options", `quality ${enumName(Quality, c.options?.quality ?? 0)}, engine ${enumName(PdfEngine, c.options?.engine ?? 0)}`],
    ["image", c.inputSize > 0n ? `${c.inputSize} bytes` : undefined],
    ["pdf", c.outputSize > 0n ? `${c.outputSize} bytes, ${c.width}×${c.height} px` : undefined],
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
        ["ID", "STATE", "FILE", "CREATED"],
        response.conversions.map((c) => [c.id, state(c), c.filename, time(c.createdAt)]),
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
        else process.stdout.write(`${time(conversion.updatedAt)}  ${state(conversion)}${conversion.error ? `: ${conversion.error}` : ""}\n`);
      }
      if (last?.state === ConversionState.FAILED) process.exitCode = 1;
    });
  return conversions;
}
