/**
 * `npm start` on the embedded defaults: it brings all five services up with embedded Postgres, the embedded S3
 * server and the dev outbox, prints the URLs and buf curl commands, stops cleanly on Ctrl-C, and the data survives
 * a restart.
 */
import { execSync, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { connect } from "node:net";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { UserService } from "@mcsv/sdk";
import { freePort } from "../../scripts/lib/embedded.js";
import { bearerInterceptor } from "../../services/shared/auth.js";
import { isReady, ROOT } from "../../scripts/lib/system.js";
import { SERVICE_KEYS } from "../../services/shared/topology.js";
import { eventually } from "../support/system.js";

const dataDir = mkdtempSync(join(tmpdir(), "mcsv-start-"));
let env: Record<string, string>;
let urls: string[];

beforeAll(async () => {
  env = { PATH: process.env["PATH"]!, HOME: process.env["HOME"]!, MCSV_DATA_DIR: dataDir, MCSV_PG_PORT: String(await freePort()), MCSV_S3_PORT: String(await freePort()) };
  urls = [];
  for (const key of SERVICE_KEYS) {
    const port = await freePort();
    env[`${key.toUpperCase()}_PORT`] = String(port);
    urls.push(`http://127.0.0.1:${port}`);
  }
});

/** Every `npm start` still running: a failed assertion must not leave the system behind. */
const running = new Set<ChildProcess>();

afterAll(() => {
  for (const child of running) if (child.exitCode === null && child.signalCode === null) process.kill(-child.pid!, "SIGKILL");
  rmSync(dataDir, { recursive: true, force: true });
});

interface Started {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

async function npmStart(): Promise<Started> {
  // Its own process group, so that a signal reaches every process as Ctrl-C in a terminal does.
  const child = spawn("npm", ["start"], { cwd: ROOT, env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  running.add(child);
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  await eventually(() => (output.includes("mcsv is ready.") ? true : undefined), `npm start to be ready; output so far:\n${output}`, 120_000).catch((error: unknown) => {
    throw new Error(`${String(error)}\n${output}`);
  });
  return { child, output: () => output, exited };
}

/** Ctrl-C: npm itself exits on the signal; the system must then finish stopping on its own and say so. */
async function ctrlC(started: Started): Promise<void> {
  process.kill(-started.child.pid!, "SIGINT");
  await started.exited;
  await eventually(() => (started.output().includes("mcsv stopped.") ? true : undefined), "mcsv to stop", 60_000);
  for (const url of urls) expect(await isReady(url)).toBe(false);
  expect(await portOpen(Number(env["MCSV_PG_PORT"]))).toBe(false);
  expect(await portOpen(Number(env["MCSV_S3_PORT"]))).toBe(false);
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    socket.once("connect", () => (socket.destroy(), resolve(true)));
    socket.once("error", () => resolve(false));
  });
}

test("npm start runs everything on the embedded defaults, stops cleanly on Ctrl-C, and keeps its data", async () => {
  const first = await npmStart();
  for (const url of urls) expect(await isReady(url)).toBe(true);
  const text = first.output();
  // Dev credentials were made, kept in the data directory, and printed inside the buf curl examples.
  const credentials = JSON.parse(readFileSync(join(dataDir, "credentials.json"), "utf8")) as { apiKey: string; internalToken: string };
  expect(text).toContain(`buf curl -H "Authorization: Bearer ${credentials.apiKey}"`);
  expect(text).toContain(`${urls[0]}/mcsv.v1.UserService/CreateUser`);
  expect(text).toContain(`buf curl --list-services ${urls[0]}`);
  // The printed command works as pasted, from a directory with no protos: buf curl finds the schema by reflection.
  const printed = /npx buf curl (-H "[^"]*" --data '[^']*') \\\n\s*(\S+\/mcsv\.v1\.UserService\/CreateUser)/.exec(text)!;
  const created = execSync(`${join(ROOT, "node_modules", ".bin", "buf")} curl ${printed[1]} ${printed[2]}`, { cwd: tmpdir(), encoding: "utf8" });
  expect((JSON.parse(created) as { user: { email: string } }).user.email).toBe("ada@example.com");
  // So does the document example.
  const document = /npx buf curl (-H "[^"]*" --data '[^']*') \\\n\s*(\S+\/mcsv\.v1\.UserService\/ConvertDocument)/.exec(text)!;
  const queued = execSync(`${join(ROOT, "node_modules", ".bin", "buf")} curl ${document[1]} ${document[2]}`, { cwd: tmpdir(), encoding: "utf8" });
  expect((JSON.parse(queued) as { conversion: { pageCount: number } }).conversion.pageCount).toBe(2);
  expect(text).toContain("dev outbox");

  const users = createClient(UserService, createConnectTransport({ baseUrl: urls[0]!, httpVersion: "1.1", interceptors: [bearerInterceptor(credentials.apiKey)] }));
  const { user } = await users.createUser({ name: "Persisted", email: "persisted@example.com", idempotencyKey: "persist-1" });
  const outbox = join(dataDir, "outbox");
  const welcomes = () => readdirSync(outbox).filter((f) => f.endsWith(".eml") && /To: persisted@example\.com/.test(readFileSync(join(outbox, f), "utf8")));
  await eventually(() => (welcomes().length > 0 ? true : undefined), "the welcome email in the outbox");

  await ctrlC(first);
  expect(first.output()).not.toMatch(/exited with code [1-9]/);

  const second = await npmStart();
  try {
    // The same credentials again, and the data survived.
    expect(JSON.parse(readFileSync(join(dataDir, "credentials.json"), "utf8"))).toEqual(credentials);
    expect((await users.getUser({ id: user!.id })).user?.email).toBe("persisted@example.com");
    // The outbox is idempotent across restarts: still exactly one welcome email.
    await new Promise((r) => setTimeout(r, 1_000));
    expect(welcomes()).toHaveLength(1);
  } finally {
    await ctrlC(second);
  }
});
