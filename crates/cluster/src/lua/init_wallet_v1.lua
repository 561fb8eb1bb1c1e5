-- veil init_wallet v1: creates a wallet from the store's figures, only if it is absent, so
-- instances initialising at once agree (the first wins; later ones only refresh the TTL).
-- KEYS[1]: the wallet hash. ARGV: TTL in ms, then field, value pairs.
-- Returns 1 if created, 0 if it was there.
local ttl = ARGV[1]
if redis.call('EXISTS', KEYS[1]) == 1 then
  touch(KEYS[1], ttl)
  return 0
end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
touch(KEYS[1], ttl)
return 1
