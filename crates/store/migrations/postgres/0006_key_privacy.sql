-- A key's own privacy requirement (narrows its group's), as JSON; NULL: none.
-- Paired with the same migration for SQLite.
ALTER TABLE api_keys ADD COLUMN privacy TEXT;
