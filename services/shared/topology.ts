/** The five services, their OpenTelemetry names and default ports: the one place that lists them. */
export const SERVICES = {
  user: { name: "user-svc", port: 8081 },
  job: { name: "job-svc", port: 8082 },
  email: { name: "email-svc", port: 8083 },
  image: { name: "image-svc", port: 8084 },
  client: { name: "client-svc", port: 8085 },
} as const;

export type ServiceKey = keyof typeof SERVICES;

export const SERVICE_KEYS = Object.keys(SERVICES) as ServiceKey[];

export const SERVICE_VERSION = "0.1.0";
