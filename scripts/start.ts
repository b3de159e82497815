/**
 * `npm start`: the whole system on one machine. Embedded Postgres, an embedded S3 server and a dev email outbox
 * stand in for DATABASE_URL, S3_ENDPOINT and RESEND_API_KEY when those are unset; then the five services start,
 * and once all are ready this prints their URLs and ready-to-paste `buf curl` commands. Ctrl-C stops everything
 * cleanly; the data under MCSV_DATA_DIR (default .data) survives a restart.
 */
import { resolve } from "node:path";
import sharp from "sharp";
import { SERVICES, SERVICE_KEYS, type ServiceKey } from "../services/shared/topology.js";
import { ROOT, startSystem } from "./lib/system.js";

const dataDir = resolve(ROOT, process.env["MCSV_DATA_DIR"] ?? ".data");
const width = Math.max(...SERVICE_KEYS.map((k) => SERVICES[k].name.length));
const colours: Record<ServiceKey, number> = { user: 36, job: 33, email: 35, image: 32, client: 34 };
const tty = process.stdout.isTTY === true;

function prefix(key: ServiceKey): string {
  const name = SERVICES[key].name.padEnd(width);
  return tty ? `\x1b[${colours[key]}m${name}\x1b[0m |` : `${name} |`;
}

console.log(`Starting mcsv (data in ${dataDir}) …`);
const system = await startSystem({
  dataDir,
  onLine: (key, line) => console.log(`${prefix(key)} ${line}`),
  ...(process.env["MCSV_PG_PORT"] ? { postgresPort: Number(process.env["MCSV_PG_PORT"]) } : {}),
  ...(process.env["MCSV_S3_PORT"] ? { s3Port: Number(process.env["MCSV_S3_PORT"]) } : {}),
}).catch((error: unknown) => {
  console.error(`mcsv could not start: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});

const user = system.urls.user;
const samplePng = (await sharp({ create: { width: 64, height: 48, channels: 3, background: "#3b82f6" } }).png().toBuffer()).toString("base64");
const curl = `npx buf curl -H "Authorization: Bearer ${system.credentials.apiKey}"`;
const internalCurl = `npx buf curl -H "Authorization: Bearer ${system.credentials.operatorToken}"`;
console.log(`
mcsv is ready.

  ${SERVICE_KEYS.map((k) => `${SERVICES[k].name.padEnd(width)}  ${system.urls[k]}`).join("\n  ")}

  Postgres     ${system.postgres ? `embedded, ${system.env["DATABASE_URL"]}` : "DATABASE_URL"}
  S3           ${system.s3 ? `embedded, ${system.env["S3_ENDPOINT"]} (bucket ${system.env["S3_BUCKET"] ?? "mcsv"})` : system.env["S3_ENDPOINT"]}
  Email        ${system.env["RESEND_API_KEY"] ? `Resend${system.env["RESEND_BASE_URL"] ? ` at ${system.env["RESEND_BASE_URL"]}` : ""}` : `dev outbox, ${system.env["EMAIL_OUTBOX_DIR"]}`}
  Console      ${user}/console/   (sign in with the API key of the commands below)
  API docs     ${user}/docs
  Callbacks    ${system.urls.client}/   (user name anything, password: the operator's credential)
  Credentials  ${process.env["MCSV_API_KEYS"] ? "MCSV_API_KEYS and MCSV_INTERNAL_TOKEN" : `dev credentials, kept in ${dataDir}/credentials.json`}
               each service holds only its own; the operator's (MCSV_INTERNAL_TOKEN) opens every internal method

Workflow 1, a user and the welcome email:

  ${curl} --data '{"name":"Ada Lovelace","email":"ada@example.com","idempotencyKey":"ada-1"}' \\
    ${user}/mcsv.v1.UserService/CreateUser

Workflow 2, an image to PDF (a PNG made on the spot, sent inline as base64):

  ${curl} --data '{"userEmail":"ada@example.com","filename":"blue.png","idempotencyKey":"blue-1","options":{"quality":"QUALITY_LOSSLESS"},"imageData":"${samplePng}"}' \\
    ${user}/mcsv.v1.UserService/ConvertImage

  ${curl} --data '{"conversionId":"<id from above>"}' ${user}/mcsv.v1.UserService/WatchConversion

  ${curl} --data '{"conversionId":"<id from above>"}' ${user}/mcsv.v1.UserService/GetConversion   # then: curl -o out.pdf "<pdfUrl>"

Documents, images as the pages of one A4 PDF/A with a title (add "ocrLanguages":["eng"] for searchable text):

  ${curl} --data '{"userEmail":"ada@example.com","filename":"two-pages.pdf","images":[{"imageData":"${samplePng}"},{"imageData":"${samplePng}"}],"options":{"layout":{"size":"PAGE_SIZE_A4","margin":36},"metadata":{"title":"Two pages"},"pdfa":true}}' \\
    ${user}/mcsv.v1.UserService/ConvertDocument

Every port answers Connect, gRPC (add --protocol grpc) and gRPC-Web, and lists itself through reflection:

  npx buf curl --list-services ${user}
  npx buf curl --list-methods ${user}

Internal services take the operator's credential, for example the queue:

  ${internalCurl} --data '{}' ${system.urls.job}/mcsv.v1.JobService/GetQueueStats

Press Ctrl-C to stop.
`);

let stopping = false;
async function stop(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  console.log(`\n${signal}: stopping mcsv …`);
  await system.stop();
  console.log("mcsv stopped.");
  process.exit(0);
}
process.on("SIGINT", () => void stop("SIGINT"));
process.on("SIGTERM", () => void stop("SIGTERM"));

// A service that dies on its own is reported; the others keep running so that the user can read what happened.
for (const proc of system.services.values()) {
  void proc.exited.then((code) => {
    if (!stopping) console.error(`${SERVICES[proc.key].name} exited with code ${code}`);
  });
}
