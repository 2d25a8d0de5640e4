// Runs the official suite's own entry file from node_modules.
// Vitest excludes node_modules by default, which is why the upstream CLI can report
// "No test files found" (durable-streams issue #284): include it explicitly and clear `exclude`.
import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["node_modules/@durable-streams/server-conformance-tests/dist/test-runner.js"],
    exclude: [],
    // The suite creates unique stream paths per test; one worker keeps a shared server calm.
    fileParallelism: false,
    watch: false,
  },
})
