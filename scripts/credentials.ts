/**
 * `npm run credentials`: a fresh, matching set of internal credentials for a deployment, as environment lines
 * (paste them into a Secret or an .env file). Each calling service gets its own credential; every service gets the
 * digests of its callers' credentials and of the operator's, never the credentials themselves.
 */
import { randomBytes } from "node:crypto";
import { hexDigestOf, INTERNAL_CALLS } from "../services/shared/auth.js";
import { SERVICE_KEYS } from "../services/shared/topology.js";

const token = () => randomBytes(32).toString("base64url");
const operator = token();
const callers = SERVICE_KEYS.filter((key) => Object.keys(INTERNAL_CALLS[key]).length > 0);
const tokens = Object.fromEntries(callers.map((key) => [key, token()]));

console.log(`# The operator's credential: for people, the CLI and Prometheus; give it to no service.
MCSV_INTERNAL_TOKEN=${operator}
# Each calling service's own credential: hand MCSV_<SERVICE>_SERVICE_TOKEN to that service as MCSV_SERVICE_TOKEN.
${callers.map((key) => `MCSV_${key.toUpperCase()}_SERVICE_TOKEN=${tokens[key]}`).join("\n")}
# Every service: the digests it checks credentials against.
MCSV_OPERATOR_TOKEN_SHA256=${hexDigestOf(operator)}
MCSV_SERVICE_TOKEN_SHA256S=${callers.map((key) => `${key}=${hexDigestOf(tokens[key]!)}`).join(",")}`);
