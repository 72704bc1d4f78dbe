-- acquire.lua: lock one work item for an agent under a fencing token, with lease limits.
--
-- KEYS[1]  {prefix}item:{item_id}     the lock (string "fence|secret hash|owner", PX ttl)
-- KEYS[2]  {prefix}agent:{agent_id}   zset of the agent's held items -> expiry (ms)
-- KEYS[3]  {prefix}type:{order_type}  zset of the type's held items -> expiry (ms)
--          (KEYS[2] and KEYS[3] only with ARGV[7] = 1: Redis Cluster passes the item's
--          key alone, its limits kept by cluster_reserve.lua in their own slots)
-- ARGV[1]  owner (agent id)
-- ARGV[2]  ttl in milliseconds
-- ARGV[3]  the fencing token: the item row's last token + 1, chosen by the caller (the
--          row is the one source of tokens, strictly increasing per item; nothing here
--          counts them, so nothing is lost when Redis loses its data)
-- ARGV[4]  item id (the zset member)
-- ARGV[5]  agent limit (0 = unlimited)
-- ARGV[6]  type limit (0 = unlimited)
-- ARGV[7]  track: 1 to keep the per-agent/per-type zsets (limits configured), 0 to skip
--          them (no limits: the lock is all there is to do)
-- ARGV[8]  sha256 (hex) of the lease's secret: the holder proves possession with it
--
-- Returns: the token (> 0) when granted; 0 when the item is locked under a later fence;
--          -1 when the agent is at its limit; -2 when the type is at its limit.
--
-- The caller holds the item's row, queued, under its row lock (SQLite: the one writer), so
-- no lease of the item is current: a lock left under a fence up to ARGV[3] is stale (a
-- release committed while Redis refused the lock's deletion, a grant that died before its
-- commit) and is taken over. A lock under a later fence than the row knows (a database
-- restored from an older backup without `ops restored`) is left alone.
local held = redis.call('GET', KEYS[1])
if held then
  local fence = tonumber(string.match(held, '^(%d+)|'))
  if not fence or fence > tonumber(ARGV[3]) then
    return 0
  end
end
local ttl = tonumber(ARGV[2])
local track = ARGV[7] == '1'
local now = 0
if track then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if held then  -- the stale lock's place is not counted (it is this item's)
    redis.call('ZREM', KEYS[2], ARGV[4])
    redis.call('ZREM', KEYS[3], ARGV[4])
    local stale_owner = string.match(held, '^%d+|[^|]*|(.*)$')
    if stale_owner and stale_owner ~= ARGV[1] then
      -- nor is it its own agent's (counted a lease TTL otherwise): that zset's name is
      -- KEYS[2]'s with the other agent id (one Redis: ``track`` is 0 on a cluster)
      local prefix = string.sub(KEYS[2], 1, #KEYS[2] - #ARGV[1])
      redis.call('ZREM', prefix .. stale_owner, ARGV[4])
    end
  end
  local agent_limit = tonumber(ARGV[5])
  if agent_limit > 0 and redis.call('ZCARD', KEYS[2]) >= agent_limit then
    return -1
  end
  local type_limit = tonumber(ARGV[6])
  if type_limit > 0 and redis.call('ZCARD', KEYS[3]) >= type_limit then
    return -2
  end
end
local token = ARGV[3]
redis.call('SET', KEYS[1], token .. '|' .. ARGV[8] .. '|' .. ARGV[1], 'PX', ttl)
if track then
  redis.call('ZADD', KEYS[2], now + ttl, ARGV[4])
  redis.call('ZADD', KEYS[3], now + ttl, ARGV[4])
  -- a zset lives as long as its longest lease: only ever lengthened (a lease extended
  -- for longer by an operator, or carried with more time left, outlived a shortened zset,
  -- and its agent and type were then counted without it)
  for i = 2, 3 do
    if redis.call('PTTL', KEYS[i]) < ttl then
      redis.call('PEXPIRE', KEYS[i], ttl)
    end
  end
end
return tonumber(token)
