/**
 * The Kubernetes manifests, rendered by the real kustomize. The base (`kubectl kustomize deploy/k8s`): five Deployments
 * and Services on the topology's ports, HPAs for the image and job services, probes, Prometheus scrape annotations,
 * resources, a hardened pod spec, zone spreading, graceful termination long enough for the longest conversion,
 * network policies that allow exactly the calls the services make, and configuration that each service's own loader
 * accepts. The optional components (example-secret, keda, monitoring), rendered on top of the base in a throw-away
 * overlay as a user's overlay would. Skipped, with a message, only where kubectl is not installed.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { isIPv4 } from "node:net";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { PROMETHEUS_RULE_FILE, prometheusRule, ruleFiles } from "../../scripts/k8s-rules.js";
import { loadImageConfig } from "../../services/image/config.js";
import { jobPostgresConnections, loadJobConfig } from "../../services/job/config.js";
import { loadUserConfig, userPostgresConnections } from "../../services/user/config.js";
import { queueJobs } from "../../services/job/metrics.js";
import { JOB_STATES } from "../../services/job/model.js";
import { hexDigestOf } from "../../services/shared/auth.js";
import { TASK_NAMES } from "../../services/shared/tasks.js";
import { SERVICES, SERVICE_KEYS, type ServiceKey } from "../../services/shared/topology.js";
import { ROOT, parseYamlStream, readYaml, run, which } from "./support.js";

const KUBECTL = which("kubectl");
if (!KUBECTL) console.warn("kubectl is not installed: the Kubernetes manifests (deploy/k8s) are not rendered or checked");
const describeWithKubectl = KUBECTL ? describe : describe.skip;

interface Manifest {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [field: string]: any;
}

type Labels = Record<string, string>;

/** A Kubernetes memory quantity in bytes. */
function bytes(quantity: string): number {
  const match = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(quantity);
  if (!match) throw new Error(`not a memory quantity: ${quantity}`);
  const units: Record<string, number> = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, k: 1e3, M: 1e6, G: 1e9, T: 1e12 };
  return Number(match[1]) * (match[2] ? units[match[2]]! : 1);
}

/** Renders deploy/k8s with `components` (names under deploy/k8s/components) in a throw-away overlay, plus `extra`. */
async function render(components: string[], extra = ""): Promise<Manifest[]> {
  const dir = mkdtempSync(join(tmpdir(), "mcsv-k8s-"));
  try {
    // kustomize takes relative paths only; a directory outside the overlay is allowed, a file is not.
    const base = relative(dir, join(ROOT, "deploy/k8s"));
    const lines = [`resources: [${base}]`, `components: [${components.map((c) => `${base}/components/${c}`).join(", ")}]`, extra];
    writeFileSync(join(dir, "kustomization.yaml"), `${lines.join("\n")}\n`);
    const result = await run(KUBECTL!, ["kustomize", dir]);
    if (result.code !== 0) throw new Error(`kubectl kustomize (${components.join(", ")}) failed:\n${result.stderr}`);
    return parseYamlStream<Manifest>(result.stdout);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A Secret's values, from `data` (base64, as a secretGenerator writes them) and `stringData`. */
function secretValues(secret: Manifest): Record<string, string> {
  const values: Record<string, string> = { ...(secret["stringData"] ?? {}) };
  for (const [key, value] of Object.entries((secret["data"] ?? {}) as Record<string, string>)) values[key] = Buffer.from(value, "base64").toString("utf8");
  return values;
}

interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { secretKeyRef?: { name: string; key: string }; fieldRef?: { fieldPath: string } };
}

/**
 * The environment a Deployment's container would see: the ConfigMap (envFrom), then its env list in order, with
 * $(VAR) references expanded as the kubelet does, Secret keys read from `secret` and downward-API fields as
 * `<fieldPath>`.
 */
function containerEnv(manifests: Manifest[], key: ServiceKey): Record<string, string> {
  const configMap = manifests.find((m) => m.kind === "ConfigMap" && m.metadata.name.startsWith("mcsv-config"))!;
  const secret = manifests.find((m) => m.kind === "Secret");
  const secrets = secret ? secretValues(secret) : {};
  const env: Record<string, string> = { ...(configMap["data"] as Record<string, string>) };
  const deployment = manifests.find((m) => m.kind === "Deployment" && m.metadata.name === key)!;
  for (const e of deployment["spec"].template.spec.containers[0].env as EnvVar[]) {
    if (e.value !== undefined) env[e.name] = e.value.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (whole, name: string) => env[name] ?? whole);
    else if (e.valueFrom?.secretKeyRef) env[e.name] = secrets[e.valueFrom.secretKeyRef.key] ?? "";
    else if (e.valueFrom?.fieldRef) env[e.name] = `<${e.valueFrom.fieldRef.fieldPath}>`;
  }
  return env;
}

/** The names of the Secret keys a Deployment's container reads. */
function secretKeys(deployment: Manifest): string[] {
  return (deployment["spec"].template.spec.containers[0].env as EnvVar[]).flatMap((e) => (e.valueFrom?.secretKeyRef ? [e.valueFrom.secretKeyRef.key] : []));
}

/** Who calls whom, from the code: each service's `serviceUrl(config, "<peer>")` calls, plus the callback POSTs of the job service to in-cluster hosts of CALLBACK_ALLOWED_HOSTS. */
function serviceCalls(configMapData: Record<string, string>): [ServiceKey, ServiceKey][] {
  const calls = new Set<string>();
  for (const caller of SERVICE_KEYS) {
    const text = readFileSync(join(ROOT, `services/${caller}/service.ts`), "utf8");
    for (const [, callee] of text.matchAll(/serviceUrl\(\s*config\s*,\s*"(\w+)"\s*\)/g)) calls.add(`${caller}>${callee}`);
  }
  for (const host of (configMapData["CALLBACK_ALLOWED_HOSTS"] ?? "").split(",").map((h) => h.trim().replace(/:\d+$/, ""))) {
    if ((SERVICE_KEYS as string[]).includes(host)) calls.add(`job>${host}`);
  }
  return [...calls].map((c) => c.split(">") as [ServiceKey, ServiceKey]);
}

