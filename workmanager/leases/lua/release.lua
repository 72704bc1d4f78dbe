-- release.lua: compare-and-delete a lock by owner + proof (submit, release, fail).
--
-- KEYS[1]  {prefix}item:{item_id}
-- KEYS[2]  {prefix}agent:{agent_id}
-- KEYS[3]  {prefix}type:{order_type}
-- ARGV[1]  the lock's value as acquire.lua stored it: "fence|secret hash|owner"
-- ARGV[2]  item id (the zset member)
-- ARGV[3]  track: 1 to remove the item from the agent/type zsets, 0 to skip them (absent: 0;
--           then only KEYS[1] and the ARGV before it need be passed)
--
-- Returns: 1 deleted; 0 not locked by this owner + proof (nothing changed).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
if ARGV[3] == '1' then
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('ZREM', KEYS[3], ARGV[2])
end
return 1
