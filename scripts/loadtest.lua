-- wrk script for POST /v1/explore: a pool of realistic MovieLens-100K histories (ids 1-1682),
-- 10 to 30 items each, drawn once with a fixed seed; each request takes the next one.
math.randomseed(42)
local items = tonumber(os.getenv("ITEMS") or "10")
local bodies = {}
for i = 1, 512 do
  local n = math.random(10, 30)
  local ids = {}
  for k = 1, n do ids[k] = '"' .. math.random(1, 1682) .. '"' end
  bodies[i] = '{"history": [' .. table.concat(ids, ",") .. '], "clusters": 2, "items": ' .. items .. '}'
end
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i % #bodies + 1
  return wrk.format(nil, "/v1/explore", nil, bodies[i])
end
done = function(summary, latency, requests)
  io.write(string.format("requests %d, errors: connect %d read %d write %d status %d timeout %d\n",
    summary.requests, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout))
  io.write(string.format("p50 %.3f ms, p99 %.3f ms, max %.3f ms\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
