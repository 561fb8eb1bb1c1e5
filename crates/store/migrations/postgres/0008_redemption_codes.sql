-- Redemption codes, PostgreSQL flavour. Same logical schema as
-- migrations/sqlite/0008_redemption_codes.sql. A code is a bearer credential (like an API
-- key): only its keyed hash is kept, with a short display prefix. Redeeming one marks the row
-- and appends the user's top-up to the ledger in one transaction, so a code credits once.

-- amount: nano-units, positive. redeemed_at and redeemed_by are set together, once;
-- redeemed_by loses its user when the account is erased (the code stays spent).
CREATE TABLE redemption_codes (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    amount BIGINT NOT NULL CHECK (amount > 0),
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    redeemed_at BIGINT,
    redeemed_by UUID REFERENCES users (id) ON DELETE SET NULL
);
CREATE INDEX redemption_codes_created_at ON redemption_codes (created_at, id);
-- Lets an erasure find the codes its user redeemed without a scan.
CREATE INDEX redemption_codes_redeemed_by ON redemption_codes (redeemed_by);
