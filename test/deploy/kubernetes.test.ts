/**
 * The Kubernetes base, rendered by the real kustomize (`kubectl kustomize deploy/k8s`): five Deployments and Services
 * on the topology's ports, HPAs for the image and job services, probes, Prometheus scrape annotations, resources, a
 * hardened pod spec, and configuration that each service's own loader accepts. Skipped, with a message, only where
 * kubectl is not installed.
 */
import { hexDigestOf } from "../../services/shared/auth.js";
import { SERVICES, SERVICE_KEYS, type ServiceKey } from "../../services/shared/topology.js";
import { parseYamlStream, run, which } from "./support.js";

const KUBECTL = which("kubectl");
if (!KUBECTL) console.warn("kubectl is not installed: the Kubernetes manifests (deploy/k8s) are not rendered or checked");
const describeWithKubectl = KUBECTL ? describe : describe.skip;

interface Manifest {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string> };
  [field: string]: any;
}

/** A Kubernetes memory quantity in bytes. */
function bytes(quantity: string): number {
  const match = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(quantity);
  if (!match) throw new Error(`not a memory quantity: ${quantity}`);
  const units: Record<string, number> = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, k: 1e3, M: 1e6, G: 1e9, T: 1e12 };
  return Number(match[1]) * (match[2] ? units[match[2]]! : 1);
}

describeWithKubectl("kubectl kustomize deploy/k8s", () => {
  let manifests: Manifest[] = [];
  const of = (kind: string) => manifests.filter((m) => m.kind === kind);
  const named = (kind: string, name: string) => of(kind).find((m) => m.metadata.name === name)!;

  beforeAll(async () => {
    const result = await run(KUBECTL!, ["kustomize", "deploy/k8s"]);
    if (result.code !== 0) throw new Error(`kubectl kustomize failed:\n${result.stderr}`);
    manifests = parseYamlStream<Manifest>(result.stdout);
  });

  test("renders five Deployments, five Services, two HPAs, a ConfigMap and a Secret", () => {
    expect(of("Deployment").map((m) => m.metadata.name).sort()).toEqual([...SERVICE_KEYS].sort());
    expect(of("Service").map((m) => m.metadata.name).sort()).toEqual([...SERVICE_KEYS].sort());
    expect(of("HorizontalPodAutoscaler").map((m) => [m.apiVersion, m.metadata.name]).sort()).toEqual([
      ["autoscaling/v2", "image"],
      ["autoscaling/v2", "job"],
    ]);
    expect(of("ConfigMap")).toHaveLength(1);
    expect(of("Secret").map((m) => m.metadata.name)).toEqual(["mcsv-secrets"]);
    for (const m of manifests) expect({ kind: m.kind, name: m.metadata.name, partOf: m.metadata.labels?.["app.kubernetes.io/part-of"] }).toEqual({ kind: m.kind, name: m.metadata.name, partOf: "mcsv" });
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

  test("image-svc stays within 1Gi of memory, and the HPAs own the image and job replica counts", () => {
    const image = named("Deployment", "image")["spec"].template.spec.containers[0];
    expect(bytes(image.resources.limits.memory)).toBeLessThanOrEqual(bytes("1Gi"));
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

  test("secrets: placeholders only, every referenced key present, each service given only the keys it needs", () => {
    const secret = named("Secret", "mcsv-secrets");
    const values = secret["stringData"] as Record<string, string>;
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
      (named("Deployment", key)["spec"].template.spec.containers[0].env as Array<{ name: string; valueFrom?: { secretKeyRef?: { name: string; key: string } } }>)
        .filter((e) => e.valueFrom?.secretKeyRef)
        .map((e) => {
          expect(e.valueFrom!.secretKeyRef!.name).toBe("mcsv-secrets");
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
  });

  test.each(SERVICE_KEYS)("%s: its own configuration loader accepts the rendered environment", async (key: ServiceKey) => {
    const data = of("ConfigMap")[0]!["data"] as Record<string, string>;
    const secrets = named("Secret", "mcsv-secrets")["stringData"] as Record<string, string>;
    const env: Record<string, string> = { ...data };
    for (const e of named("Deployment", key)["spec"].template.spec.containers[0].env as Array<{ name: string; value?: string; valueFrom?: { secretKeyRef: { key: string } } }>) {
      env[e.name] = e.value ?? secrets[e.valueFrom!.secretKeyRef.key] ?? "";
    }
    // The Secret holds placeholders; `npm run credentials` makes the real ones, digests included.
    env["MCSV_OPERATOR_TOKEN_SHA256"] = hexDigestOf("operator");
    env["MCSV_SERVICE_TOKEN_SHA256S"] = `user=${hexDigestOf("user")},job=${hexDigestOf("job")}`;
    const name = `load${key[0]!.toUpperCase()}${key.slice(1)}Config`;
    const module = (await import(`../../services/${key}/config.js`)) as Record<string, (env: NodeJS.ProcessEnv) => unknown>;
    expect(() => module[name]!(env)).not.toThrow();
  });
});
