// Preload (NODE_OPTIONS="--import ./h2-dispatcher.mjs") that sends every fetch of the
// suite over HTTP/2: Node's fetch speaks HTTP/1.1 only, but uses the global dispatcher
// set with undici's own setGlobalDispatcher. Trusts the CA file in $H2_CA.
// Writes get their own Agent: undici 7 holds a POST back while any other request runs on
// an h2 connection (nodejs/undici#5390), which would stall a write behind a long-poll.
import { readFileSync } from "node:fs"
import { createRequire } from "node:module"

const require = createRequire(import.meta.url)
const { Agent, Dispatcher, setGlobalDispatcher } = require("undici")

const connect = { ca: readFileSync(process.env.H2_CA) }
// `pipelining`: undici 7 multiplexes requests on an h2 connection only up to it (default 1).
const reads = new Agent({ allowH2: true, pipelining: 100, connect })
const writes = new Agent({ allowH2: true, pipelining: 100, connect })

class ReadsAndWrites extends Dispatcher {
  dispatch(opts, handler) {
    return (opts.method === "GET" || opts.method === "HEAD" ? reads : writes).dispatch(opts, handler)
  }

  close() {
    return Promise.all([reads.close(), writes.close()])
  }

  destroy() {
    return Promise.all([reads.destroy(), writes.destroy()])
  }
}

setGlobalDispatcher(new ReadsAndWrites())
