-- Per-key spend caps (nano-units per UTC day and calendar month); NULL: uncapped.
-- Paired with the same migration for SQLite.
ALTER TABLE api_keys ADD COLUMN daily_spend BIGINT;
ALTER TABLE api_keys ADD COLUMN monthly_spend BIGINT;
