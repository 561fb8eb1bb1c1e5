-- veil reconcile v1: corrects a call's token reservation from its estimate to the actual count.
-- KEYS: the bucket hashes the estimate was reserved against.
-- ARGV: now in microseconds ('' = the Redis server's clock), 1 if the call used more than
--       estimated (else 0), the difference in tokens, then per key the tpm admitted under.
local now = clock(ARGV[1])
local more = ARGV[2] == '1'
local difference = tonumber(ARGV[3]) * U
for i, key in ipairs(KEYS) do
  -- Expired: the reservation has drained away, so there is nothing to give back.
  if more or redis.call('EXISTS', key) == 1 then
    local e = load(key)
    settle(e.rq, now)
    settle(e.tk, now)
    -- A fresh bucket has no limit yet; debt drains at the one the call ran under.
    if e.tk.rate == 0 then e.tk.rate = tonumber(ARGV[3 + i]) end
    if more then
      e.tk.used = e.tk.used + difference
    else
      e.tk.used = math.max(0, e.tk.used - difference)
    end
    store(key, e)
  end
end
return 1
