/** What every benchmark gets from bench/run.ts, and the shape of a ratio against a floor. */
import { median, round } from "./stats.js";

export interface BenchOptions {
  /** ~1 minute in all instead of the full run: fewer rounds, smaller batches, shorter windows. */
  quick: boolean;
  /** Progress line on stderr. */
  log(message: string): void;
}

/**
 * One figure: mcsv's measurement against the floor measured in the same run. `ratio` is the median of the A/B
 * rounds' ratios when there are rounds (one disturbed round on a shared machine moves it least), else mcsv / floor;
 * `mcsv` and `floor` are over all rounds.
 */
export interface Ratio {
  mcsv: number;
  floor: number;
  ratio: number;
  unit: string;
  /** Each A/B round's ratio, to show the spread. */
  rounds?: number[];
  target?: { min?: number; max?: number };
  /** Whether the target is met (absent without a target). */
  met?: boolean;
}

export function ratio(mcsv: number, floor: number, unit: string, target?: Ratio["target"], rounds?: number[]): Ratio {
  const r = rounds && rounds.length > 0 ? median(rounds) : floor === 0 ? Number.NaN : mcsv / floor;
  const result: Ratio = { mcsv: round(mcsv), floor: round(floor), ratio: round(r), unit };
  if (rounds) result.rounds = rounds.map((x) => round(x));
  if (target) {
    result.target = target;
    result.met = (target.min === undefined || r >= target.min) && (target.max === undefined || r <= target.max);
  }
  return result;
}
