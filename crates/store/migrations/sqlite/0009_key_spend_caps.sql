-- Per-key spend caps (nano-units per UTC day and calendar month); NULL: uncapped.
-- Paired with the same migration for PostgreSQL.
ALTER TABLE api_keys ADD COLUMN daily_spend INTEGER;
ALTER TABLE api_keys ADD COLUMN monthly_spend INTEGER;
