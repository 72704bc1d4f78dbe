-- cluster_touch.lua: move a held lease's expiry in a limit zset (Redis Cluster heartbeat).
--
-- KEYS[1]  {prefix}agent:{<agent_id>} or {prefix}type:{<order_type>}
-- ARGV[1]  member: "<item_id>|<secret hash>"
-- ARGV[2]  ttl in milliseconds
--
-- Returns: 1.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1
