-- take.lua: take one token from every bucket named, all or none (token buckets).
--
-- KEYS[i]       {prefix}rate:{bucket}  hash: tokens (left at ts), ts (Redis time, ms);
--               a missing key is a full bucket; each key expires once it would be full
-- ARGV[2i-1]    capacity of bucket i (tokens, >= 1)
-- ARGV[2i]      refill rate of bucket i (tokens per second, > 0)
--
-- Time is Redis's own (TIME), so every process sees one clock.
-- Returns: 0 taken (one token from each bucket); otherwise the milliseconds (rounded up,
-- >= 1) until every bucket holds a token again, and nothing was taken.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local levels = {}
local wait = 0
for i, key in ipairs(KEYS) do
  local capacity = tonumber(ARGV[2 * i - 1])
  local rate = tonumber(ARGV[2 * i]) / 1000
  local state = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens = capacity
  if state[1] and state[2] then
    local elapsed = math.max(0, now - tonumber(state[2]))
    tokens = math.min(capacity, tonumber(state[1]) + elapsed * rate)
  end
  levels[i] = tokens
  if tokens < 1 then
    wait = math.max(wait, (1 - tokens) / rate)
  end
end
if wait > 0 then
  return math.max(1, math.ceil(wait))
end
for i, key in ipairs(KEYS) do
  local capacity = tonumber(ARGV[2 * i - 1])
  local rate = tonumber(ARGV[2 * i]) / 1000
  local left = levels[i] - 1
  redis.call('HSET', key, 'tokens', tostring(left), 'ts', tostring(now))
  redis.call('PEXPIRE', key, math.ceil((capacity - left) / rate) + 1000)
end
return 0
