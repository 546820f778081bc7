-- serve_post.lua — wrk script for bench/serve_load.sh: POSTs one image file ($PE_IMAGE,
-- Content-Type $PE_TYPE) to the request path given on the wrk command line, counts the
-- answers by HTTP status across wrk's threads and prints one "RESULT key=value ..." line.
local image = assert(io.open(os.getenv("PE_IMAGE"), "rb"))
local body = image:read("*all")
image:close()
wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = os.getenv("PE_TYPE") or "image/jpeg"

local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) counts = {} end
function response(status, headers, body) counts[status] = (counts[status] or 0) + 1 end

function done(summary, latency, requests)
  local by_status, non200 = {}, 0
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("counts")) do
      by_status[status] = (by_status[status] or 0) + n
      if status ~= 200 then non200 = non200 + n end
    end
  end
  local parts = {}
  for status, n in pairs(by_status) do table.insert(parts, status .. ":" .. n) end
  table.sort(parts)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d req_s=%.2f p50_ms=%.1f p90_ms=%.1f p99_ms=%.1f max_ms=%.1f non200=%d " ..
    "socket_errors=%d statuses=%s\n",
    summary.requests, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, non200, e.connect + e.read + e.write + e.timeout, table.concat(parts, ",")))
end
