-- veil admit v1: admits one call against every demand, all or nothing.
-- KEYS: per demand, its scope's bucket hash then its lease sorted set.
-- ARGV: now in microseconds ('' = the Redis server's clock), lease TTL in microseconds,
--       lease id, estimated tokens, then per demand: rpm, tpm, max_concurrent (-1 = none).
-- Returns: admitted (1/0), then per demand 15 integers: requests wait, tokens wait,
--   concurrency (-2 not limited, -1 never fits, 0 admitted, else microseconds to wait;
--   concurrency 1 = full), then requests limit/remaining/reset and tokens
--   limit/remaining/reset before the call, then the same after it (limit -1 = none).
local now = clock(ARGV[1])
local ttl = tonumber(ARGV[2])
local lease = ARGV[3]
local token_cost = tonumber(ARGV[4]) * U
local n = #KEYS / 2

local staged, order, leases, in_flight, out = {}, {}, {}, {}, {}
local blocked = false
for i = 1, n do
  local key, lease_key = KEYS[2 * i - 1], KEYS[2 * i]
  local rpm, tpm, max = tonumber(ARGV[3 + 3 * i - 1]), tonumber(ARGV[3 + 3 * i]), tonumber(ARGV[3 + 3 * i + 1])
  local e = staged[key]
  if e == nil then
    e = load(key)
    settle(e.rq, now)
    settle(e.tk, now)
    staged[key] = e
    order[#order + 1] = key
  end
  local row = { -2, -2, -2, -1, 0, 0, -1, 0, 0, -1, 0, 0, -1, 0, 0 }
  if rpm >= 0 then
    set_limit(e.rq, rpm)
    row[4], row[5], row[6] = level(e.rq)
    local w = wait(e.rq, U)
    if w == 0 then e.rq.used = e.rq.used + U else blocked = true end
    row[1] = w
    row[10], row[11], row[12] = level(e.rq)
  end
  if tpm >= 0 then
    set_limit(e.tk, tpm)
    row[7], row[8], row[9] = level(e.tk)
    local w = wait(e.tk, token_cost)
    if w == 0 then e.tk.used = e.tk.used + token_cost else blocked = true end
    row[2] = w
    row[13], row[14], row[15] = level(e.tk)
  end
  if max >= 0 then
    if in_flight[lease_key] == nil then
      redis.call('ZREMRANGEBYSCORE', lease_key, '-inf', f(now))
      in_flight[lease_key] = redis.call('ZCARD', lease_key)
    end
    if max == 0 then
      row[3] = -1
      blocked = true
    elseif in_flight[lease_key] < max then
      in_flight[lease_key] = in_flight[lease_key] + 1
      leases[#leases + 1] = { lease_key, lease .. ':' .. i }
      row[3] = 0
    else
      row[3] = 1
      blocked = true
    end
  end
  for j = 1, 15 do out[#out + 1] = row[j] end
end

if blocked then
  table.insert(out, 1, 0)
  return out
end
for _, key in ipairs(order) do store(key, staged[key]) end
for _, l in ipairs(leases) do
  redis.call('ZADD', l[1], f(now + ttl), l[2])
  redis.call('PEXPIRE', l[1], f(math.ceil(ttl / 1000) + 1000))
end
table.insert(out, 1, 1)
return out
