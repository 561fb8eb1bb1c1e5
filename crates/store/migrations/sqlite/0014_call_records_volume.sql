-- Call records at volume (issue 8), SQLite flavour. Same logical schema as
-- migrations/postgres/0014_call_records_volume.sql: the retention purge's batches are an
-- ordered range scan of (time, id). In SQLite the id is the rowid, which the index on time
-- already ends with; the index is renamed so both backends name it alike.
CREATE INDEX IF NOT EXISTS call_records_time_id ON call_records (time, id);
DROP INDEX IF EXISTS call_records_time;
