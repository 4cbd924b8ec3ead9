-- SPDX-License-Identifier: Apache-2.0
-- wrk.lua - the requests of the benchmark, and exact latency percentiles at the end.
--
--   wrk ... -s bench/wrk.lua URL -- HEADERS
--
-- HEADERS is one of: none, aws-apigateway, aws-httpapi, azure-apim (a fixed request: built
-- once, so wrk itself costs the same in every case), or "mix" (every request takes the next of
-- the four, for the soak). Every set carries what API Gateway forwards anyway (User-Agent,
-- Accept, X-Forwarded-*, X-Amzn-Trace-Id); the gateway sets add all their x-dd-proxy*
-- headers. x-dd-proxy-request-time-ms is the time wrk starts (the module accepts up to 1 h
-- old), so every run sends a valid one.
-- done() prints one line, "WRKJSON {...}", with the counts and latency percentiles in µs.

local common = {
  ["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
  ["Accept"] = "application/json",
  ["Accept-Encoding"] = "gzip, deflate, br",
  ["X-Amzn-Trace-Id"] = "Root=1-6745a1b2-3c4d5e6f7a8b9c0d1e2f3a4b",
  ["X-Forwarded-For"] = "203.0.113.7",
  ["X-Forwarded-Port"] = "443",
  ["X-Forwarded-Proto"] = "https",
}

local now_ms = tostring(os.time() * 1000)

local sets = {
  -- as many headers, and about as many bytes, as the aws-apigateway set, none of them the
  -- module's: httpd parses the same amount in every case
  ["none"] = {
    ["X-Request-Id"] = "0f8e6a4c-3b2d-4e1f-9a7b-5c6d7e8f9a0b",
    ["X-Correlation-Id"] = "c0ffee00-1234-4abc-8def-0123456789ab",
    ["X-Client-Version"] = "4.2.1",
    ["X-Tenant"] = "acme-eu-west",
    ["X-Api-Key-Id"] = "key-01HF3JX9ZK8Q",
    ["Accept-Language"] = "en-GB,en;q=0.9",
    ["Cache-Control"] = "no-cache",
    ["Pragma"] = "no-cache",
    ["X-Requested-With"] = "XMLHttpRequest",
    ["X-Feature-Flags"] = "checkout-v2,dark-mode",
    ["Origin"] = "https://shop.example.com",
  },
  ["aws-apigateway"] = {
    ["x-dd-proxy"] = "aws-apigateway",
    ["x-dd-proxy-request-time-ms"] = now_ms,
    ["x-dd-proxy-domain-name"] = "a1b2c3d4e5.execute-api.eu-west-3.amazonaws.com",
    ["x-dd-proxy-httpmethod"] = "GET",
    ["x-dd-proxy-path"] = "/prod/orders/42",
    ["x-dd-proxy-stage"] = "prod",
    ["x-dd-proxy-region"] = "eu-west-3",
    ["x-dd-proxy-resource-path"] = "/orders/{id}",
    ["x-dd-proxy-account-id"] = "123456789012",
    ["x-dd-proxy-api-id"] = "a1b2c3d4e5",
    ["x-dd-proxy-user"] = "AIDACKCEVSQ6C2EXAMPLE",
  },
  ["aws-httpapi"] = {
    ["x-dd-proxy"] = "aws-httpapi",
    ["x-dd-proxy-request-time-ms"] = now_ms,
    ["x-dd-proxy-domain-name"] = "f6g7h8i9j0.execute-api.us-east-1.amazonaws.com",
    ["x-dd-proxy-httpmethod"] = "GET",
    ["x-dd-proxy-path"] = "/orders/42",
    ["x-dd-proxy-stage"] = "$default",
    ["x-dd-proxy-region"] = "us-east-1",
    ["x-dd-proxy-resource-path"] = "/orders/{id}",
    ["x-dd-proxy-account-id"] = "123456789012",
    ["x-dd-proxy-api-id"] = "f6g7h8i9j0",
  },
  ["azure-apim"] = {
    ["x-dd-proxy"] = "azure-apim",
    ["x-dd-proxy-request-time-ms"] = now_ms,
    ["x-dd-proxy-domain-name"] = "orders-apim.azure-api.net",
    ["x-dd-proxy-httpmethod"] = "GET",
    ["x-dd-proxy-path"] = "/orders/{id}",
    ["x-dd-proxy-region"] = "West Europe",
  },
}
local mix_order = { "aws-apigateway", "none", "aws-httpapi", "azure-apim" }

local function headers_of(name)
  local h = {}
  for k, v in pairs(common) do h[k] = v end
  for k, v in pairs(sets[name]) do h[k] = v end
  return h
end

function init(args)
  local name = args[1] or "none"
  if name == "mix" then
    local mix_requests = {}
    for i, n in ipairs(mix_order) do
      mix_requests[i] = wrk.format("GET", nil, headers_of(n))
    end
    local i = 0
    request = function()
      i = i % #mix_requests + 1
      return mix_requests[i]
    end
  else
    if not sets[name] then error("unknown header set " .. name) end
    for k, v in pairs(headers_of(name)) do wrk.headers[k] = v end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local p = function(q) return latency:percentile(q) end
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"err_connect":%d,"err_read":%d,' ..
    '"err_write":%d,"err_status":%d,"err_timeout":%d,"lat_mean":%.2f,"lat_stdev":%.2f,' ..
    '"lat_min":%d,"lat_max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.mean, latency.stdev, latency.min, latency.max, p(50), p(90), p(99),
    p(99.9)))
end
