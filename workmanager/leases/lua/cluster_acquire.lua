-- cluster_acquire.lua: lock one work item on Redis Cluster, with a per-item fencing token.
-- Both keys carry the item id as their hash tag, so the script touches one slot.
--
-- KEYS[1]  {prefix}item:{<item_id>}    the lock (string "fence|secret hash|owner", PX ttl)
-- KEYS[2]  {prefix}fence:{<item_id>}   the item's fencing counter
-- ARGV[1]  owner (agent id)
-- ARGV[2]  ttl in milliseconds
-- ARGV[3]  floor: the token must be >= this (the database's last token of the item + 1),
--          so tokens stay strictly increasing per item after a flush or a failover lost
--          the counter
-- ARGV[4]  sha256 (hex) of the lease's secret
-- ARGV[5]  how long the counter is kept after a grant, in milliseconds (the floor covers
--          a counter that expired)
--
-- Returns: the token (> 0) when granted; 0 when the item is already locked.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local token = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[3])
if token < floor then
  redis.call('SET', KEYS[2], floor)
  token = floor
end
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[5]))
redis.call('SET', KEYS[1], token .. '|' .. ARGV[4] .. '|' .. ARGV[1], 'PX', tonumber(ARGV[2]))
return token
