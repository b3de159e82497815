/** Preload of B3's full-stack server: the services' own OpenTelemetry start-up (OTEL_* variables from the parent). */
import { startTelemetry } from "../../services/shared/telemetry.js";

startTelemetry("bench-svc");
