-- cluster_reserve.lua: take one place under a lease limit (Redis Cluster), before the lock.
-- One key: the agent's or the type's zset, in its own slot.
--
-- KEYS[1]  {prefix}agent:{<agent_id>} or {prefix}type:{<order_type>}: zset member -> expiry
-- ARGV[1]  member: "<item_id>|<secret hash>" (one per grant attempt)
-- ARGV[2]  ttl in milliseconds
-- ARGV[3]  limit (> 0)
--
-- Returns: 1 reserved; -1 the limit is reached (nothing changed).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return -1
end
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1
