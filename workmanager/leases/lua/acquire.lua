-- acquire.lua: lock one work item for an agent, with a fencing token and lease limits.
--
-- KEYS[1]  {prefix}item:{item_id}     the lock (string "fence|secret hash|owner", PX ttl)
-- KEYS[2]  {prefix}fence              the fencing counter
-- KEYS[3]  {prefix}agent:{agent_id}   zset of the agent's held items -> expiry (ms)
-- KEYS[4]  {prefix}type:{order_type}  zset of the type's held items -> expiry (ms)
-- ARGV[1]  owner (agent id)
-- ARGV[2]  ttl in milliseconds
-- ARGV[3]  floor: the token must be >= this (the database's last token + 1), so tokens
--          stay strictly increasing even after Redis lost the counter
-- ARGV[4]  item id (the zset member)
-- ARGV[5]  agent limit (0 = unlimited)
-- ARGV[6]  type limit (0 = unlimited)
-- ARGV[7]  track: 1 to keep the per-agent/per-type zsets (limits configured), 0 to skip
--          them (no limits: the lock and the token are all there is to do)
-- ARGV[8]  sha256 (hex) of the lease's secret: the holder proves possession with it
--
-- Returns: the token (> 0) when granted; 0 when the item is already locked;
--          -1 when the agent is at its limit; -2 when the type is at its limit.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local ttl = tonumber(ARGV[2])
local track = ARGV[7] == '1'
local now = 0
if track then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  local agent_limit = tonumber(ARGV[5])
  if agent_limit > 0 and redis.call('ZCARD', KEYS[3]) >= agent_limit then
    return -1
  end
  local type_limit = tonumber(ARGV[6])
  if type_limit > 0 and redis.call('ZCARD', KEYS[4]) >= type_limit then
    return -2
  end
end
local token = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[3])
if token < floor then
  redis.call('SET', KEYS[2], floor)
  token = floor
end
redis.call('SET', KEYS[1], token .. '|' .. ARGV[8] .. '|' .. ARGV[1], 'PX', ttl)
if track then
  redis.call('ZADD', KEYS[3], now + ttl, ARGV[4])
  redis.call('ZADD', KEYS[4], now + ttl, ARGV[4])
  redis.call('PEXPIRE', KEYS[3], ttl)
  redis.call('PEXPIRE', KEYS[4], ttl)
end
return token
