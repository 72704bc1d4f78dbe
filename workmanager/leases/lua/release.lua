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
-- Returns: 1 deleted; 0 not locked by this owner + proof (the lock is left as it is).
--
-- The caller's lease has ended (its commit came first), so when the lock is not its own
-- any more (gone, or taken over by the next grant in between: acquire.lua) the item's
-- place in the caller's zset is given back all the same; it counted a lease of the caller
-- against its limit until the TTL. The type's place is given back only when no lock is
-- there (another holder's counts the item under the type).
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if ARGV[3] == '1' then
    redis.call('ZREM', KEYS[2], ARGV[2])
    redis.call('ZREM', KEYS[3], ARGV[2])
  end
  return 1
end
if ARGV[3] == '1' then
  local mine = string.match(ARGV[1], '^[^|]*|[^|]*|(.*)$')
  local holder = held and string.match(held, '^[^|]*|[^|]*|(.*)$')
  if holder ~= mine then
    redis.call('ZREM', KEYS[2], ARGV[2])
    if not held then
      redis.call('ZREM', KEYS[3], ARGV[2])
    end
  end
end
return 0
