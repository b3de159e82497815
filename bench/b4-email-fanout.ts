/**
 * B4: email fan-out. 1,000 UserService.CreateUser at concurrency 10 through the gateway, timed until all 1,000
 * welcome emails reached the Resend sink (user row and outbox → job service → graphile-worker → email service →
 * resend SDK): users/s, CreateUser p95, time to drain after the last answer, lost and duplicate emails. The floor,
 * measured in the same run: the least the work needs, done directly from the benchmark process at the same
 * concurrency: one INSERT of the user into Postgres and one resend SDK send to the same sink, per user.
 */
import { randomUUID } from "node:crypto";
import pg from "pg";
import { Resend } from "resend";
import type { BenchSystem } from "./lib/bench-system.js";
import { cpuPerItem, cpuSnapshot } from "./lib/bench-system.js";
import { ratio, type BenchOptions, type Ratio } from "./lib/context.js";
import { percentiles, pool, round, sleep } from "./lib/stats.js";
import { startMemoryProbe, type MemoryPhase } from "./b5-memory.js";

export interface B4RoundResult {
  users: number;
  seconds: number;
  usersPerSecond: number;
  createUserMs: { p50: number; p95: number; p99: number };
  /** From the last CreateUser answer to the last welcome email. */
  drainMs: number;
  delivered: number;
  lost: number;
  duplicates: number;
  errors: number;
}

export interface B4Result {
  users: number;
  concurrency: number;
  rounds: B4RoundResult[];
  floorUsersPerSecond: number[];
  throughput: Ratio;
  createUserP95Ms: number;
  drainMs: number;
  lost: number;
  duplicates: number;
  cpuMsPerUser: Record<string, number>;
  memory?: MemoryPhase;
}

const CONCURRENCY = 10;

export async function runB4(bench: BenchSystem, options: BenchOptions): Promise<B4Result> {
  const total = options.quick ? 100 : 1_000;
  const rounds = options.quick ? 1 : 2;
  const settleMs = options.quick ? 500 : 1_500;
  const db = new pg.Pool({ connectionString: bench.system.env["DATABASE_URL"], max: CONCURRENCY });
  const resend = new Resend("re_bench_key", { baseUrl: bench.sink.url });
  await db.query("create schema if not exists bench_floor");
  await db.query("create table if not exists bench_floor.users (id uuid primary key, name text not null, email text not null unique, created_at timestamptz not null default now())");

  const welcomeTo = (prefix: string) => {
    const counts = new Map<string, number>();
    for (const email of bench.sink.delivered()) {
      const to = email.body.to[0] ?? "";
      if (to.startsWith(prefix)) counts.set(to, (counts.get(to) ?? 0) + 1);
    }
    return counts;
  };

  const mcsvRound = async (tag: string): Promise<B4RoundResult> => {
    const prefix = `b4-${tag}-`;
    const latencies: number[] = [];
    let errors = 0;
    const started = performance.now();
    await pool(total, CONCURRENCY, async (i) => {
      const t = performance.now();
      try {
        await bench.users.createUser({ name: `Bench User ${i}`, email: `${prefix}${i}@bench.example.com`, idempotencyKey: `${prefix}${i}` });
        latencies.push(performance.now() - t);
      } catch {
        errors++;
      }
    });
    const lastAnswer = performance.now();
    const deadline = lastAnswer + 180_000;
    let lastEmail = lastAnswer;
    while (performance.now() < deadline) {
      const counts = welcomeTo(prefix);
      if (counts.size >= total - errors) {
        lastEmail = performance.now();
        break;
      }
      await sleep(20);
    }
    // Anything still arriving after the last expected email would be a duplicate.
    await sleep(settleMs);
    const counts = welcomeTo(prefix);
    const delivered = [...counts.values()].reduce((a, b) => a + b, 0);
    const seconds = (lastEmail - started) / 1000;
    const p = percentiles(latencies);
    return {
      users: total,
      seconds: round(seconds, 2),
      usersPerSecond: round(total / seconds, 1),
      createUserMs: { p50: round(p.p50, 1), p95: round(p.p95, 1), p99: round(p.p99, 1) },
      drainMs: Math.round(lastEmail - lastAnswer),
      delivered,
      lost: total - counts.size,
      duplicates: delivered - counts.size,
      errors,
    };
  };

  const floorRound = async (tag: string): Promise<number> => {
    const started = performance.now();
    await pool(total, CONCURRENCY, async (i) => {
      const email = `b4f-${tag}-${i}@bench.example.com`;
      const id = randomUUID();
      await db.query("insert into bench_floor.users (id, name, email) values ($1, $2, $3)", [id, `Bench User ${i}`, email]);
      const { error } = await resend.emails.send(
        { from: "mcsv <noreply@bench.example.com>", to: [email], subject: "Welcome", html: `<p>Welcome, Bench User ${i}</p>`, text: `Welcome, Bench User ${i}` },
        { idempotencyKey: `welcome:${id}` },
      );
      if (error) throw new Error(`floor send failed: ${error.message}`);
    });
    return total / ((performance.now() - started) / 1000);
  };

  try {
    const results: B4RoundResult[] = [];
    const floors: number[] = [];
    const perRound: number[] = [];
    const memory = startMemoryProbe(bench, "B4 email fan-out");
    const mcsvCpu: Record<string, number> = {};
    for (let r = 0; r < rounds; r++) {
      const tag = `${r}-${randomUUID().slice(0, 8)}`;
      const before = cpuSnapshot(bench);
      const result = await mcsvRound(tag);
      const used = cpuPerItem(before, cpuSnapshot(bench), total);
      for (const [k, v] of Object.entries(used)) mcsvCpu[k] = round((mcsvCpu[k] ?? 0) + v / rounds, 2);
      results.push(result);
      const floor = await floorRound(tag);
      floors.push(floor);
      perRound.push(result.usersPerSecond / floor);
      options.log(
        `B4 round ${r + 1}: ${result.usersPerSecond} users/s (floor ${floor.toFixed(0)}/s), CreateUser p95 ${result.createUserMs.p95} ms, drain ${result.drainMs} ms, lost ${result.lost}, duplicates ${result.duplicates}, errors ${result.errors}`,
      );
    }
    const mcsvRate = (rounds * total) / results.reduce((s, r) => s + r.seconds, 0);
    const floorRate = (rounds * total) / floors.reduce((s, f) => s + total / f, 0);
    return {
      users: total,
      concurrency: CONCURRENCY,
      rounds: results,
      floorUsersPerSecond: floors.map((f) => round(f, 1)),
      throughput: ratio(mcsvRate, floorRate, "users/s", undefined, perRound),
      createUserP95Ms: round(Math.max(...results.map((r) => r.createUserMs.p95)), 1),
      drainMs: Math.max(...results.map((r) => r.drainMs)),
      lost: results.reduce((s, r) => s + r.lost, 0),
      duplicates: results.reduce((s, r) => s + r.duplicates, 0),
      cpuMsPerUser: mcsvCpu,
      memory: memory.stop(),
    };
  } finally {
    await db.end();
  }
}
