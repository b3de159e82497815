#!/usr/bin/env node
// `npx mcsv` in the repository: runs the TypeScript sources through tsx, resolving @mcsv/sdk to its sources (the
// mcsv-source condition, as the services do). The packed @mcsv/cli runs dist/mcsv.mjs, one bundled file, instead.
import { register } from "node:module";
import { register as registerTsx } from "tsx/esm/api";

registerTsx();
// Registered last, so it runs first: it adds the condition before tsx and Node resolve.
register(
  `data:text/javascript,${encodeURIComponent(
    'export async function resolve(specifier, context, next) { return next(specifier, { ...context, conditions: [...context.conditions, "mcsv-source"] }); }',
  )}`,
);
await import("../main.ts");
