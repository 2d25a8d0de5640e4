// The official TypeScript client (@durable-streams/client, from conformance/node_modules
// or $DS_NODE_MODULES_ROOT) over HTTP/2, run by tests/http/test_h2_daemon.py.
//
//   node ts_h2_tails.mjs BASE_URL CA_FILE COUNT
//
// Node's fetch speaks HTTP/1.1 only; the client takes any fetch, so it gets undici's,
// with Agents that negotiate h2 by ALPN and trust the test CA. COUNT streams (half JSON,
// tailed by SSE; half binary, tailed by long-poll) are created and written, then all are
// read and tailed at once through one Agent holding one connection: each tail must see
// its catch-up, then a second append made while every tail is live.
//
// The writes go through a second Agent: undici 7 multiplexes GETs on an h2 connection
// (given `pipelining`), but holds a POST back while any other request runs on it
// (nodejs/undici#5390), and the tails never stop running.
//
// Prints the tail Agent's peak connection and in-flight request counts as JSON, then
// "ok", and exits 0 when every tail saw both appends.

import { readFileSync } from "node:fs"
import { createRequire } from "node:module"
import { dirname, join } from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"

const root = process.env.DS_NODE_MODULES_ROOT ??
  join(dirname(fileURLToPath(import.meta.url)), "..", "..", "conformance")
const require = createRequire(join(root, "package.json"))
const clientManifest = require.resolve("@durable-streams/client/package.json")
const clientEntry = JSON.parse(readFileSync(clientManifest, "utf8")).exports["."].import.default
const { DurableStream, stream } = await import(pathToFileURL(join(dirname(clientManifest), clientEntry)).href)
const { Agent, fetch: undiciFetch } = require("undici")  // CommonJS

const [base, caFile, countText] = process.argv.slice(2)
const count = Number(countText)
const tls = { ca: readFileSync(caFile) }
const tailAgent = new Agent({ allowH2: true, connections: 1, pipelining: 100, connect: tls })
const writeAgent = new Agent({ allowH2: true, connections: 1, connect: tls })
const tailFetch = (input, init) => undiciFetch(input, { ...init, dispatcher: tailAgent })
const fetch = (input, init) => undiciFetch(input, { ...init, dispatcher: writeAgent })
const origin = new URL(base).origin
const peak = { connected: 0, running: 0 }
const sample = () => {
  const stats = tailAgent.stats[origin]
  if (stats) {
    peak.connected = Math.max(peak.connected, stats.connected)
    peak.running = Math.max(peak.running, stats.running)
  }
}

const guard = setTimeout(() => { console.error("timed out"); process.exit(1) }, 60_000)

const streams = []
for (let n = 0; n < count; n++) {
  const json = n % 2 === 0
  const url = `${base}/v1/stream/ts-h2-${n}`
  const handle = await DurableStream.create({ url, contentType: json ? "application/json" : "text/plain", fetch })
  await handle.append(json ? JSON.stringify({ n, part: "first" }) : `first-${n};`)
  streams.push({ n, json, url, handle, seen: [], waiters: [] })
}

const sawAll = (s, wanted) => (s.json ? s.seen.map((item) => item.part) : [s.seen.join("")]).join("|") === wanted
const waitFor = (s, wanted) => new Promise((resolve) => {
  const check = () => sawAll(s, wanted) ? (resolve(), true) : false
  if (!check()) s.waiters.push(check)
})
const notify = (s) => { sample(); s.waiters = s.waiters.filter((check) => !check()) }

const sessions = await Promise.all(streams.map(async (s) => {
  const session = await stream({ url: s.url, offset: "-1", live: s.json ? "sse" : "long-poll", fetch: tailFetch })
  if (s.json) {
    session.subscribeJson((batch) => { s.seen.push(...batch.items); notify(s) })
  } else {
    session.subscribeText((chunk) => { s.seen.push(chunk.text); notify(s) })
  }
  return session
}))

const expect = (s, parts) => s.json ? parts.join("|") : parts.map((p) => `${p}-${s.n};`).join("")
await Promise.all(streams.map((s) => waitFor(s, expect(s, ["first"]))))
// Every tail is live now (caught up, waiting on the server): append to each.
const sampler = setInterval(sample, 5)
await Promise.all(streams.map((s) => s.handle.append(s.json ? JSON.stringify({ n: s.n, part: "second" }) : `second-${s.n};`)))
await Promise.all(streams.map((s) => waitFor(s, expect(s, ["first", "second"]))))

clearInterval(sampler)
for (const session of sessions) session.cancel()
clearTimeout(guard)
console.log(JSON.stringify(peak))
console.log("ok")
process.exit(0)
