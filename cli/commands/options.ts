/** Options and argument parsers that several commands share. */
import { InvalidArgumentError, Option } from "commander";

export function positiveInt(flag: string): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!Number.isSafeInteger(n) || n <= 0) throw new InvalidArgumentError(`${flag} takes a positive whole number, not ${value}`);
    return n;
  };
}

/** --email, also read from MCSV_EMAIL. */
export function emailOption(what: string): Option {
  return new Option("-e, --email <address>", what).env("MCSV_EMAIL");
}
