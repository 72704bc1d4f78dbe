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
-- Returns: the token (> 0) when granted; 0 when the item is locked under a later fence.
-- A lock under a fence up to ARGV[3] is stale and taken over, as in acquire.lua.
local held = redis.call('GET', KEYS[1])
if held then
  local fence = tonumber(string.match(held, '^(%d+)|'))
  if not fence or fence > tonumber(ARGV[3]) then
    return 0
  end
end
local token = ARGV[3]
redis.call('SET', KEYS[1], token .. '|' .. ARGV[4] .. '|' .. ARGV[1], 'PX', tonumber(ARGV[2]))
return tonumber(token)
