/**
 * Jest runs the TypeScript tests as native ES modules (transpiled by SWC, type-checked separately by `tsc`).
 * @type {import('jest').Config}
 */
export default {
  testEnvironment: "node",
  testEnvironmentOptions: {
    // Resolve @mcsv/sdk to its TypeScript sources, as tsx and tsc do.
    customExportConditions: ["node", "node-addons", "mcsv-source"],
  },
  extensionsToTreatAsEsm: [".ts"],
  transform: {
    "^.+\\.ts$": [
      "@swc/jest",
      {
        jsc: { parser: { syntax: "typescript" }, target: "es2022" },
        module: { type: "es6" },
      },
    ],
  },
  moduleNameMapper: { "^(\\.{1,2}/.*)\\.js$": "$1" },
  testMatch: ["<rootDir>/test/**/*.test.ts"],
  testTimeout: 180_000,
  // The workflow tests share one set of real processes per file; run files one at a time (2 cores).
  maxWorkers: 1,
};
