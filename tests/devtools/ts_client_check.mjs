// A catch-up read with the official TypeScript client (@durable-streams/client, npm),
// run by tests/devtools/test_official_client_big.py. The client is the one installed in
// conformance/node_modules (a devDependency there), or under $DS_NODE_MODULES_ROOT if set:
// ESM ignores NODE_PATH, so the package is resolved from that directory explicitly.
//
//   node ts_client_check.mjs bytes URL LENGTH SHA256   -> stream({live: false}).body()
//   node ts_client_check.mjs json  URL COUNT  SHA256   -> stream({live: false}).json();
//                                                        the hash is of JSON.stringify(items)
//
// Prints "ok" and exits 0 when length (or item count) and sha256 match; exits 1 otherwise.

import { createHash } from "node:crypto"
import { readFileSync } from "node:fs"
import { createRequire } from "node:module"
import { dirname, join } from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"

const EXPECTED_CLIENT_VERSION = "0.2.7"

const root = process.env.DS_NODE_MODULES_ROOT ??
  join(dirname(fileURLToPath(import.meta.url)), "..", "..", "conformance")
// The top-level copy (server-conformance-tests keeps its own 0.2.6 nested below it).
const manifestPath = createRequire(join(root, "package.json")).resolve("@durable-streams/client/package.json")
const manifest = JSON.parse(readFileSync(manifestPath, "utf8"))
const { version } = manifest
const entry = join(dirname(manifestPath), manifest.exports["."].import.default)
const { stream } = await import(pathToFileURL(entry).href)
if (version !== EXPECTED_CLIENT_VERSION) {
  console.error(`@durable-streams/client is ${version}, expected ${EXPECTED_CLIENT_VERSION}`)
  process.exit(1)
}

const [mode, url, expectedSize, expectedSha] = process.argv.slice(2)
const sha256 = (data) => createHash("sha256").update(data).digest("hex")

const res = await stream({ url, live: false })
let size, digest
if (mode === "bytes") {
  const bytes = await res.body()
  size = bytes.length
  digest = sha256(bytes)
} else if (mode === "json") {
  const items = await res.json()
  size = items.length
  digest = sha256(Buffer.from(JSON.stringify(items), "utf8"))
} else {
  console.error(`unknown mode ${mode}`)
  process.exit(2)
}

if (String(size) !== expectedSize || digest !== expectedSha) {
  console.error(`${mode} ${url}: got size ${size} sha256 ${digest}, expected size ${expectedSize} sha256 ${expectedSha}`)
  process.exit(1)
}
console.log(`client ${version} ${mode} size ${size}`)
console.log("ok")
