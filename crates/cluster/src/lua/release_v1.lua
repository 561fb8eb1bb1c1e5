-- veil release v1: closes a hold at no charge (the call never reached an upstream, or was
-- dropped). Idempotent like settle_v1.
-- KEYS: the user wallet, the key wallet. ARGV: hold id, TTL ms.
-- Returns how many of the two wallets had the hold.
local id = ARGV[1]
return close(KEYS[1], id, '0', 'bal', '-', 0, 0, ARGV[2])
  + close(KEYS[2], id, '0', 'spent', '', 0, 0, ARGV[2])
