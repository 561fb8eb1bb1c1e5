-- Billing and limits. Paired with the same migration for SQLite.

-- How a model is billed: 'priced' (the price columns), 'free', or 'unpriced' (refused).
ALTER TABLE models ADD COLUMN billing TEXT NOT NULL DEFAULT 'priced';
ALTER TABLE models ADD COLUMN cache_write_price BIGINT NOT NULL DEFAULT 0;  -- per million tokens
ALTER TABLE models ADD COLUMN image_price BIGINT NOT NULL DEFAULT 0;        -- per image
ALTER TABLE models ADD COLUMN second_price BIGINT NOT NULL DEFAULT 0;       -- per second of media
ALTER TABLE models ADD COLUMN max_output_tokens BIGINT;
UPDATE models SET cache_write_price = input_price;

ALTER TABLE channels ADD COLUMN rpm BIGINT;
ALTER TABLE channels ADD COLUMN max_concurrent BIGINT;

ALTER TABLE api_keys ADD COLUMN suspended_at BIGINT;

-- key_id: the key a hold or charge was made with (no foreign key: the row outlives the key).
-- revision: the store revision a row written outside the call path (top-ups, adjustments,
-- redemptions) bumped to, so running servers find exactly the credits they have not applied.
ALTER TABLE ledger ADD COLUMN key_id UUID;
ALTER TABLE ledger ADD COLUMN revision BIGINT;
CREATE INDEX ledger_key_id ON ledger (key_id, time);
CREATE INDEX ledger_revision ON ledger (revision) WHERE revision IS NOT NULL;

ALTER TABLE call_records ADD COLUMN cache_write_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE call_records ADD COLUMN reasoning_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE call_records ADD COLUMN images BIGINT NOT NULL DEFAULT 0;
ALTER TABLE call_records ADD COLUMN media_ms BIGINT NOT NULL DEFAULT 0;
CREATE INDEX call_records_key_time ON call_records (key_id, time);
