-- wrk body generator of the ingest bench (scripts/bench-ingest.sh, cargo bench -p freshgate --bench ingest).
--
-- Every request is `POST /v1/batch` with FG_BENCH_BATCH events (~745 bytes each), alternating
-- identify and track over a pool of 5,000 users, as an analytics-node client would send them.
-- Every event has its own messageId, shaped like a UUID v4: the first 16 hex digits are random (so
-- index inserts land at random places, as real client ids do) and the last 12 are the run nonce,
-- the wrk thread and a per-thread counter (so no two events of a run, or of two runs with
-- different nonces, ever share one).
--
-- Environment: FG_BENCH_WRITE_KEY (required), FG_BENCH_TS (the events' RFC 3339 timestamp),
-- FG_BENCH_RUN (run nonce, 0-255), FG_BENCH_BATCH (events per request, default 100),
-- FG_BENCH_OUT (file the JSON summary is written to; stdout when unset).
-- The summary counts 200 responses only as acknowledged; latencies are in microseconds.

local USERS = 5000
local batch = tonumber(os.getenv("FG_BENCH_BATCH") or "100")
local ts = os.getenv("FG_BENCH_TS") or "2026-01-01T00:00:00.000Z"
local run = (tonumber(os.getenv("FG_BENCH_RUN") or "0") or 0) % 256
local key = os.getenv("FG_BENCH_WRITE_KEY") or error("FG_BENCH_WRITE_KEY is required")

-- Base64 of "key:", for the Basic authorization header.
local function base64(s)
  local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local chars = {}
    for k = 3, 0, -1 do
      local idx = math.floor(n / 64 ^ k) % 64
      chars[#chars + 1] = alphabet:sub(idx + 1, idx + 1)
    end
    if not b then chars[3] = "=" end
    if not c then chars[4] = "=" end
    out[#out + 1] = table.concat(chars)
  end
  return table.concat(out)
end

local headers = {
  ["Content-Type"] = "application/json",
  ["Authorization"] = "Basic " .. base64(key .. ":"),
}

-- Main state: one entry per wrk thread, to sum their counters in done().
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  threads[#threads + 1] = thread
end

-- Thread state.
local pre = {}       -- per type: the JSON before the messageId
local post = {}      -- per type, per user: the JSON after it
local parts = {}     -- reused buffer of body pieces
local counter = 0
ok = 0
non200 = 0

local function user_id(u) return string.format("user-%06d", u) end

function init(args)
  local t = tonumber(tid) or 0
  math.randomseed(os.time() * 1000 + t * 7919 + run)
  pre[1] = '{"type":"identify","messageId":"'
  pre[2] = '{"type":"track","event":"Order Completed","messageId":"'
  post[1], post[2] = {}, {}
  for u = 0, USERS - 1 do
    local anon = string.format("3f9c1a2e-5b7d-4e8f-9a01-%012d", u)
    post[1][u] = string.format(
      '","userId":"%s","anonymousId":"%s","timestamp":"%s","traits":{"email":"%s@bench.example.com",'
        .. '"firstName":"Jane","lastName":"Doe-%d","title":"Head of Platform L%d","phone":"+1 555 010 %04d",'
        .. '"plan":"pro","logins":%d,"company":{"name":"Acme Corporation","industry":"Software",'
        .. '"employee_count":250},"address":{"street":"1 Main St","city":"Austin","state":"TX",'
        .. '"postalCode":"78701","country":"US"}},"context":{"library":{"name":"analytics-node",'
        .. '"version":"2.1.0"},"ip":"203.0.113.42","locale":"en-US","userAgent":"Mozilla/5.0 '
        .. '(Macintosh; Intel Mac OS X 10_15_7) Chrome/126.0"}}',
      user_id(u), anon, ts, user_id(u), u, u % 50, u % 10000, u % 50)
    post[2][u] = string.format(
      '","userId":"%s","anonymousId":"%s","timestamp":"%s","properties":{"order_id":"ord-%09d",'
        .. '"total":129.95,"revenue":119.95,"shipping":10.0,"currency":"USD","products":[{"product_id":'
        .. '"p-1001","sku":"SKU-1001","name":"Wireless Keyboard","price":59.95,"quantity":1},'
        .. '{"product_id":"p-2002","sku":"SKU-2002","name":"USB-C Hub","price":60.0,"quantity":1}]},'
        .. '"context":{"library":{"name":"analytics-node","version":"2.1.0"},"ip":"203.0.113.42",'
        .. '"locale":"en-US","page":{"path":"/checkout/complete","url":"https://shop.example.com/'
        .. 'checkout/complete"},"userAgent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) Chrome/126.0"}}',
      user_id(u), anon, ts, u)
  end
end

-- The next messageId of this thread.
local function message_id()
  counter = counter + 1
  local r = math.random
  return string.format("%04x%04x-%04x-4%03x-%04x-%02x%02x%08x",
    r(0, 65535), r(0, 65535), r(0, 65535), r(0, 4095), 32768 + r(0, 16383),
    run, (tonumber(tid) or 0) % 256, counter % 4294967296)
end

-- One /v1/batch body (also used by the generator's own test through `wrk`-less Lua).
function batch_body()
  local n = 1
  parts[n] = '{"batch":['
  for i = 1, batch do
    local seq = counter
    local kind = (seq % 2) + 1
    local user = (seq * 7919) % USERS
    if i > 1 then n = n + 1; parts[n] = "," end
    parts[n + 1] = pre[kind]
    parts[n + 2] = message_id()
    parts[n + 3] = post[kind][user]
    n = n + 3
  end
  n = n + 1
  parts[n] = "]}"
  for j = #parts, n + 1, -1 do parts[j] = nil end
  return table.concat(parts)
end

function request()
  return wrk.format("POST", "/v1/batch", headers, batch_body())
end

function response(status, headers, body)
  if status == 200 then ok = ok + 1 else non200 = non200 + 1 end
end

function done(summary, latency, requests)
  local acked, refused = 0, 0
  for _, t in ipairs(threads) do
    acked = acked + (tonumber(t:get("ok")) or 0)
    refused = refused + (tonumber(t:get("non200")) or 0)
  end
  local e = summary.errors
  local p = function(q) return latency:percentile(q) end
  local json = string.format(
    '{"duration_us":%d,"requests":%d,"ok_200":%d,"non_200":%d,"events_per_request":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},'
      .. '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.1f}}',
    summary.duration, summary.requests, acked, refused, batch,
    e.connect, e.read, e.write, e.timeout,
    p(50), p(90), p(99), p(99.9), latency.max, latency.mean)
  local out = os.getenv("FG_BENCH_OUT")
  if out and out ~= "" then
    local f = assert(io.open(out, "w"))
    f:write(json, "\n")
    f:close()
  else
    io.write(json, "\n")
  end
end
