/** Following a conversion to its end with WatchConversion, watching again when the server ends a watch early. */
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { ConversionState, type Conversion, type UserService } from "@mcsv/sdk";
import { CliError } from "../errors.js";

/** How often a watch that the server ended early (restart, maximum duration) is opened again. */
const WATCH_ATTEMPTS = 5;

const isTerminal = (state: ConversionState) => state === ConversionState.SUCCEEDED || state === ConversionState.FAILED;

/** Calls `onChange` with the accepted conversion, then at each change of state or of pages done; returns the last. */
export async function followConversion(users: Client<typeof UserService>, accepted: Conversion, onChange: (conversion: Conversion) => void): Promise<Conversion> {
  let last = accepted;
  onChange(last);
  for (let attempt = 1; !isTerminal(last.state); attempt++) {
    try {
      for await (const { conversion } of users.watchConversion({ conversionId: accepted.id })) {
        if (!conversion) continue;
        if (conversion.state !== last.state || conversion.pagesDone !== last.pagesDone) onChange(conversion);
        last = conversion;
      }
      if (!isTerminal(last.state) && attempt >= WATCH_ATTEMPTS) throw new CliError(`the watch ended ${attempt} times before the conversion did`);
    } catch (error) {
      if (error instanceof CliError) throw error;
      const code = ConnectError.from(error).code;
      if (attempt >= WATCH_ATTEMPTS || (code !== Code.Unavailable && code !== Code.DeadlineExceeded)) throw error;
      await new Promise((r) => setTimeout(r, 500 * attempt));
    }
  }
  return last;
}
