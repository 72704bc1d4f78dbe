-- extend.lua: compare-and-extend a lock by owner + proof (a heartbeat).
--
-- KEYS[1]  {prefix}item:{item_id}
-- KEYS[2]  {prefix}agent:{agent_id}
-- KEYS[3]  {prefix}type:{order_type}
-- ARGV[1]  the lock's value as acquire.lua stored it: "fence|secret hash|owner"
-- ARGV[2]  ttl in milliseconds
-- ARGV[3]  item id (the zset member)
-- ARGV[4]  track: 1 to move the item's expiry in the agent/type zsets, 0 to skip them (absent: 0;
--           then only KEYS[1] and the ARGV before it need be passed)
--
-- Returns: 1 extended; 0 no lock (expired or lost); -1 locked under another owner/proof.
local v = redis.call('GET', KEYS[1])
if not v then
  return 0
end
if v ~= ARGV[1] then
  return -1
end
local ttl = tonumber(ARGV[2])
redis.call('PEXPIRE', KEYS[1], ttl)
if ARGV[4] ~= '1' then
  return 1
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[3])
redis.call('ZADD', KEYS[3], now + ttl, ARGV[3])
-- a zset lives as long as its longest lease: only ever lengthened (a lease extended
-- for longer by an operator, or carried with more time left, outlived a shortened zset,
-- and its agent and type were then counted without it)
for i = 2, 3 do
  if redis.call('PTTL', KEYS[i]) < ttl then
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
end
return 1
