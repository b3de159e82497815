#!/bin/sh
# Starts the mcsv service that SERVICE names (user, job, email, image or client): the container's command in
# deploy/Dockerfile. The same as scripts/lib/system.ts does for `npm start`, plus the service's telemetry.ts (when it
# has one), loaded first so that OpenTelemetry instruments pg and the AWS SDK as they load.
set -eu
case "${SERVICE:-}" in
  user | job | email | image | client) ;;
  *)
    echo "start-service: set SERVICE to one of user, job, email, image, client (got '${SERVICE:-}')" >&2
    exit 64
    ;;
esac
# `start-service.sh migrate` runs the service's migrations alone and exits (user and job: the pre-deploy job).
if [ "${1:-}" = "migrate" ]; then
  if [ ! -f "services/$SERVICE/migrate.ts" ]; then
    echo "start-service: the $SERVICE service has no migrations" >&2
    exit 64
  fi
  exec node --conditions=mcsv-source --import tsx "services/$SERVICE/migrate.ts"
fi
set -- --conditions=mcsv-source --import tsx
if [ -f "services/$SERVICE/telemetry.ts" ]; then
  set -- "$@" --import "./services/$SERVICE/telemetry.ts"
fi
exec node "$@" "services/$SERVICE/main.ts"
