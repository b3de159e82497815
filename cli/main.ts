/**
 * `mcsv`, the command line of mcsv, built on the generated SDK (@mcsv/sdk) and @connectrpc/connect-node: one
 * file per command group under commands/. Expected failures end in one line on stderr that says what to do, with
 * exit status 1; a bad command line (commander's usage errors) exits 2, as usage errors do by convention.
 */
import { Command, CommanderError, Option } from "commander";
import packageJson from "./package.json" with { type: "json" };
import { gatewayEndpoint, jobEndpoint, type GlobalOptions, type JobOptions } from "./clients.js";
import { conversionsCommand } from "./commands/conversions.js";
import { convertCommand } from "./commands/convert.js";
import { jobsCommand } from "./commands/jobs.js";
import { usersCommand } from "./commands/users.js";
import { webhooksCommand } from "./commands/webhooks.js";
import { describeFailure, type Endpoint } from "./errors.js";
import { DEFAULT_GATEWAY_URL } from "./settings.js";

const program = new Command("mcsv")
  .description("Turn images into PDFs with mcsv, and look after its users, conversions and jobs.")
  .version(packageJson.version)
  .addOption(new Option("--url <url>", `the gateway (user service) (default: ${DEFAULT_GATEWAY_URL})`).env("MCSV_URL"))
  .addOption(new Option("--api-key <key>", "the tenant's API key (default: .data/credentials.json's, as `npm start` keeps it)").env("MCSV_API_KEY"))
  .option("--json", "print results as JSON")
  .option("-v, --verbose", "print one line per call to stderr, with its trace id")
  .configureHelp({ showGlobalOptions: true })
  .showHelpAfterError("(add --help for usage)")
  // Commander's errors are thrown, not exited on, so that a usage error gets its own status (below).
  .exitOverride()
  .addCommand(convertCommand())
  .addCommand(usersCommand())
  .addCommand(conversionsCommand())
  .addCommand(jobsCommand())
  .addCommand(webhooksCommand());

/** Commands added whole (addCommand) do not take the program's help settings by themselves: hand them down. */
(function inheritSettings(parent: Command) {
  for (const command of parent.commands) {
    command.copyInheritedSettings(parent);
    inheritSettings(command);
  }
})(program);

/** The exit status of a bad command line (an unknown flag, a bad value), apart from a failure's 1. */
const USAGE_ERROR = 2;

/** The command that ran, so that a failure can name the service it was talking to. */
let running: Command | undefined;
program.hook("preAction", (_program, action) => {
  running = action;
});

function endpointOf(command: Command | undefined): Endpoint | undefined {
  if (!command) return undefined;
  try {
    const options = command.optsWithGlobals<GlobalOptions & JobOptions>();
    return command.parent?.name() === "jobs" ? jobEndpoint(options) : gatewayEndpoint(options);
  } catch {
    return undefined;
  }
}

/** One line for an expected failure; a bug's message, and its stack with --verbose. */
function reportFailure(error: unknown): void {
  const message = describeFailure(error, endpointOf(running));
  if (message !== undefined) {
    process.stderr.write(`mcsv: ${message}\n`);
  } else {
    // Not an expected failure: a bug, whose stack helps (with --verbose).
    process.stderr.write(`mcsv: unexpected error: ${error instanceof Error ? error.message : String(error)}\n`);
    if (program.opts<GlobalOptions>().verbose && error instanceof Error) process.stderr.write(`${error.stack}\n`);
  }
  process.exitCode = 1;
}

try {
  await program.parseAsync();
} catch (error) {
  // Commander has said what is wrong already; --help and --version are no error.
  if (error instanceof CommanderError) process.exitCode = error.exitCode === 0 ? 0 : USAGE_ERROR;
  else reportFailure(error);
}
