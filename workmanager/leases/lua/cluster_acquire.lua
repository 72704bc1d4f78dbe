-- cluster_acquire.lua: lock one work item on Redis Cluster under a fencing token. The one
-- key carries the item id as its hash tag (the limits' zsets are other scripts', in their
-- own slots).
--
-- KEYS[1]  {prefix}item:{<item_id>}    the lock (string "fence|secret hash|owner", PX ttl)
-- ARGV[1]  owner (agent id)
-- ARGV[2]  ttl in milliseconds
-- ARGV[3]  the fencing token: the item row's last token + 1, chosen by the caller (the
--          row is the one source of tokens, strictly increasing per item)
-- ARGV[4]  sha256 (hex) of the lease's secret
--
-- Returns: the token (> 0) when granted; 0 when the item is already locked.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local token = ARGV[3]
redis.call('SET', KEYS[1], token .. '|' .. ARGV[4] .. '|' .. ARGV[1], 'PX', tonumber(ARGV[2]))
return tonumber(token)
