// The official TypeScript client (@durable-streams/client, from conformance/node_modules or
// $DS_NODE_MODULES_ROOT) over HTTPS, run by tests/acme/test_automatic_https.py:
//
//   node ts_https_check.mjs https://streams.example.com:PORT/v1/stream/NAME
//
// Creates the stream, appends, reads it back without live mode and then tails it by SSE
// across one more append. Node verifies the server's chain against the CAs it trusts
// (the test sets NODE_EXTRA_CA_CERTS to the ACME CA's root only). $DS_RESOLVE_TO_LOOPBACK
// names a host resolved to 127.0.0.1 (the test has no DNS for it).
// Prints "ok" and exits 0 when everything read matches.

import dns from "node:dns"
import { createRequire } from "node:module"
import { readFileSync } from "node:fs"
import { dirname, join } from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"

const loopbackName = process.env.DS_RESOLVE_TO_LOOPBACK
if (loopbackName) {
  const lookup = dns.lookup
  dns.lookup = (host, options, callback) => {
    if (typeof options === "function") [callback, options] = [options, {}]
    if (host !== loopbackName) return lookup(host, options, callback)
    if (options && options.all) return callback(null, [{ address: "127.0.0.1", family: 4 }])
    return callback(null, "127.0.0.1", 4)
  }
}

const root = process.env.DS_NODE_MODULES_ROOT ??
  join(dirname(fileURLToPath(import.meta.url)), "..", "..", "conformance")
const manifestPath = createRequire(join(root, "package.json")).resolve("@durable-streams/client/package.json")
const manifest = JSON.parse(readFileSync(manifestPath, "utf8"))
const { DurableStream, stream } = await import(
  pathToFileURL(join(dirname(manifestPath), manifest.exports["."].import.default)).href)

const [url] = process.argv.slice(2)
const fail = (message) => { console.error(message); process.exit(1) }

const handle = await DurableStream.create({ url, contentType: "text/plain" })
await handle.append("first;")
const caughtUp = await (await stream({ url, live: false })).text()
if (caughtUp !== "first;") fail(`catch-up read ${JSON.stringify(caughtUp)}`)

const controller = new AbortController()
const live = await stream({ url, live: "sse", signal: controller.signal })
let seen = ""
const done = new Promise((resolve) => {
  live.subscribeBytes(async (chunk) => {
    seen += new TextDecoder().decode(chunk.data)
    if (seen.includes("second;")) resolve()
  })
})
await handle.append("second;")
const timer = setTimeout(() => fail(`live read saw only ${JSON.stringify(seen)}`), 15000)
await done
clearTimeout(timer)
controller.abort()
if (seen !== "first;second;") fail(`live read ${JSON.stringify(seen)}`)
console.log("ok")
process.exit(0)
