#!/bin/sh
# Starts the mcsv service that SERVICE names (user, job, email, image or client): the container's command in
# deploy/Dockerfile. What scripts/lib/system.ts does for `npm start`, from the compiled build, with the service's
# telemetry loaded first so that OpenTelemetry instruments pg and the AWS SDK as they load.
set -eu
case "${SERVICE:-}" in
  user | job | email | image | client) ;;
  *)
    echo "start-service: set SERVICE to one of user, job, email, image, client (got '${SERVICE:-}')" >&2
    exit 64
    ;;
esac
# The production build (scripts/build.ts; MCSV_BUILD_DIR names another than dist, as its test does): `start-service.sh
# migrate` runs the service's migrations alone and exits (user and job: the pre-deploy job); otherwise the service,
# with its telemetry preload first.
build="${MCSV_BUILD_DIR:-dist}"
if [ "${1:-}" = "migrate" ]; then
  if [ ! -f "$build/services/$SERVICE/migrate.js" ]; then
    echo "start-service: the $SERVICE service has no migrations" >&2
    exit 64
  fi
  exec node "$build/services/$SERVICE/migrate.js"
fi
exec node --import "./$build/services/$SERVICE/telemetry.js" "$build/services/$SERVICE/main.js"
