-- Shared by the wallet scripts (hold_v1, settle_v1, release_v1, credit_v1, init_wallet_v1;
-- prepended by wallets.rs). Edit them together with the Rust side when the stored layout
-- changes, and bump the `v1` in the key names.
--
-- A user wallet hash: bal (balance), held (outstanding holds), ds/dsp (day start in unix
-- ms, spent since), ms/msp (month start, spent since), base (the store revision the
-- wallet was initialised at), h:<hold id> (each outstanding hold: "amount:expires", the
-- expiry in unix ms on the Redis clock), e:<hold id> (a hold that expired before it was
-- closed: its settle still charges), c:<revision> (credits applied). A key wallet: spent
-- (charged in all), held, ds/dsp, ms/msp, h:<id>, e:<id>.
-- Amounts are integer nano-units. Changes go through HINCRBY, exact in 64 bits;
-- comparisons read them into Lua numbers, exact up to 2^53 nanos (about 9 million units).

local function f(x) return string.format('%.0f', x) end

local function num(v) return tonumber(v) or 0 end

-- Starts a new day or month when `ds`/`ms` is later than the one the wallet counts.
local function roll(key, ds, ms)
  local v = redis.call('HMGET', key, 'ds', 'ms')
  if ds > num(v[1]) then redis.call('HSET', key, 'ds', f(ds), 'dsp', '0') end
  if ms > num(v[2]) then redis.call('HSET', key, 'ms', f(ms), 'msp', '0') end
end

local function touch(key, ttl) redis.call('PEXPIRE', key, ttl) end

-- Charges `charge` (a decimal string, not negative) to `charge_field` with `sign` (`bal`
-- is charged '-', `spent` ''), and to both periods. Returns 1, or 0 if the wallet is gone.
local function charge_to(key, charge, charge_field, sign, ds, ms, ttl)
  if redis.call('EXISTS', key) == 0 then return 0 end
  if charge ~= '0' then
    roll(key, ds, ms)
    redis.call('HINCRBY', key, charge_field, sign .. charge)
    redis.call('HINCRBY', key, 'dsp', charge)
    redis.call('HINCRBY', key, 'msp', charge)
  end
  touch(key, ttl)
  return 1
end

-- The amount of a hold field's value ("amount:expires").
local function hold_amount(value) return string.match(value, '^[^:]+') end

-- Now on the Redis server's clock, in unix ms: every instance agrees on when a hold expires.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Releases the holds of `key` whose time is up: those of an instance that died before
-- closing them. Each leaves an e:<id> marker, so a settle that still comes (a call that
-- outlived its hold) charges. Returns how many were released.
local function sweep(key, now)
  local fields = redis.call('HGETALL', key)
  local released = 0
  for i = 1, #fields, 2 do
    local name, value = fields[i], fields[i + 1]
    if string.sub(name, 1, 2) == 'h:' then
      local amount, expires = string.match(value, '^([^:]+):(%d+)$')
      if amount and tonumber(expires) <= now then
        redis.call('HDEL', key, name)
        if amount ~= '0' then redis.call('HINCRBY', key, 'held', '-' .. amount) end
        redis.call('HSET', key, 'e:' .. string.sub(name, 3), '1')
        released = released + 1
      end
    end
  end
  return released
end

-- Releases hold `id` from `key` and charges it as `charge_to` does. Returns 1 if the hold
-- was there (or had expired unclosed), 0 if it was already closed or the wallet is gone.
local function close(key, id, charge, charge_field, sign, ds, ms, ttl)
  local value = redis.call('HGET', key, 'h:' .. id)
  if not value then
    -- Expired and released by a sweep: only the charge is left to apply.
    if redis.call('HDEL', key, 'e:' .. id) == 0 then return 0 end
    return charge_to(key, charge, charge_field, sign, ds, ms, ttl)
  end
  redis.call('HDEL', key, 'h:' .. id)
  local amount = hold_amount(value)
  -- HINCRBY refuses '-0'.
  if amount ~= '0' then redis.call('HINCRBY', key, 'held', '-' .. amount) end
  return charge_to(key, charge, charge_field, sign, ds, ms, ttl)
end
