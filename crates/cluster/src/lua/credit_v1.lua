-- veil credit v1: applies credits (ledger rows other processes stamped with a store
-- revision) to a user wallet, each exactly once however many instances send it: a credit
-- is applied only if its revision is later than the snapshot the wallet was initialised
-- from (`base`) and not already recorded (`c:<revision>`). An absent wallet is skipped:
-- when it is created, its snapshot has the credit.
-- KEYS[1]: the user wallet. ARGV: TTL ms, then revision, amount pairs (one per revision:
-- the caller sums the rows of one revision).
-- Returns how many were applied, or -1 when the wallet is absent.
local wallet = KEYS[1]
if redis.call('EXISTS', wallet) == 0 then return -1 end
local base = num(redis.call('HGET', wallet, 'base'))
local applied = 0
for i = 2, #ARGV, 2 do
  local revision = ARGV[i]
  if tonumber(revision) > base and redis.call('HSETNX', wallet, 'c:' .. revision, '1') == 1 then
    redis.call('HINCRBY', wallet, 'bal', ARGV[i + 1])
    applied = applied + 1
  end
end
touch(wallet, ARGV[1])
return applied
