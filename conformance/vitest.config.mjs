// Runs the official suite through our own entry file (suite.test.mjs), which calls
// runConformanceTests with subscriptions enabled. (The package's own entry file,
// dist/test-runner.js, is not matched by vitest's defaults, hence "No test files found"
// from its CLI: durable-streams issue #284; and it never enables subscriptions.)
import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["suite.test.mjs"],
    watch: false,
  },
})
