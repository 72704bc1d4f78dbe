-- holding.lua: how many live leases an agent holds, by its zset (acquire.lua keeps it).
--
-- KEYS[1]  {prefix}agent:{agent_id}   zset of the agent's held items -> expiry (ms)
--
-- Returns the members not yet expired by the server's clock (what acquire.lua compares
-- with the agent's limit). A read: expired members stay until a write drops them.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
