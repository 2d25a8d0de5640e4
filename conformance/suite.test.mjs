// The official suite, run programmatically: its CLI runner (dist/test-runner.js) never
// enables the reserved subscription APIs (PROTOCOL.md §6–7), so their 6 tests would be
// skipped. CONFORMANCE_TEST_URL: the origin of the server under test.
// CONFORMANCE_SUBSCRIPTIONS=0 runs it as the CLI does, for a server without them.
import { runConformanceTests } from "@durable-streams/server-conformance-tests"

const baseUrl = process.env.CONFORMANCE_TEST_URL
if (!baseUrl) throw new Error("set CONFORMANCE_TEST_URL to the server's origin (see run.sh)")

runConformanceTests({
  baseUrl,
  subscriptions: process.env.CONFORMANCE_SUBSCRIPTIONS !== "0",
})
