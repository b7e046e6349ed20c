-- Decides one request against every policy of a layer, atomically, on the server's clock.
-- KEYS[i]: the bucket of policy i.
-- ARGV[1]: cost; then three numbers per policy: kind (1 = GCRA, 2 = sliding window),
--   GCRA: emission interval (µs), burst;  sliding window: window (µs), limit.
-- Returns four integers per policy: allowed (0/1), remaining, reset (µs), retry after (µs;
-- -1 when the cost exceeds the capacity). Writes only when every policy admits.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local cost = tonumber(ARGV[1])
local result = {}
local writes = {}
local admitted = true

for i = 1, #KEYS do
  local kind = tonumber(ARGV[2 + (i - 1) * 3])
  local a = tonumber(ARGV[3 + (i - 1) * 3])
  local b = tonumber(ARGV[4 + (i - 1) * 3])
  local base = (i - 1) * 4
  if cost > b then
    admitted = false
    result[base + 1] = 0; result[base + 2] = 0; result[base + 3] = 0; result[base + 4] = -1
  elseif kind == 1 then
    local interval, burst = a, b
    local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
    if tat < now then tat = now end
    local new_tat = tat + interval * cost
    local allow_at = new_tat - interval * burst
    if now >= allow_at then
      local deficit = new_tat - now
      local reset = 0
      if deficit > 0 then reset = (deficit - 1) % interval + 1 end
      result[base + 1] = 1
      result[base + 2] = math.floor((now - allow_at) / interval)
      result[base + 3] = reset
      result[base + 4] = 0
      writes[i] = { 1, new_tat, math.ceil(deficit / 1000) }
    else
      admitted = false
      local available = now - (tat - interval * burst)
      if available < 0 then available = 0 end
      result[base + 1] = 0
      result[base + 2] = math.floor(available / interval)
      result[base + 3] = allow_at - now
      result[base + 4] = allow_at - now
    end
  else
    local window, limit = a, b
    local index = math.floor(now / window)
    local stored = redis.call('HMGET', KEYS[i], 'i', 'c', 'p')
    local at = tonumber(stored[1] or '-2')
    local current = tonumber(stored[2] or '0')
    local previous = tonumber(stored[3] or '0')
    if at > index then
      -- The server's clock stepped back (a failover): never roll the window back.
      index = at
      now = at * window
    end
    if at == index - 1 then
      previous = current; current = 0
    elseif at ~= index then
      previous = 0; current = 0
    end
    local elapsed = now - index * window
    local weighted = previous * (window - elapsed)
    local used = weighted + (current + cost) * window
    if used <= limit * window then
      result[base + 1] = 1
      result[base + 2] = math.floor((limit * window - used) / window)
      result[base + 3] = window - elapsed
      result[base + 4] = 0
      writes[i] = { 2, index, current + cost, previous, math.ceil(2 * window / 1000) }
    else
      admitted = false
      local left = limit * window - weighted - current * window
      if left < 0 then left = 0 end
      local retry
      local headroom = limit - current - cost
      if headroom >= 0 and previous > 0
          and window - math.floor(headroom * window / previous) > elapsed then
        retry = window - math.floor(headroom * window / previous) - elapsed
      elseif current == 0 then
        retry = window - elapsed
      else
        retry = (window - elapsed) + window - math.floor((limit - cost) * window / current)
      end
      result[base + 1] = 0
      result[base + 2] = math.floor(left / window)
      result[base + 3] = retry
      result[base + 4] = retry
    end
  end
end

if admitted then
  for i, write in pairs(writes) do
    if write[1] == 1 then
      -- Integers formatted explicitly: some Redis versions render large Lua numbers as 1e+08.
      redis.call('SET', KEYS[i], string.format('%d', write[2]), 'PX',
        string.format('%d', math.max(write[3], 1)))
    else
      redis.call('HSET', KEYS[i], 'i', string.format('%d', write[2]),
        'c', string.format('%d', write[3]), 'p', string.format('%d', write[4]))
      redis.call('PEXPIRE', KEYS[i], string.format('%d', write[5]))
    end
  end
end
return result
