-- wrk script of the "wrk" test of bench/http_bench.py (see bench/README.md).
--
--   wrk -t2 -c32 -d5s -s bench/wrk_streams.lua http://127.0.0.1:PORT -- MODE PREFIX STREAMS THREADS
--
-- MODE     "append": POST of a 22-byte application/octet-stream body
--          "now":    GET ?offset=now (an empty, up-to-date answer: the trivial-handler baseline)
-- PREFIX   path prefix; stream i is PREFIX/s<i>, i = 0 .. STREAMS-1, all created beforehand
-- THREADS  the -t given to wrk
--
-- wrk calls request() once per request, per thread, not per connection. Stream i belongs
-- to thread (i mod THREADS), and each thread hands its streams out round-robin, one per
-- request. With STREAMS = connections each stream has about one request in flight at a
-- time: the streams are appended to concurrently (the binding to connections is loose).
--
-- Headers given to wrk with -H (e.g. "Connection: close", bench/tls_bench.py) go on every
-- request: wrk.format() would drop them, since the script passes headers of its own.
--
-- Every response that is not 2xx is counted (response() below); done() prints one line
--   WRK_RESULT {json}
-- with the totals, which the harness parses. Any non-2xx fails the figure.

BODY = "0123456789abcdefghijkl" -- 22 bytes

local threads = {}

function setup(thread)
   thread:set("tid", #threads)
   table.insert(threads, thread)
end

-- Per-thread state (each wrk thread has its own Lua state). Globals, so that done()
-- can read them with thread:get().
non2xx = 0
first_bad_status = 0
local prepared = {}
local turn = 0

function init(args)
   local mode, prefix = args[1], args[2]
   local streams, nthreads = tonumber(args[3]), tonumber(args[4])
   if mode ~= "append" and mode ~= "now" or not prefix or not streams or not nthreads then
      error("usage: -- append|now PREFIX STREAMS THREADS")
   end
   local function headers(extra)
      local all = {}
      for name, value in pairs(wrk.headers) do
         all[name] = value
      end
      for name, value in pairs(extra) do
         all[name] = value
      end
      return all
   end
   for i = tid, streams - 1, nthreads do
      local path = prefix .. "/s" .. i
      if mode == "append" then
         prepared[#prepared + 1] = wrk.format("POST", path,
            headers({["Content-Type"] = "application/octet-stream"}), BODY)
      else
         prepared[#prepared + 1] = wrk.format("GET", path .. "?offset=now", headers({}), nil)
      end
   end
   if #prepared == 0 then
      error("thread " .. tid .. " has no stream (fewer streams than threads)")
   end
end

function request()
   turn = turn % #prepared + 1
   return prepared[turn]
end

function response(status, headers, body)
   if status < 200 or status > 299 then
      non2xx = non2xx + 1
      if first_bad_status == 0 then
         first_bad_status = status
      end
   end
end

function done(summary, latency, requests)
   local bad, first = 0, 0
   for _, thread in ipairs(threads) do
      bad = bad + thread:get("non2xx")
      local status = thread:get("first_bad_status")
      if first == 0 and status ~= 0 then
         first = status
      end
   end
   local e = summary.errors
   io.write(string.format(
      'WRK_RESULT {"requests": %.0f, "duration_us": %.0f, "bytes": %.0f, ' ..
      '"connect_errors": %.0f, "read_errors": %.0f, "write_errors": %.0f, ' ..
      '"status_errors": %.0f, "timeouts": %.0f, "non2xx": %.0f, "first_bad_status": %.0f, ' ..
      '"p50_us": %.0f, "p99_us": %.0f, "max_us": %.0f}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout, bad, first,
      latency:percentile(50), latency:percentile(99), latency.max))
end
