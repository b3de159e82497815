/**
 * The default local port of each mcsv.v1 service: the one place that maps a service to the `servers` entry of its
 * OpenAPI document (openapi/<name>.yaml).
 */
export const DEFAULT_PORTS: Readonly<Record<string, number>> = {
  "mcsv.v1.UserService": 8081,
  "mcsv.v1.JobService": 8082,
  "mcsv.v1.EmailService": 8083,
  "mcsv.v1.ImageService": 8084,
  "mcsv.v1.ClientService": 8085,
};

/** Version written into every document's `info.version`. */
export const API_VERSION = "0.1.0";