// ---- A NetworkPolicy evaluator: enough of the API's semantics to say whether the policies allow a connection. ----

interface LabelSelector {
  matchLabels?: Labels;
  matchExpressions?: { key: string; operator: "In" | "NotIn" | "Exists" | "DoesNotExist"; values?: string[] }[];
}

/** A pod (in some namespace) or an address outside the cluster. */
type Endpoint = { namespace: string; namespaceLabels: Labels; labels: Labels; ports: { name?: string; containerPort: number }[] } | { ip: string };
interface Target {
  protocol: "TCP" | "UDP";
  port: number;
}

const NAMESPACE = "mcsv";

function selects(selector: LabelSelector | undefined, labels: Labels): boolean {
  for (const [key, value] of Object.entries(selector?.matchLabels ?? {})) if (labels[key] !== value) return false;
  for (const { key, operator, values = [] } of selector?.matchExpressions ?? []) {
    const has = key in labels;
    if (operator === "In" && !(has && values.includes(labels[key]!))) return false;
    if (operator === "NotIn" && has && values.includes(labels[key]!)) return false;
    if (operator === "Exists" && !has) return false;
    if (operator === "DoesNotExist" && has) return false;
  }
  return true;
}

function inCidr(ip: string, cidr: string): boolean {
  const [network, bits] = cidr.split("/") as [string, string];
  if (!isIPv4(ip) || !isIPv4(network)) return false;
  const toInt = (a: string) => a.split(".").reduce((n, octet) => n * 256 + Number(octet), 0);
  const size = 2 ** (32 - Number(bits));
  return Math.floor(toInt(ip) / size) === Math.floor(toInt(network) / size);
}

function peerMatches(peer: any, endpoint: Endpoint): boolean {
  if (peer.ipBlock) return "ip" in endpoint && inCidr(endpoint.ip, peer.ipBlock.cidr) && !(peer.ipBlock.except ?? []).some((c: string) => inCidr(endpoint.ip, c));
  if ("ip" in endpoint) return false;
  const namespaceMatches = peer.namespaceSelector ? selects(peer.namespaceSelector, endpoint.namespaceLabels) : endpoint.namespace === NAMESPACE;
  return namespaceMatches && selects(peer.podSelector, endpoint.labels);
}

function portMatches(ports: any[] | undefined, target: Target, destination: Endpoint): boolean {
  if (!ports || ports.length === 0) return true;
  return ports.some((p) => {
    if ((p.protocol ?? "TCP") !== target.protocol) return false;
    if (p.port === undefined) return true;
    if (typeof p.port === "string") return "ports" in destination && destination.ports.some((c) => c.name === p.port && c.containerPort === target.port);
    return p.endPort ? target.port >= p.port && target.port <= p.endPort : target.port === p.port;
  });
}

/** Whether the policies of the mcsv namespace let `from` open a connection to `to` on `target`. */
function connects(policies: Manifest[], from: Endpoint, to: Endpoint, target: Target): boolean {
  const side = (pod: Endpoint, direction: "Ingress" | "Egress", peer: Endpoint) => {
    if ("ip" in pod || pod.namespace !== NAMESPACE) return true; // not governed by these policies
    const applying = policies.filter((p) => {
      const types: string[] = p["spec"].policyTypes ?? (p["spec"].egress ? ["Ingress", "Egress"] : ["Ingress"]);
      return types.includes(direction) && selects(p["spec"].podSelector, pod.labels);
    });
    if (applying.length === 0) return true; // no policy selects it: allowed
    const [rulesField, peersField] = direction === "Ingress" ? ["ingress", "from"] : ["egress", "to"];
    return applying.some((p) =>
      ((p["spec"][rulesField] ?? []) as any[]).some((rule) => (!rule[peersField] || rule[peersField].length === 0 || rule[peersField].some((x: any) => peerMatches(x, peer))) && portMatches(rule.ports, target, to)),
    );
  };
  return side(from, "Egress", to) && side(to, "Ingress", from);
}

/** The port of a URL, or its scheme's default. */
const urlPort = (url: string) => Number(new URL(url).port || (url.startsWith("https:") ? 443 : url.startsWith("postgres") ? 5432 : 80));

/** The text of a River (Alloy) block `header { ... }`, found by brace matching. */
function alloyBlock(text: string, header: string): string {
  const start = text.indexOf(`${header} {`);
  if (start < 0) throw new Error(`no block ${header}`);
  let depth = 0;
  for (let i = text.indexOf("{", start); i < text.length; i++) {
    if (text[i] === "{") depth++;
    if (text[i] === "}" && --depth === 0) return text.slice(text.indexOf("{", start) + 1, i);
  }
  throw new Error(`unterminated block ${header}`);
}

/** A loki.process body without comments, whitespace runs and its forward_to (which names each file's own writer). */
function processingStages(text: string): string {
  const name = /loki\.process "([^"]+)"/.exec(text)?.[1];
  if (!name) throw new Error("no loki.process block");
  return alloyBlock(text, `loki.process "${name}"`)
    .replace(/\/\/.*$/gm, "")
    .replace(/forward_to\s*=\s*\[[^\]]*\]/, "")
    .replace(/\s+/g, " ")
    .trim();
}

