-- veil settle v1: closes a hold with its charge. Idempotent, so the worker may retry after
-- a lost reply: a hold already closed (or whose wallet is gone) is skipped.
-- KEYS: the user wallet, the key wallet, the hold's settled marker.
-- ARGV: hold id, charge (nanos, not negative), day start ms, month start ms, TTL ms,
--       1 if the hold was written by hold_v1, 0 for a zero hold (never written).
-- Returns how many of the two wallets were charged.
local id = ARGV[1]
local charge = ARGV[2]
local ds, ms, ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
if ARGV[6] == '1' then
  return close(KEYS[1], id, charge, 'bal', '-', ds, ms, ttl)
    + close(KEYS[2], id, charge, 'spent', '', ds, ms, ttl)
end
-- A zero hold charged anyway (a price the worst case does not cover): charged once,
-- remembered by a marker that outlives any retry.
if not redis.call('SET', KEYS[3], '1', 'NX', 'PX', 86400000) then return 0 end
return charge_to(KEYS[1], charge, 'bal', '-', ds, ms, ttl)
  + charge_to(KEYS[2], charge, 'spent', '', ds, ms, ttl)
