#!/bin/sh
# The production dependencies alone, as the image holds them (deploy/Dockerfile), and as the production build's
# test installs them (test/deploy/production-build.test.ts): run where package.json, package-lock.json and
# gen/package.json are. Extra arguments go to npm (the test adds --prefer-offline).
#
# `npm install`, not `npm ci`: package-lock.json lists only the optional platform packages (sharp's libvips) of the
# platform that wrote it, and `npm ci` refuses such a lock on any other platform; `npm install` keeps every locked
# version and adds what this platform needs. --ignore-scripts: no third-party install script runs; sharp uses its
# prebuilt platform package without one.
set -eu
npm install --omit=dev --ignore-scripts --no-audit --no-fund "$@"
# typescript is an optional peer of cosmiconfig (graphile-worker's config loader, for TypeScript config files, which
# mcsv has none of); npm keeps it in an --omit=dev install because the root's devDependencies name it.
rm -rf node_modules/typescript
