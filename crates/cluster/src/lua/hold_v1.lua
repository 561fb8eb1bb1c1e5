-- veil hold v1: reserves one call's worst case against a user's balance and spend caps
-- and a key's quota and spend caps, all or nothing, in the same order and with the same
-- numbers as veil-billing's in-memory wallets.
-- KEYS: the user wallet, the key wallet.
-- ARGV: hold id, amount (nanos, not negative), day start ms, month start ms, key quota,
--       user daily cap, user monthly cap, key daily cap, key monthly cap (-1 = none), TTL ms,
--       the hold's own lifetime in ms (after it, a sweep may release it: see sweep()).
-- Expired holds are swept only when a hold would be refused, so the common path stays a
-- few field reads however many holds a wallet has.
-- Returns {code, a, b}:
--   0 held; 1 wallets missing (a: 1 user, 2 key, 3 both: initialise them and retry);
--   2 balance (a available); 3 key quota (a remaining); 4 user daily cap (a its day start);
--   5 user monthly cap; 6 key daily cap (a its day start); 7 key monthly cap.
local user, key = KEYS[1], KEYS[2]
local missing = 0
if redis.call('EXISTS', user) == 0 then missing = missing + 1 end
if redis.call('EXISTS', key) == 0 then missing = missing + 2 end
if missing > 0 then return { 1, missing, 0 } end

local id, amount = ARGV[1], ARGV[2]
local needed = tonumber(amount)
local ds, ms = tonumber(ARGV[3]), tonumber(ARGV[4])
local quota = tonumber(ARGV[5])
local caps = { tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]) }
local ttl = ARGV[10]
local lifetime = tonumber(ARGV[11])

roll(user, ds, ms)
roll(key, ds, ms)

-- The refusal this hold meets, or nil.
local function refusal()
  local u = redis.call('HMGET', user, 'bal', 'held', 'ds', 'dsp', 'msp')
  local k = redis.call('HMGET', key, 'spent', 'held', 'ds', 'dsp', 'msp')
  local available = num(u[1]) - num(u[2])
  if available < needed then return { 2, f(available), 0 } end
  if quota >= 0 then
    local remaining = quota - num(k[1]) - num(k[2])
    if remaining < needed then return { 3, f(math.max(remaining, 0)), 0 } end
  end
  local over = function(spent, held, cap) return cap >= 0 and num(spent) + num(held) + needed > cap end
  if over(u[4], u[2], caps[1]) then return { 4, f(num(u[3])), 0 } end
  if over(u[5], u[2], caps[2]) then return { 5, 0, 0 } end
  if over(k[4], k[2], caps[3]) then return { 6, f(num(k[3])), 0 } end
  if over(k[5], k[2], caps[4]) then return { 7, 0, 0 } end
  return nil
end

local now = now_ms()
if needed > 0 then
  local refused = refusal()
  if refused and sweep(user, now) + sweep(key, now) > 0 then refused = refusal() end
  if refused then return refused end
end
local field, value = 'h:' .. id, amount .. ':' .. f(now + lifetime)
for _, wallet in ipairs({ user, key }) do
  redis.call('HINCRBY', wallet, 'held', amount)
  redis.call('HSET', wallet, field, value)
  touch(wallet, ttl)
end
return { 0, 0, 0 }
