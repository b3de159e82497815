/** Loaded with --import before the service, so that the OpenTelemetry instrumentations hook pg and the AWS SDK. */
import { startTelemetry } from "../shared/telemetry.js";
import { SERVICES } from "../shared/topology.js";

startTelemetry(SERVICES.user.name);
