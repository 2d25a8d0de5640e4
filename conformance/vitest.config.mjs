// Runs the official suite's own entry file from node_modules.
// Vitest's default include does not match it and its default exclude drops node_modules,
// hence "No test files found" (durable-streams issue #284): name it and clear `exclude`.
import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["node_modules/@durable-streams/server-conformance-tests/dist/test-runner.js"],
    exclude: [],
    watch: false,
  },
})
