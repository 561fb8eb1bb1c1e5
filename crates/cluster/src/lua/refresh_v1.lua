-- veil refresh v1: pushes back the expiry of leases still held by live calls.
-- KEYS: lease sorted sets; ARGV: now in microseconds ('' = the Redis server's clock),
--       lease TTL in microseconds, then per key the member to refresh.
-- A lease already released or expired is not brought back (ZADD XX).
local now = clock(ARGV[1])
local ttl = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  if redis.call('ZADD', key, 'XX', 'CH', f(now + ttl), ARGV[2 + i]) == 1 then
    redis.call('PEXPIRE', key, f(math.ceil(ttl / 1000) + 1000))
  end
end
return 1
