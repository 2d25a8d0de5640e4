#!/usr/bin/env node
// Starts the Node reference server (@durable-streams/server, DurableStreamTestServer)
// as the benchmark peer.
//
//   node serve.mjs --port 4437 [--host 127.0.0.1] [--data-dir DIR] [--long-poll-timeout-ms 2000]
//                  [--max-file-handles N] [--watch-stdin] [--tls-cert FILE --tls-key FILE]
//
// Without --data-dir (or with an empty one) the in-memory store is used; with it, the
// file-backed store (LMDB metadata + append-only logs, fdatasync per append batch).
// --max-file-handles sizes the file store's pool of write handles (library default 100).
// DurableStreamTestServer does not pass that option through, so the launcher builds
// the file store itself and hands it to the server; nothing else changes.
// DurableStreamTestServer has no TLS option: with --tls-cert/--tls-key its own request
// handler is served by node:https (TLS defaults of Node: 1.2 to 1.3, session tickets on)
// on --port, in this process, and the library's plain listener stays on an unused
// ephemeral loopback port (bench/tls_bench.py).
// Prints one line "READY <url>" on stdout once listening. Stops cleanly on
// SIGTERM/SIGINT, and also when stdin reaches EOF, so the peer never outlives
// a harness that died without cleaning up (the harness keeps stdin open).
import { readFileSync } from "node:fs"
import { createServer as createHttpsServer } from "node:https"
import { parseArgs } from "node:util"
import {
  DurableStreamTestServer,
  FileBackedStreamStore,
} from "@durable-streams/server"

function fail(message) {
  process.stderr.write(`serve.mjs: ${message}\n`)
  process.exit(2)
}

let args
try {
  args = parseArgs({
    options: {
      port: { type: "string", default: "4437" },
      host: { type: "string", default: "127.0.0.1" },
      "data-dir": { type: "string" },
      "long-poll-timeout-ms": { type: "string", default: "30000" },
      "max-file-handles": { type: "string" },
      "watch-stdin": { type: "boolean", default: false },
      "tls-cert": { type: "string" },
      "tls-key": { type: "string" },
    },
    strict: true,
  }).values
} catch (err) {
  fail(err.message)
}

const port = Number(args.port)
if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`bad --port ${args.port}`)
const longPollTimeout = Number(args["long-poll-timeout-ms"])
if (!Number.isFinite(longPollTimeout) || longPollTimeout <= 0) {
  fail(`bad --long-poll-timeout-ms ${args["long-poll-timeout-ms"]}`)
}

const dataDir = args["data-dir"] || undefined
const maxFileHandles =
  args["max-file-handles"] === undefined ? undefined : Number(args["max-file-handles"])
if (maxFileHandles !== undefined && !(Number.isInteger(maxFileHandles) && maxFileHandles > 0)) {
  fail(`bad --max-file-handles ${args["max-file-handles"]}`)
}
if (maxFileHandles !== undefined && !dataDir) fail(`--max-file-handles needs --data-dir`)

const tls = Boolean(args["tls-cert"] || args["tls-key"])
if (tls && !(args["tls-cert"] && args["tls-key"])) fail(`--tls-cert and --tls-key go together`)
let tlsOptions
if (tls) {
  try {
    tlsOptions = { cert: readFileSync(args["tls-cert"]), key: readFileSync(args["tls-key"]) }
  } catch (err) {
    fail(`cannot read the TLS files: ${err.message}`)
  }
}

// With a custom handle pool the server starts in-memory (no resources held) and its
// store is swapped for the file store before it listens; stop() closes it as usual.
const server = new DurableStreamTestServer({
  port: tls ? 0 : port,
  host: args.host,
  longPollTimeout,
  dataDir: maxFileHandles === undefined ? dataDir : undefined,
})
if (maxFileHandles !== undefined) {
  server.store = new FileBackedStreamStore({ dataDir, maxFileHandles })
}

let httpsServer = null
let stopping = false
async function shutdown(code) {
  if (stopping) return
  stopping = true
  // Never hang on shutdown: long-lived keep-alive sockets can delay close().
  const guard = setTimeout(() => process.exit(code), 3000)
  guard.unref()
  try {
    if (httpsServer) {
      httpsServer.closeAllConnections()
      await new Promise((resolve) => httpsServer.close(resolve))
    }
    await server.stop()
  } catch (err) {
    process.stderr.write(`serve.mjs: stop failed: ${err?.message ?? err}\n`)
  }
  process.exit(code)
}

process.on("SIGTERM", () => shutdown(0))
process.on("SIGINT", () => shutdown(0))
if (args["watch-stdin"]) {
  process.stdin.on("end", () => shutdown(0))
  process.stdin.on("error", () => shutdown(0))
  process.stdin.resume()
}

// The library's own request listener (routing, error handling) on the https server.
async function listenHttps() {
  const [handler] = server.server.listeners(`request`)
  httpsServer = createHttpsServer(tlsOptions, handler)
  await new Promise((resolve, reject) => {
    httpsServer.once(`error`, reject)
    httpsServer.listen(port, args.host, resolve)
  })
  return `https://${args.host}:${httpsServer.address().port}`
}

try {
  let url = await server.start()
  if (tls) url = await listenHttps()
  process.stdout.write(`READY ${url}\n`)
} catch (err) {
  fail(`cannot start: ${err?.message ?? err}`)
}
