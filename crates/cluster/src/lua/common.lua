-- Shared by admit_v1.lua and reconcile_v1.lua (prepended by limiter.rs; edit both together
-- with the Rust side when the stored layout changes, and bump the `v1` in the key names).
--
-- A bucket records usage in units where one request (or token) is U = 60,000,000 of them
-- and a limit of L per minute drains L units per microsecond, so every value is an
-- integer (exact in a double up to 2^53, i.e. limits up to about 150 million a minute).
-- This is the same model as veil-limits' in-memory limiter, in microseconds.
local U = 60000000

local function clock(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function load(key)
  local v = redis.call('HMGET', key, 'ru', 'rr', 'ra', 'tu', 'tr', 'ta')
  return {
    rq = { used = tonumber(v[1]) or 0, rate = tonumber(v[2]) or 0, at = tonumber(v[3]) or 0 },
    tk = { used = tonumber(v[4]) or 0, rate = tonumber(v[5]) or 0, at = tonumber(v[6]) or 0 },
  }
end

local function settle(b, now)
  local elapsed = now - b.at
  if elapsed > 0 then b.used = math.max(0, b.used - elapsed * b.rate) end
  if now > b.at then b.at = now end
end

-- Raising keeps the usage; lowering keeps the time until full (see memory.rs).
local function set_limit(b, limit)
  if limit < b.rate then b.used = math.floor(b.used * limit / b.rate) end
  b.rate = limit
end

-- -1: never fits; 0: fits now; otherwise microseconds until it fits.
local function wait(b, cost)
  local capacity = b.rate * U
  if b.rate == 0 or cost > capacity then return -1 end
  local excess = b.used + cost - capacity
  if excess <= 0 then return 0 end
  return math.ceil(excess / b.rate)
end

local CAP = 9000000000000000000
local function drain(b)
  if b.used <= 0 then return 0 end
  if b.rate == 0 then return CAP end
  return math.min(CAP, math.ceil(b.used / b.rate))
end

-- limit, remaining, microseconds until full.
local function level(b)
  local left = math.floor(math.max(0, b.rate * U - b.used) / U)
  return b.rate, math.min(CAP, left), drain(b)
end

local function f(x) return string.format('%.0f', x) end

-- Writes both buckets and keeps the hash only as long as it is away from rest.
local function store(key, e)
  redis.call('HSET', key, 'ru', f(e.rq.used), 'rr', f(e.rq.rate), 'ra', f(e.rq.at),
    'tu', f(e.tk.used), 'tr', f(e.tk.rate), 'ta', f(e.tk.at))
  local ms = math.ceil(math.max(drain(e.rq), drain(e.tk)) / 1000) + 1000
  redis.call('PEXPIRE', key, f(math.min(ms, 9000000000000)))
end
