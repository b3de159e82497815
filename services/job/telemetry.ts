/** Loaded with --import before the service, so that OpenTelemetry is running before anything else loads. */
import { startTelemetry } from "../shared/telemetry.js";
import { SERVICES } from "../shared/topology.js";

startTelemetry(SERVICES.job.name);