describeWithKubectl("kubectl kustomize deploy/k8s", () => {
  let manifests: Manifest[] = [];
  /** The base with every component, as a complete overlay would render it. */
  let full: Manifest[] = [];
  const of = (kind: string, from = manifests) => from.filter((m) => m.kind === kind);
  const named = (kind: string, name: string, from = manifests) => of(kind, from).find((m) => m.metadata.name === name)!;
  const configData = () => of("ConfigMap")[0]!["data"] as Record<string, string>;

  beforeAll(async () => {
    const result = await run(KUBECTL!, ["kustomize", "deploy/k8s"]);
    if (result.code !== 0) throw new Error(`kubectl kustomize failed:\n${result.stderr}`);
    manifests = parseYamlStream<Manifest>(result.stdout);
    full = await render(["example-secret", "keda", "monitoring"]);
  });

  test("renders five Deployments, five Services, two HPAs, a ConfigMap, network policies, the migration Job, and no Secret", () => {
    expect(of("Deployment").map((m) => m.metadata.name).sort()).toEqual([...SERVICE_KEYS].sort());
    expect(of("Service").map((m) => m.metadata.name).sort()).toEqual([...SERVICE_KEYS].sort());
    expect(of("HorizontalPodAutoscaler").map((m) => [m.apiVersion, m.metadata.name]).sort()).toEqual([
      ["autoscaling/v2", "image"],
      ["autoscaling/v2", "job"],
    ]);
    expect(of("ConfigMap")).toHaveLength(1);
    // `kubectl apply -k deploy/k8s` must never overwrite real secrets with placeholders.
    expect(of("Secret")).toEqual([]);
    expect(of("NetworkPolicy").length).toBeGreaterThan(0);
    expect(of("Job").map((m) => m.metadata.name)).toEqual(["mcsv-migrate"]);
    for (const m of [...manifests, ...full]) expect({ kind: m.kind, name: m.metadata.name, partOf: m.metadata.labels?.["app.kubernetes.io/part-of"] }).toEqual({ kind: m.kind, name: m.metadata.name, partOf: "mcsv" });
  });

  test.each(SERVICE_KEYS)("%s: image, port, probes, scrape annotations, resources and a hardened pod", (key: ServiceKey) => {
    const deployment = named("Deployment", key);
    const pod = deployment["spec"].template;
    const [container, ...others] = pod.spec.containers as any[];
    expect(others).toEqual([]);
    const port = SERVICES[key].port;

    expect(container.image).toBe("mcsv:latest");
    expect(container.env).toEqual(expect.arrayContaining([{ name: "SERVICE", value: key }]));
    expect(container.ports).toEqual([{ name: "http", containerPort: port, protocol: "TCP" }]);
    expect(container.livenessProbe.httpGet).toEqual({ path: "/health", port: "http" });
    // Readiness through Kubernetes' native gRPC probe: grpc.health.v1.Health, which follows the readiness checks.
    expect(container.readinessProbe.grpc).toEqual({ port });
    expect(container.startupProbe.httpGet).toEqual({ path: "/health", port: "http" });
    expect(pod.metadata.annotations).toEqual(expect.objectContaining({ "prometheus.io/scrape": "true", "prometheus.io/port": String(port), "prometheus.io/path": "/metrics" }));

    for (const kind of ["requests", "limits"]) expect(Object.keys(container.resources[kind]).sort()).toEqual(["cpu", "memory"]);
    expect(bytes(container.resources.requests.memory)).toBeLessThanOrEqual(bytes(container.resources.limits.memory));

    expect(pod.spec.securityContext).toEqual(expect.objectContaining({ runAsNonRoot: true, seccompProfile: { type: "RuntimeDefault" } }));
    expect(container.securityContext).toEqual({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ["ALL"] } });
    expect(container.volumeMounts).toEqual(expect.arrayContaining([{ name: "tmp", mountPath: "/tmp" }]));
    expect(pod.spec.automountServiceAccountToken).toBe(false);

    // The Service selects exactly this Deployment's pods and exposes the topology port under the same name as peers use.
    const service = named("Service", key);
    expect(deployment["spec"].selector.matchLabels).toEqual(service["spec"].selector);
    for (const [label, value] of Object.entries(service["spec"].selector as Record<string, string>)) expect(pod.metadata.labels[label]).toBe(value);
    expect(service["spec"].ports).toEqual([expect.objectContaining({ name: "http", port, targetPort: "http" })]);
  });

  test.each(SERVICE_KEYS)("%s: spread over zones, as a preference (a single-zone cluster still schedules)", (key: ServiceKey) => {
    const deployment = named("Deployment", key);
    const pods = deployment["spec"].selector.matchLabels as Labels;
    expect(deployment["spec"].template.spec.topologySpreadConstraints).toEqual(
      expect.arrayContaining([expect.objectContaining({ topologyKey: "topology.kubernetes.io/zone", whenUnsatisfiable: "ScheduleAnyway", maxSkew: 1, labelSelector: { matchLabels: pods } })]),
    );
  });

  test("every PodDisruptionBudget selects one Deployment's pods and lets a drain evict unhealthy ones", () => {
    expect(of("PodDisruptionBudget").length).toBeGreaterThan(0);
    for (const pdb of of("PodDisruptionBudget")) {
      expect(pdb["spec"].unhealthyPodEvictionPolicy).toBe("AlwaysAllow");
      expect(of("Deployment").filter((d) => selects(pdb["spec"].selector, d["spec"].template.metadata.labels))).toHaveLength(1);
    }
  });

  test("image-svc stays within 1.5Gi of memory, and the HPAs own the image and job replica counts", () => {
    const image = named("Deployment", "image")["spec"].template.spec.containers[0];
    expect(bytes(image.resources.limits.memory)).toBeLessThanOrEqual(bytes("1536Mi"));
    for (const key of ["image", "job"]) {
      const hpa = named("HorizontalPodAutoscaler", key)["spec"];
      expect(hpa.scaleTargetRef).toEqual({ apiVersion: "apps/v1", kind: "Deployment", name: key });
      expect(hpa.minReplicas).toBeGreaterThanOrEqual(2);
      expect(hpa.maxReplicas).toBeGreaterThan(hpa.minReplicas);
      expect(hpa.metrics).toEqual([{ type: "Resource", resource: { name: "cpu", target: { type: "Utilization", averageUtilization: expect.any(Number) } } }]);
      expect(named("Deployment", key)["spec"].replicas).toBeUndefined();
    }
    // The client service keeps its events in memory: one replica.
    expect(named("Deployment", "client")["spec"].replicas).toBe(1);
  });

  test.each(SERVICE_KEYS)("%s: the kubelet waits for the graceful shutdown, which outlasts the longest conversion", (key: ServiceKey) => {
    const pod = named("Deployment", key)["spec"].template.spec;
    const container = pod.containers[0];
    const [command, seconds] = container.lifecycle.preStop.exec.command as string[];
    expect(command).toBe("sleep");
    const preStopMs = Number(seconds) * 1000;
    const env: Record<string, string> = { ...containerEnv(full, key), MCSV_OPERATOR_TOKEN_SHA256: hexDigestOf("operator"), MCSV_SERVICE_TOKEN_SHA256S: `user=${hexDigestOf("user")},job=${hexDigestOf("job")}` };
    // The services' own loaders: their defaults apply where the manifests set nothing.
    const graceMs = key === "image" ? loadImageConfig(env).SHUTDOWN_GRACE_MS : key === "job" ? loadJobConfig(env).SHUTDOWN_GRACE_MS : Number(env["SHUTDOWN_GRACE_MS"]);
    expect(graceMs).toBeGreaterThan(0);
    // SIGTERM comes after the preStop; the process then drains for up to SHUTDOWN_GRACE_MS and needs a few seconds to
    // flush spans and close its pools before the kubelet's SIGKILL.
    expect(pod.terminationGracePeriodSeconds * 1000).toBeGreaterThanOrEqual(preStopMs + graceMs + 5_000);

    // The longest conversion: one ImageService.ConvertImage call, cut off by the job service's CONVERT_TIMEOUT_MS.
    const jobEnv = { ...containerEnv(full, "job"), MCSV_OPERATOR_TOKEN_SHA256: env["MCSV_OPERATOR_TOKEN_SHA256"], MCSV_SERVICE_TOKEN_SHA256S: env["MCSV_SERVICE_TOKEN_SHA256S"] };
    const longestConversionMs = loadJobConfig(jobEnv).CONVERT_TIMEOUT_MS;
    // The image pod finishes a conversion in flight; the job pod's running tasks are aborted 2 s before its grace
    // ends (services/job/service.ts), so its grace covers the conversion plus those 2 s.
    if (key === "image") expect(graceMs).toBeGreaterThanOrEqual(longestConversionMs);
    if (key === "job") expect(graceMs - 2_000).toBeGreaterThanOrEqual(longestConversionMs);
  });

  test("configuration: peers by Service name, S3 and OTLP endpoints, from the generated ConfigMap", () => {
    const configMap = of("ConfigMap")[0]!;
    const data = configMap["data"] as Record<string, string>;
    for (const key of SERVICE_KEYS) expect(data[`${key.toUpperCase()}_URL`]).toBe(`http://${key}:${SERVICES[key].port}`);
    expect(data).toEqual(expect.objectContaining({ S3_BUCKET: "mcsv", S3_ENDPOINT: expect.stringMatching(/^https?:\/\//), OTEL_EXPORTER_OTLP_ENDPOINT: expect.stringMatching(/:4318$/), LOG_FORMAT: "json" }));
    expect(configMap.metadata.name).toMatch(/^mcsv-config-[a-z0-9]+$/); // hashed: a change rolls the Deployments
    // The gateway checks callback URLs with it, the job service again before each POST: both load this one list.
    expect(data["CALLBACK_ALLOWED_HOSTS"]).toBe("client");
    for (const deployment of of("Deployment")) {
      expect(deployment["spec"].template.spec.containers[0].envFrom).toEqual([{ configMapRef: { name: configMap.metadata.name } }]);
    }
  });

  test.each(SERVICE_KEYS)("%s: spans carry the pod's name and namespace (OTEL_RESOURCE_ATTRIBUTES from the downward API)", (key: ServiceKey) => {
    const env = named("Deployment", key)["spec"].template.spec.containers[0].env as EnvVar[];
    const index = env.findIndex((e) => e.name === "OTEL_RESOURCE_ATTRIBUTES");
    expect(index).toBeGreaterThanOrEqual(0);
    // The kubelet expands $(VAR) only for variables defined earlier in the list.
    const earlier = new Map(env.slice(0, index).map((e) => [e.name, e]));
    const attributes = Object.fromEntries(
      env[index]!.value!.split(",").map((pair) => {
        const [name, value] = pair.split("=") as [string, string];
        const reference = /^\$\((\w+)\)$/.exec(value)?.[1];
        return [name, reference ? earlier.get(reference)?.valueFrom?.fieldRef?.fieldPath : value];
      }),
    );
    expect(attributes).toEqual(expect.objectContaining({ "k8s.pod.name": "metadata.name", "k8s.namespace.name": "metadata.namespace" }));
  });

  test("migrations are a pre-deploy Job (gateway, then job service, with the DDL role's URL); the services only check them", () => {
    const job = named("Job", "mcsv-migrate")["spec"].template.spec;
    const steps = [...job.initContainers, ...job.containers] as Array<{ name: string; image: string; args: string[]; env: EnvVar[] }>;
    expect(steps.map((c) => [c.name, c.args.join(" "), c.env.find((e) => e.name === "SERVICE")?.value])).toEqual([
      ["user", "deploy/start-service.sh migrate", "user"],
      ["job", "deploy/start-service.sh migrate", "job"],
    ]);
    for (const step of steps) {
      expect(step.image).toBe(named("Deployment", "user")["spec"].template.spec.containers[0].image);
      expect(step.env.find((e) => e.name === "MIGRATION_DATABASE_URL")?.valueFrom?.secretKeyRef).toMatchObject({ key: "MIGRATION_DATABASE_URL" });
    }
    // The start script's migrate command exists for both (the production build's test runs the compiled services).
    const start = readFileSync(join(ROOT, "deploy/start-service.sh"), "utf8");
    expect(start).toContain('"${1:-}" = "migrate"');
    for (const key of ["user", "job"] as const) expect(existsSync(join(ROOT, "services", key, "migrate.ts"))).toBe(true);
    // Every service that keeps state in Postgres starts without migrating, as its own loader reads the config.
    for (const key of ["user", "job"] as const) {
      const env = { ...containerEnv(full, key), MCSV_OPERATOR_TOKEN_SHA256: hexDigestOf("operator"), MCSV_SERVICE_TOKEN_SHA256S: `user=${hexDigestOf("user")},job=${hexDigestOf("job")}` };
      const migrateOnStart = key === "user" ? loadUserConfig(env).MIGRATE_ON_START : loadJobConfig(env).MIGRATE_ON_START;
      expect({ key, migrateOnStart }).toEqual({ key, migrateOnStart: false });
    }
  });

  test("sizing from measurement: memory requests equal limits; the image pod's pixel cap fits what the bench measured at 12 MP", () => {
    for (const key of SERVICE_KEYS) {
      const { requests, limits } = named("Deployment", key)["spec"].template.spec.containers[0].resources;
      expect({ key, memory: requests.memory }).toEqual({ key, memory: limits.memory });
    }
    const image = named("Deployment", "image")["spec"].template.spec;
    expect(image.containers[0].resources.requests).toEqual(image.containers[0].resources.limits);
    const secrets = { MCSV_OPERATOR_TOKEN_SHA256: hexDigestOf("operator"), MCSV_SERVICE_TOKEN_SHA256S: `user=${hexDigestOf("user")},job=${hexDigestOf("job")}` };
    const config = loadImageConfig({ ...containerEnv(full, "image"), ...secrets });
    // B1 converts its 12 MP images (4000×3000) B1.concurrency at a time; B5 reports the peak of the image service with
    // its ImageMagick children meanwhile. Taken whole as one conversion's (an upper bound), the pod's conversions at
    // once up to that size fit its memory with 10 % to spare.
    const bench = JSON.parse(readFileSync(join(ROOT, "bench/results/latest.json"), "utf8")) as { b1: { concurrency: number; memory12MP: { imageTreePeakMb: number } } };
    const measuredPixels = 4000 * 3000;
    const perConversionMb = bench.b1.memory12MP.imageTreePeakMb;
    expect(config.IMAGE_MAX_PIXELS).toBeLessThanOrEqual(measuredPixels);
    // Nothing queues inside a pod (the backlog stays in Postgres): a drain has only what runs to finish.
    expect({ concurrency: config.IMAGE_CONCURRENCY, waiting: config.IMAGE_MAX_WAITING }).toEqual({ concurrency: 1, waiting: 0 });
    // A document also holds up to three times its PDF (its encoded pages, the PDF, OCR's copy) beside a page's decode.
    const documentBytes = 3 * config.IMAGE_MAX_OUTPUT_BYTES;
    expect(config.IMAGE_CONCURRENCY * (perConversionMb * 1.1 * 2 ** 20 + documentBytes)).toBeLessThanOrEqual(bytes(image.containers[0].resources.limits.memory));
    // ImageMagick's pixel cache may spill to disk only as far as the pod's /tmp holds.
    const tmp = (image.volumes as Array<{ name: string; emptyDir?: { sizeLimit: string } }>).find((v) => v.name === "tmp")!.emptyDir!.sizeLimit;
    expect(bytes(config.IMAGEMAGICK_LIMIT_DISK.replace(/iB$/, "i").replace(/B$/, ""))).toBeLessThanOrEqual(bytes(tmp));
  });

  test("the Postgres connection budget: at every Deployment's most replicas plus its surge, and the migration Job, within 100 less 3 reserved", () => {
    const secrets = { MCSV_OPERATOR_TOKEN_SHA256: hexDigestOf("operator"), MCSV_SERVICE_TOKEN_SHA256S: `user=${hexDigestOf("user")},job=${hexDigestOf("job")}` };
    const perPod = {
      user: userPostgresConnections(loadUserConfig({ ...containerEnv(full, "user"), ...secrets })),
      job: jobPostgresConnections(loadJobConfig({ ...containerEnv(full, "job"), ...secrets })),
    };
    const mostPods = (key: ServiceKey) => {
      const deployment = named("Deployment", key);
      const hpa = of("HorizontalPodAutoscaler").find((h) => h["spec"].scaleTargetRef.name === key);
      return (hpa ? hpa["spec"].maxReplicas : deployment["spec"].replicas) + Number(deployment["spec"].strategy.rollingUpdate.maxSurge);
    };
    // The migration Job: the gateway's migrations (node-pg-migrate's one connection), then the job service's (a pool
    // of two for graphile-worker's, and node-pg-migrate's one), one after the other.
    const migrations = 3;
    const budget = { user: mostPods("user") * perPod.user, job: mostPods("job") * perPod.job, migrations };
    expect(budget.user + budget.job + budget.migrations).toBeLessThanOrEqual(100 - 3);
    // What the table in docs/deployment.md says.
    const doc = readFileSync(join(ROOT, "docs/deployment.md"), "utf8");
    for (const key of ["user", "job"] as const) {
      expect(doc).toContain(`| ${key} | ${perPod[key]} | ${mostPods(key)} | ${budget[key]} |`);
    }
    expect(doc).toContain(`| **all** | | | **${budget.user + budget.job + budget.migrations}** |`);
  });

  describe("the Secret: outside the base, generated by components/example-secret", () => {
    test("placeholders only, every referenced key present, each service given only the keys it needs", () => {
      const secret = of("Secret", full)[0]!;
      expect(of("Secret", full)).toHaveLength(1);
      const values = secretValues(secret);
      expect(Object.keys(values).sort()).toEqual([
        "DATABASE_URL",
        "MCSV_API_KEYS",
        "MCSV_INTERNAL_TOKEN",
        "MCSV_JOB_SERVICE_TOKEN",
        "MCSV_OPERATOR_TOKEN_SHA256",
        "MCSV_SERVICE_TOKEN_SHA256S",
        "MCSV_USER_SERVICE_TOKEN",
        "RESEND_API_KEY",
        "S3_ACCESS_KEY_ID",
        "S3_SECRET_ACCESS_KEY",
      ]);
      for (const [key, value] of Object.entries(values)) expect({ key, placeholder: value === "" || value.includes("REPLACE_ME") }).toEqual({ key, placeholder: true });
      const refs = (key: string) =>
        (named("Deployment", key, full)["spec"].template.spec.containers[0].env as EnvVar[])
          .filter((e) => e.valueFrom?.secretKeyRef)
          .map((e) => {
            // The generated (hashed) name, which kustomize wrote into every reference.
            expect(e.valueFrom!.secretKeyRef!.name).toBe(secret.metadata.name);
            expect(Object.keys(values)).toContain(e.valueFrom!.secretKeyRef!.key);
            return e.name;
          })
          .sort();
      expect(refs("email")).not.toContain("DATABASE_URL");
      // Digests for all; its own credential only for a service that calls others; the operator's for none.
      expect(refs("client")).toEqual(["MCSV_OPERATOR_TOKEN_SHA256", "MCSV_SERVICE_TOKEN_SHA256S"]);
      for (const key of SERVICE_KEYS) expect(refs(key)).not.toContain("MCSV_INTERNAL_TOKEN");
      expect(refs("user")).toContain("MCSV_SERVICE_TOKEN");
      expect(refs("job")).toContain("MCSV_SERVICE_TOKEN");
      expect(refs("image")).not.toContain("MCSV_SERVICE_TOKEN");
      expect(refs("image")).not.toContain("DATABASE_URL");
      expect(refs("user")).toEqual(expect.arrayContaining(["DATABASE_URL", "MCSV_API_KEYS"]));
      expect(refs("job")).toContain("DATABASE_URL");
      // Without the component, the base references the fixed name that External Secrets or Sealed Secrets would create.
      for (const deployment of of("Deployment")) {
        for (const e of deployment["spec"].template.spec.containers[0].env as EnvVar[]) if (e.valueFrom?.secretKeyRef) expect(e.valueFrom.secretKeyRef.name).toBe("mcsv-secrets");
      }
    });

    test("a changed value gives the Secret a new name, and the Deployments follow it: the pods roll", async () => {
      const before = of("Secret", full)[0]!.metadata.name;
      expect(before).toMatch(/^mcsv-secrets-[a-z0-9]+$/);
      // One value changed, as an overlay's patch would change it (the overlay's own generators run before components).
      const value = Buffer.from("re_changed").toString("base64");
      const changed = await render(["example-secret"], `patches:\n  - target: { kind: Secret }\n    patch: '[{"op": "replace", "path": "/data/RESEND_API_KEY", "value": "${value}"}]'\n`);
      const after = of("Secret", changed)[0]!.metadata.name;
      expect(after).toMatch(/^mcsv-secrets-[a-z0-9]+$/);
      expect(after).not.toBe(before);
      for (const deployment of of("Deployment", changed)) {
        const names = new Set((deployment["spec"].template.spec.containers[0].env as EnvVar[]).flatMap((e) => (e.valueFrom?.secretKeyRef ? [e.valueFrom.secretKeyRef.name] : [])));
        expect([...names]).toEqual([after]);
      }
    });
  });

  test.each(SERVICE_KEYS)("%s: its own configuration loader accepts the rendered environment", async (key: ServiceKey) => {
    const env = containerEnv(full, key);
    // The Secret holds placeholders; `npm run credentials` makes the real ones, digests included.
    env["MCSV_OPERATOR_TOKEN_SHA256"] = hexDigestOf("operator");
    env["MCSV_SERVICE_TOKEN_SHA256S"] = `user=${hexDigestOf("user")},job=${hexDigestOf("job")}`;
    const name = `load${key[0]!.toUpperCase()}${key.slice(1)}Config`;
    const module = (await import(`../../services/${key}/config.js`)) as Record<string, (env: NodeJS.ProcessEnv) => unknown>;
    expect(() => module[name]!(env)).not.toThrow();
  });

  describe("network policies", () => {
    const policies = () => of("NetworkPolicy");
    const pod = (key: ServiceKey): Endpoint => {
      const template = named("Deployment", key)["spec"].template;
      return { namespace: NAMESPACE, namespaceLabels: { "kubernetes.io/metadata.name": NAMESPACE }, labels: template.metadata.labels, ports: template.spec.containers[0].ports };
    };
    const podIn = (namespace: string, labels: Labels): Endpoint => ({ namespace, namespaceLabels: { "kubernetes.io/metadata.name": namespace }, labels, ports: [] });
    const tcp = (port: number): Target => ({ protocol: "TCP", port });
    const internet: Endpoint = { ip: "203.0.113.7" };
    const reads = (key: ServiceKey, secretKey: string) => secretKeys(named("Deployment", key)).includes(secretKey);

    test("a default deny, ingress and egress, covers every mcsv pod", () => {
      const denies = policies().filter((p) => {
        const spec = p["spec"];
        return ["Ingress", "Egress"].every((t) => (spec.policyTypes ?? []).includes(t)) && !spec.ingress?.length && !spec.egress?.length;
      });
      expect(denies.length).toBeGreaterThan(0);
      for (const key of SERVICE_KEYS) expect({ key, denied: denies.some((p) => selects(p["spec"].podSelector, named("Deployment", key)["spec"].template.metadata.labels)) }).toEqual({ key, denied: true });
    });

    test("every call the services make is allowed; every other call between them is refused", () => {
      const calls = serviceCalls(configData());
      expect(calls.length).toBeGreaterThan(0);
      const allowed = new Set(calls.map(([from, to]) => `${from}>${to}`));
      for (const from of SERVICE_KEYS) {
        for (const to of SERVICE_KEYS) {
          if (from === to) continue;
          const call = `${from}>${to}`;
          expect({ call, allowed: connects(policies(), pod(from), pod(to), tcp(SERVICES[to].port)) }).toEqual({ call, allowed: allowed.has(call) });
        }
      }
    });

    test("the gateway alone is public; Prometheus in the namespace monitoring scrapes every pod", () => {
      for (const key of SERVICE_KEYS) {
        const port = tcp(SERVICES[key].port);
        const isPublic = key === "user";
        expect({ key, fromInternet: connects(policies(), internet, pod(key), port), fromOtherNamespace: connects(policies(), podIn("default", { app: "curious" }), pod(key), port) }).toEqual({
          key,
          fromInternet: isPublic,
          fromOtherNamespace: isPublic,
        });
        expect({ key, scraped: connects(policies(), podIn("monitoring", { "app.kubernetes.io/name": "prometheus" }), pod(key), port) }).toEqual({ key, scraped: true });
        // Only its own port: nothing else on the pod is reachable from outside.
        expect(connects(policies(), podIn("monitoring", { "app.kubernetes.io/name": "prometheus" }), pod(key), tcp(9229))).toBe(false);
      }
    });

    test("egress: DNS, OTLP, Postgres and S3 for the services that use them, Resend for email, callbacks for job", () => {
      const data = configData();
      const databasePort = urlPort(secretValues(of("Secret", full)[0]!)["DATABASE_URL"]!);
      const s3Ports = [urlPort(data["S3_ENDPOINT"]!), 443];
      const otlpPort = urlPort(data["OTEL_EXPORTER_OTLP_ENDPOINT"]!);
      const kubeDns = podIn("kube-system", { "k8s-app": "kube-dns" });
      const database: Endpoint = { ip: "10.20.0.5" };
      const s3: Endpoint = { ip: "10.30.0.7" };
      const collector: Endpoint = { ip: "10.40.0.9" };
      expect(SERVICE_KEYS.filter((k) => reads(k, "DATABASE_URL")).length).toBeGreaterThan(0);
      expect(SERVICE_KEYS.filter((k) => reads(k, "S3_SECRET_ACCESS_KEY")).length).toBeGreaterThan(0);
      for (const key of SERVICE_KEYS) {
        const from = pod(key);
        expect({ key, udp: connects(policies(), from, kubeDns, { protocol: "UDP", port: 53 }), tcp: connects(policies(), from, kubeDns, tcp(53)) }).toEqual({ key, udp: true, tcp: true });
        // DNS goes to the cluster's resolver, not to any server on the Internet.
        expect(connects(policies(), from, internet, { protocol: "UDP", port: 53 })).toBe(false);
        expect({ key, otlp: connects(policies(), from, collector, tcp(otlpPort)) }).toEqual({ key, otlp: true });
        expect({ key, postgres: connects(policies(), from, database, tcp(databasePort)) }).toEqual({ key, postgres: reads(key, "DATABASE_URL") });
        for (const port of s3Ports) expect({ key, port, s3: connects(policies(), from, s3, tcp(port)) }).toEqual({ key, port, s3: reads(key, "S3_SECRET_ACCESS_KEY") || (port === 443 && (reads(key, "RESEND_API_KEY") || key === "job")) });
        // Resend for the service that holds its key, callbacks for the job service; nothing else goes out.
        expect({ key, https: connects(policies(), from, internet, tcp(443)) }).toEqual({ key, https: reads(key, "RESEND_API_KEY") || reads(key, "S3_SECRET_ACCESS_KEY") || key === "job" });
        for (const port of [22, 80, 6379]) expect({ key, port, open: connects(policies(), from, internet, tcp(port)) }).toEqual({ key, port, open: false });
      }
      // Sanity of the derivation above: email holds Resend's key, image holds S3's and no database's.
      expect([reads("email", "RESEND_API_KEY"), reads("image", "S3_SECRET_ACCESS_KEY"), reads("image", "DATABASE_URL")]).toEqual([true, true, false]);
    });
  });

  describe("components/keda", () => {
    let keda: Manifest[] = [];
    beforeAll(async () => {
      keda = await render(["keda"]);
    });

    test("replaces the HPAs by ScaledObjects with the same bounds, pace and CPU target", () => {
      expect(of("HorizontalPodAutoscaler", keda)).toEqual([]);
      expect(of("ScaledObject", keda).map((m) => m.metadata.name).sort()).toEqual(["image", "job"]);
      for (const key of ["image", "job"]) {
        const hpa = named("HorizontalPodAutoscaler", key)["spec"];
        const scaled = named("ScaledObject", key, keda);
        expect(scaled.apiVersion).toBe("keda.sh/v1alpha1");
        expect(scaled["spec"].scaleTargetRef).toEqual(hpa.scaleTargetRef);
        expect([scaled["spec"].minReplicaCount, scaled["spec"].maxReplicaCount]).toEqual([hpa.minReplicas, hpa.maxReplicas]);
        // It adopts the live HPA of the same name instead of adding a second autoscaler.
        expect(scaled.metadata.annotations?.["scaledobject.keda.sh/transfer-hpa-ownership"]).toBe("true");
        expect(scaled["spec"].advanced.horizontalPodAutoscalerConfig).toEqual({ name: key, behavior: hpa.behavior });
        const cpu = (scaled["spec"].triggers as any[]).find((t) => t.type === "cpu");
        expect(cpu).toEqual({ type: "cpu", metricType: "Utilization", metadata: { value: String(hpa.metrics[0].resource.target.averageUtilization) } });
      }
    });

    test("scales on mcsv_queue_jobs as the job service exports it, one pod per process's concurrency", () => {
      const secrets = { MCSV_OPERATOR_TOKEN_SHA256: hexDigestOf("operator"), MCSV_SERVICE_TOKEN_SHA256S: `user=${hexDigestOf("user")},job=${hexDigestOf("job")}` };
      const concurrency = {
        image: loadImageConfig({ ...containerEnv(full, "image"), ...secrets }).IMAGE_CONCURRENCY,
        job: loadJobConfig({ ...containerEnv(full, "job"), ...secrets }).JOB_CONCURRENCY,
      };
      const labelNames = (queueJobs as unknown as { labelNames: string[] }).labelNames;
      expect(labelNames).toEqual(["task", "state"]);
      for (const key of ["image", "job"] as const) {
        const triggers = named("ScaledObject", key, keda)["spec"].triggers as any[];
        const prometheus = triggers.filter((t) => t.type === "prometheus");
        expect(prometheus).toHaveLength(1);
        const { query, threshold, serverAddress } = prometheus[0].metadata;
        expect(serverAddress).toMatch(/^https?:\/\//);
        expect(Number(threshold)).toBe(concurrency[key]);
        // Every replica reports the same counts: max across them, never a sum of copies.
        expect(query).toMatch(/\bmax\b/);
        const selectors = [...(query as string).matchAll(/mcsv_queue_jobs\{([^}]*)\}/g)].map((m) => m[1]!);
        expect(selectors).toHaveLength(1);
        const matchers = Object.fromEntries([...selectors[0]!.matchAll(/(\w+)\s*(=~|=)\s*"([^"]*)"/g)].map(([, label, op, value]) => [label, { op, values: value!.split("|") }]));
        for (const label of Object.keys(matchers)) expect(labelNames).toContain(label);
        for (const state of matchers["state"]!.values) expect(JOB_STATES).toContain(state);
        expect(matchers["state"]!.values).toContain("available");
        if (key === "image") expect(matchers["task"]).toEqual({ op: "=", values: ["convert_image"] });
        else expect(matchers["task"]).toBeUndefined();
        for (const task of matchers["task"]?.values ?? []) expect(TASK_NAMES).toContain(task);
      }
    });
  });

  describe("components/monitoring", () => {
    test("a PodMonitor scrapes every service's /metrics on its port, OpenMetrics first, with the operator's credential", () => {
      const monitors = of("PodMonitor", full);
      expect(monitors.map((m) => m.apiVersion)).toEqual(["monitoring.coreos.com/v1"]);
      const spec = monitors[0]!["spec"];
      for (const deployment of of("Deployment", full)) {
        const template = deployment["spec"].template;
        expect({ deployment: deployment.metadata.name, selected: selects(spec.selector, template.metadata.labels) }).toEqual({ deployment: deployment.metadata.name, selected: true });
        const [endpoint] = spec.podMetricsEndpoints as any[];
        expect(template.spec.containers[0].ports.map((p: { name: string }) => p.name)).toContain(endpoint.port);
        expect(endpoint.path).toBe(template.metadata.annotations["prometheus.io/path"]);
      }
      // The same protocols, in the same order, as the laptop stack's scrape job.
      const compose = readYaml<{ scrape_configs: { job_name: string; scrape_protocols: string[] }[] }>("deploy/prometheus/prometheus.yml").scrape_configs.find((c) => c.job_name === "mcsv")!;
      expect(spec.scrapeProtocols[0]).toBe("OpenMetricsText1.0.0");
      expect(spec.scrapeProtocols).toEqual(compose.scrape_protocols);
      const secret = of("Secret", full)[0]!;
      const credentials = spec.podMetricsEndpoints[0].authorization.credentials;
      expect(credentials.name).toBe(secret.metadata.name);
      expect(Object.keys(secretValues(secret))).toContain(credentials.key);
    });

    test(`${PROMETHEUS_RULE_FILE} is what \`npm run k8s:rules\` writes today (regenerate after editing deploy/prometheus/rules)`, () => {
      expect(readFileSync(join(ROOT, PROMETHEUS_RULE_FILE), "utf8")).toBe(prometheusRule());
    });

    test("the rendered PrometheusRule holds exactly the groups of deploy/prometheus/rules/*.yml", () => {
      const rules = of("PrometheusRule", full);
      expect(rules.map((m) => m.apiVersion)).toEqual(["monitoring.coreos.com/v1"]);
      const files = ruleFiles();
      expect(files.length).toBeGreaterThan(0);
      expect(rules[0]!["spec"].groups).toEqual(files.flatMap((f) => f.groups));
    });

    test("Alloy reads the mcsv pods' logs and labels them as the laptop stack does, so trace-to-logs works", () => {
      const k8s = readFileSync(join(ROOT, "deploy/k8s/components/monitoring/config.alloy"), "utf8");
      const compose = readFileSync(join(ROOT, "deploy/alloy/config.alloy"), "utf8");
      // Identical parsing: the same labels (service, level), structured metadata (trace_id, span_id) and timestamp.
      expect(processingStages(k8s)).toBe(processingStages(compose));
      const discovery = alloyBlock(k8s, 'discovery.kubernetes "mcsv"');
      expect(discovery).toMatch(/role\s*=\s*"pod"/);
      const label = /label\s*=\s*"([^"=]+)=([^"]+)"/.exec(discovery);
      for (const deployment of of("Deployment", full)) expect(deployment["spec"].template.metadata.labels[label![1]!]).toBe(label![2]);
      const relabeled = Object.fromEntries([...alloyBlock(k8s, 'discovery.relabel "mcsv"').matchAll(/source_labels\s*=\s*\["([^"]+)"\]\s*target_label\s*=\s*"([^"]+)"/g)].map(([, source, target]) => [target, source]));
      expect(relabeled).toEqual({ namespace: "__meta_kubernetes_namespace", pod: "__meta_kubernetes_pod_name", container: "__meta_kubernetes_pod_container_name" });
      expect(alloyBlock(k8s, 'loki.source.kubernetes "mcsv"')).toMatch(/targets\s*=\s*discovery\.relabel\.mcsv\.output/);
      // Grafana's trace-to-logs link looks logs up by these labels: each must be one that Alloy sets.
      const labels = [...alloyBlock(alloyBlock(k8s, 'loki.process "mcsv"'), "stage.labels").matchAll(/(\w+)\s*=\s*""/g)].map((m) => m[1]);
      const datasources = readYaml<{ datasources: { type: string; jsonData?: { tracesToLogsV2?: { tags?: { key: string; value?: string }[] } } }[] }>("grafana/provisioning/datasources/datasources.yaml").datasources;
      const tags = datasources.flatMap((d) => d.jsonData?.tracesToLogsV2?.tags ?? []);
      expect(tags.length).toBeGreaterThan(0);
      for (const tag of tags) expect([...labels, ...Object.keys(relabeled)]).toContain(tag.value ?? tag.key);
    });
  });
});
