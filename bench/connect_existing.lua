-- wrk script: POST /ctrl/connect for one of KEYS existing keys, round robin per thread.
local keys = tonumber(os.getenv("KEYS") or "100")
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = n + 1
  local body = string.format('{"key":{"name":"bench-%d"},"spawn_config":{"executable":{"image":"mock"}}}', n % keys)
  return wrk.format(nil, "/ctrl/connect", nil, body)
end
